"""The named input/output contract of every pipeline stage, shared by all backends.

One place declares each stage's tensors: names (the ecosystem's, e.g.
``inputs_embeds``, ``past_key_values.{i}.key`` -> ``present.{i}.key``), dtypes and
shapes whose dynamic dimensions carry names (``frames``, ``sequence``,
``past_head``...). The exporter writes graphs with exactly these names and
dynamic axes and checks each written file against them; every runtime backend
checks its inputs against them before it runs (STYLE.md rules 5 and 8).

Import-light on purpose: no torch, no onnx.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from holitom.errors import InputError

# Stage names, in pipeline order.
VISION = "vision_encoder"
OUTER_MERGE = "outer_merge"
EMBED = "embed_tokens"
DECODER_HEAD = "decoder_head"
INNER_MERGE = "inner_merge"
DECODER_TAIL = "decoder_tail"
DECODE_STEP = "decode_step"
STAGE_ORDER = (VISION, OUTER_MERGE, EMBED, DECODER_HEAD, INNER_MERGE, DECODER_TAIL, DECODE_STEP)

# Dimension names used in the dynamic axes of the exported graphs.
FRAMES = "frames"
TOKENS = "tokens"  # visual tokens after the outer merge
SEQUENCE = "sequence"  # prompt length entering the decoder head
TAIL_SEQUENCE = "tail_sequence"  # prompt length after the inner merge
VISUAL = "visual"  # visual tokens inside the prompt
PAST_HEAD = "past_head"  # KV length of layers < K (the full prompt, then + generated)
PAST_TAIL = "past_tail"  # KV length of layers >= K (the merged prompt, then + generated)
TOTAL_HEAD = "total_head"
TOTAL_TAIL = "total_tail"
# The onnxruntime-form decode step (export --attention onnxruntime) takes preallocated KV buffers.
HEAD_CAPACITY = "head_capacity"  # positions of each head-group layer's KV buffer
TAIL_CAPACITY = "tail_capacity"
KV_LENGTHS = "kv_lengths"  # (2,) int64: filled positions of the head group's and the tail group's buffers

Dim = int | str


def past_key_name(layer: int) -> str:
    return f"past_key_values.{layer}.key"


def past_value_name(layer: int) -> str:
    return f"past_key_values.{layer}.value"


def present_key_name(layer: int) -> str:
    return f"present.{layer}.key"


def present_value_name(layer: int) -> str:
    return f"present.{layer}.value"


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: dtype name (numpy spelling) and a shape of ints or named dims."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def check(self, array, stage: str, bound: dict[str, int]) -> None:
        """Check rank, dtype and fixed/consistent dims of ``array``; record named dims in ``bound``.

        ``array`` is anything with ``.shape`` and ``.dtype`` (numpy array or torch tensor).
        Named dims must agree across all tensors of one call (e.g. every KV of the
        head group has the same ``past_head``).
        """
        shape = tuple(int(s) for s in array.shape)
        if len(shape) != len(self.shape):
            raise InputError(
                f"{stage}: input '{self.name}' has rank {len(shape)} (shape {shape}); expected rank "
                f"{len(self.shape)} with shape {self.shape}."
            )
        dtype = str(array.dtype).removeprefix("torch.")
        if dtype != self.dtype:
            raise InputError(f"{stage}: input '{self.name}' has dtype {dtype}; expected {self.dtype}. Cast it before calling.")
        for axis, (got, want) in enumerate(zip(shape, self.shape)):
            if isinstance(want, int):
                if got != want:
                    raise InputError(
                        f"{stage}: input '{self.name}' has size {got} on axis {axis} (shape {shape}); expected {want} "
                        f"(full expected shape {self.shape})."
                    )
            elif want in bound and bound[want] != got:
                raise InputError(
                    f"{stage}: input '{self.name}' has {want}={got} on axis {axis}, but another input of this call "
                    f"has {want}={bound[want]}; they must agree."
                )
            else:
                bound[want] = got


@dataclass(frozen=True)
class StageSpec:
    """The inputs and outputs of one stage, in order."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """torch.onnx-style ``{name: {axis: dim_name}}`` for every tensor with a named dim."""
        return {t.name: t.dynamic_axes for t in (*self.inputs, *self.outputs) if t.dynamic_axes}

    def check_inputs(self, feed: dict) -> None:
        """Raise InputError naming the problem if ``feed`` does not match this stage's inputs."""
        missing = [n for n in self.input_names if n not in feed]
        extra = [n for n in feed if n not in self.input_names]
        if missing or extra:
            raise InputError(
                f"{self.name}: got inputs {sorted(feed)}; missing {missing}, unexpected {extra}. "
                f"Expected exactly {self.input_names}."
            )
        bound: dict[str, int] = {}
        for spec in self.inputs:
            spec.check(feed[spec.name], self.name, bound)


@dataclass(frozen=True)
class ModelDims:
    """The few model sizes the stage contracts depend on."""

    num_layers: int
    inner_layer: int  # K: layers [0, K) form the head, [K, L) the tail
    hidden_size: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    image_size: int
    tokens_per_frame: int
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if not 1 <= self.inner_layer <= self.num_layers - 1:
            raise InputError(
                f"inner layer K={self.inner_layer} must be in 1..{self.num_layers - 1} for a {self.num_layers}-layer decoder."
            )

    def to_dict(self) -> dict:
        return {
            "num_layers": self.num_layers,
            "inner_layer": self.inner_layer,
            "hidden_size": self.hidden_size,
            "num_kv_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "image_size": self.image_size,
            "tokens_per_frame": self.tokens_per_frame,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ModelDims":
        return cls(**{k: int(d[k]) for k in cls.__dataclass_fields__ if k != "extra"})


def _kv(key_name, value_name, layers: range, dims: ModelDims, length: str, dtype: str) -> tuple[TensorSpec, ...]:
    specs = []
    for i in layers:
        shape = (1, dims.num_kv_heads, length, dims.head_dim)  # (B, Hkv, S, hd)
        specs.append(TensorSpec(key_name(i), dtype, shape))
        specs.append(TensorSpec(value_name(i), dtype, shape))
    return tuple(specs)


def stage_specs(dims: ModelDims, dtype: str = "float32", vision_attention: bool = True, kv_buffers: bool = False) -> dict[str, StageSpec]:
    """The contract of every stage for a model of these sizes.

    ``dtype`` is the interchange type of activations and KV caches (the model's
    compute dtype); scores (``attention``, ``attn_row``) are always float32 and
    ``logits`` too, so token selection does not depend on the compute dtype.
    ``vision_attention=False`` drops ``attention`` from the vision output and the
    outer-merge input: a runtime whose method reads no vision scores (vanilla,
    pooling, EVS) does not compute them. Exported graphs always carry it.
    ``kv_buffers=True`` gives the decode step of an ``--attention onnxruntime``
    export: every layer's ``past`` is a preallocated buffer (``head_capacity`` /
    ``tail_capacity`` positions, the first ``kv_lengths[group]`` filled) and its
    ``present`` the same buffer with the new position written (onnxruntime writes
    it in place when both are bound to one buffer). A runtime runs it behind the
    plain decode step's contract (the onnxruntime backend's runner does).
    """
    D, L, K = dims.hidden_size, dims.num_layers, dims.inner_layer
    P, H = dims.tokens_per_frame, dims.image_size
    head_layers, tail_layers = range(0, K), range(K, L)
    features = TensorSpec("features", dtype, (FRAMES, P, D))
    attention = (TensorSpec("attention", "float32", (FRAMES, P)),) if vision_attention else ()
    specs = {
        VISION: StageSpec(
            VISION,
            inputs=(TensorSpec("pixel_values", dtype, (FRAMES, 3, H, H)),),
            outputs=(features, *attention),
        ),
        OUTER_MERGE: StageSpec(
            OUTER_MERGE,
            inputs=(features, *attention),
            outputs=(TensorSpec("merged_tokens", dtype, (TOKENS, D)),),
        ),
        EMBED: StageSpec(
            EMBED,
            inputs=(TensorSpec("input_ids", "int64", (1, SEQUENCE)),),
            outputs=(TensorSpec("inputs_embeds", dtype, (1, SEQUENCE, D)),),
        ),
        DECODER_HEAD: StageSpec(
            DECODER_HEAD,
            inputs=(
                TensorSpec("inputs_embeds", dtype, (1, SEQUENCE, D)),
                TensorSpec("position_ids", "int64", (1, SEQUENCE)),
            ),
            outputs=(
                TensorSpec("hidden_states", dtype, (1, SEQUENCE, D)),
                # The last token's attention at layer K-1 over the WHOLE prompt, averaged over
                # heads; the pipeline slices the visual span (a data-dependent slice does not
                # belong in an exported graph).
                TensorSpec("attn_row", "float32", (SEQUENCE,)),
                *_kv(present_key_name, present_value_name, head_layers, dims, SEQUENCE, dtype),
            ),
        ),
        INNER_MERGE: StageSpec(
            INNER_MERGE,
            inputs=(
                TensorSpec("hidden_states", dtype, (1, SEQUENCE, D)),
                TensorSpec("attn_row", "float32", (VISUAL,)),
                TensorSpec("position_ids", "int64", (1, SEQUENCE)),
                TensorSpec("visual_span", "int64", (2,)),
            ),
            outputs=(
                TensorSpec("merged_hidden_states", dtype, (1, TAIL_SEQUENCE, D)),
                TensorSpec("merged_position_ids", "int64", (1, TAIL_SEQUENCE)),
            ),
        ),
        DECODER_TAIL: StageSpec(
            DECODER_TAIL,
            inputs=(
                TensorSpec("hidden_states", dtype, (1, TAIL_SEQUENCE, D)),
                TensorSpec("position_ids", "int64", (1, TAIL_SEQUENCE)),
            ),
            outputs=(
                TensorSpec("logits", "float32", (1, dims.vocab_size)),
                *_kv(present_key_name, present_value_name, tail_layers, dims, TAIL_SEQUENCE, dtype),
            ),
        ),
        DECODE_STEP: StageSpec(
            DECODE_STEP,
            inputs=(
                TensorSpec("inputs_embeds", dtype, (1, 1, D)),
                TensorSpec("position_ids", "int64", (1, 1)),
                *_kv(past_key_name, past_value_name, head_layers, dims, PAST_HEAD, dtype),
                *_kv(past_key_name, past_value_name, tail_layers, dims, PAST_TAIL, dtype),
            ),
            outputs=(
                TensorSpec("logits", "float32", (1, dims.vocab_size)),
                *_kv(present_key_name, present_value_name, head_layers, dims, TOTAL_HEAD, dtype),
                *_kv(present_key_name, present_value_name, tail_layers, dims, TOTAL_TAIL, dtype),
            ),
        ),
    }
    if kv_buffers:
        specs[DECODE_STEP] = kv_buffer_decode_spec(specs[DECODE_STEP])
    return specs


# Free positions every decode cache is built with after the prompt, and added when it fills up:
# the torch backend's static cache, its CUDA-graph capacities and the onnxruntime KV buffers.
CACHE_ROOM = 256


def kv_buffer_decode_spec(plain: StageSpec) -> StageSpec:
    """The decode step over preallocated KV buffers, from the plain decode step's contract (see :func:`stage_specs`)."""
    capacity = {PAST_HEAD: HEAD_CAPACITY, TOTAL_HEAD: HEAD_CAPACITY, PAST_TAIL: TAIL_CAPACITY, TOTAL_TAIL: TAIL_CAPACITY}

    def buffer(t: TensorSpec) -> TensorSpec:
        return TensorSpec(t.name, t.dtype, tuple(capacity.get(d, d) for d in t.shape))

    embeds, positions, *past = plain.inputs
    inputs = (embeds, positions, TensorSpec(KV_LENGTHS, "int64", (2,)), *map(buffer, past))
    return StageSpec(plain.name, inputs, tuple(map(buffer, plain.outputs)))
