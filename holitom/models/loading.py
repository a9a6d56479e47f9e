"""Load llava-hf checkpoints (safetensors only) into :class:`LlavaModel`.

Two on-disk key layouts exist and both load:

- llava-hf / transformers 4.x: ``language_model.model.layers.N...``,
  ``language_model.lm_head.weight``, ``vision_tower.vision_model...``,
  ``multi_modal_projector...``, ``image_newline``;
- transformers 5.x in-memory names: ``model.language_model.layers.N...``,
  ``lm_head.weight``, ``model.vision_tower[.vision_model]...``,
  ``model.multi_modal_projector...``, ``model.image_newline``
  (transformers 5 ``save_pretrained`` itself writes the first layout, with the
  vision tower's ``vision_model.`` level dropped).

Every key is first rewritten to one canonical spelling, then matched against the
tensors our modules expect. Missing tensors, wrong shapes and unknown tensors are
errors listing the names; the only tensors dropped on purpose are those LLaVA never
uses (SigLIP layers after the selected feature layer, its post-layernorm and pooling
head, and a stored ``lm_head`` when embeddings are tied).

Nothing is ever unpickled: ``.bin`` / ``.pt`` checkpoints are refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from holitom.errors import CheckpointError, ConfigError
from holitom.models.config import LlavaConfig, checkpoint_folder
from holitom.models.llava import LlavaModel

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# The torch dtype of each name in holitom.limits.DTYPES.
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SUPPORTED_DTYPES = tuple(TORCH_DTYPES.values())

# Checkpoint key prefix -> canonical prefix, first match wins.
_CHECKPOINT_PREFIXES: tuple[tuple[str, str], ...] = (
    ("language_model.lm_head.", "lm_head."),
    ("language_model.model.", "language_model."),
    ("model.language_model.", "language_model."),
    ("model.vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("model.image_newline", "image_newline"),
)
# Our parameter-name prefix -> canonical checkpoint prefix, first match wins.
_OURS_TO_CANONICAL: tuple[tuple[str, str], ...] = (
    ("vision.layers.", "vision_tower.encoder.layers."),
    ("vision.", "vision_tower.embeddings."),
    ("projector.", "multi_modal_projector."),
    ("embed_tokens.", "language_model.embed_tokens."),
    ("decoder.", "language_model."),
    ("lm_head.", "lm_head."),
    ("image_newline", "image_newline"),
)
_SIGLIP_LAYER_PARAMS = tuple(
    f"{module}.{kind}"
    for module in (
        "layer_norm1",
        "layer_norm2",
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.out_proj",
        "mlp.fc1",
        "mlp.fc2",
    )
    for kind in ("weight", "bias")
)


def canonical_key(name: str) -> str:
    """Rewrite a checkpoint tensor name from either layout to the canonical spelling."""
    for prefix, replacement in _CHECKPOINT_PREFIXES:
        if name.startswith(prefix):
            name = replacement + name[len(prefix) :]
            break
    if name.startswith("vision_tower.vision_model."):
        name = "vision_tower." + name[len("vision_tower.vision_model.") :]
    return name


def _ours_to_canonical(name: str) -> str:
    for prefix, replacement in _OURS_TO_CANONICAL:
        if name.startswith(prefix):
            return replacement + name[len(prefix) :]
    raise AssertionError(f"parameter {name} has no checkpoint mapping")  # a bug in this file, not user input


def _list(names: list[str], limit: int = 12) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _read_file(path: Path, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Read ``names`` (default: all) from one safetensors file, turning any failure into a CheckpointError."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            available = set(f.keys())
            wanted = sorted(available) if names is None else names
            absent = [n for n in wanted if n not in available]
            if absent:
                raise CheckpointError(
                    f"{path.name} lacks tensors that {INDEX_FILE} assigns to it: {_list(absent)}; the shard and the "
                    "index come from different downloads, re-download the checkpoint."
                )
            return {n: f.get_tensor(n) for n in wanted}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path.name} in {path.parent} is truncated or corrupt (safetensors: {exc}); re-download this file."
        ) from exc


def read_state_dict(directory: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors checkpoint folder, by their on-disk names, on CPU in the stored dtype.

    Reads ``model.safetensors.index.json`` and its shards when present, else
    ``model.safetensors``.

    Raises:
        CheckpointError: missing folder, no weights, pickle-only weights, a truncated
            or corrupt file, an index naming a missing shard.
    """
    root = checkpoint_folder(directory)
    index = root / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            if not isinstance(weight_map, dict) or not weight_map:
                raise TypeError("weight_map is empty or not an object")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index} is not a valid safetensors index ({exc}); re-download it.") from exc
        by_shard: dict[str, list[str]] = {}
        for tensor_name, shard in weight_map.items():
            by_shard.setdefault(shard, []).append(tensor_name)
        missing = sorted(s for s in by_shard if not (root / s).is_file())
        if missing:
            raise CheckpointError(
                f"{INDEX_FILE} in {root} names shard(s) that are missing: {', '.join(missing)}; the download is "
                "incomplete, fetch the missing file(s) again."
            )
        state: dict[str, torch.Tensor] = {}
        for shard, names in sorted(by_shard.items()):
            state.update(_read_file(root / shard, names))
        return state
    single = root / SINGLE_FILE
    if single.is_file():
        return _read_file(single)

    others = sorted(p.name for p in root.glob("*.safetensors"))
    if others:
        raise CheckpointError(
            f"{root} holds {', '.join(others)} but neither {SINGLE_FILE} nor {INDEX_FILE}; a sharded checkpoint "
            f"needs its {INDEX_FILE}, re-download it."
        )
    pickles = sorted(p.name for p in root.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(
            f"{root} holds only pickle weights ({', '.join(pickles)}); holitom never unpickles checkpoints. Use the "
            "safetensors release of the model (llava-hf repositories ship model*.safetensors) or convert it in a "
            "trusted environment with save_pretrained(..., safe_serialization=True)."
        )
    raise CheckpointError(f"{root} holds no weights: expected {SINGLE_FILE} or {INDEX_FILE} with its shards.")


def _known_unused(config: LlavaConfig) -> set[str]:
    """Canonical names of checkpoint tensors LLaVA never uses, which we drop on purpose."""
    unused = {"vision_tower.post_layernorm.weight", "vision_tower.post_layernorm.bias"}
    for i in range(config.num_vision_layers_used, config.vision.num_layers):
        unused.update(f"vision_tower.encoder.layers.{i}.{p}" for p in _SIGLIP_LAYER_PARAMS)
    if config.tie_word_embeddings:
        unused.add("lm_head.weight")
    return unused


def _canonicalise(state: dict[str, torch.Tensor]) -> dict[str, tuple[str, torch.Tensor]]:
    out: dict[str, tuple[str, torch.Tensor]] = {}
    for name, tensor in state.items():
        key = canonical_key(name)
        if key in out:
            raise CheckpointError(
                f"checkpoint holds both {out[key][0]!r} and {name!r}, which name the same tensor in the two key "
                "layouts; keep one layout per checkpoint."
            )
        out[key] = (name, tensor)
    return out


def load_llava(
    directory: str | Path,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    variant: str | None = None,
) -> LlavaModel:
    """Build a :class:`LlavaModel` from a llava-hf checkpoint folder, in eval mode without gradients.

    Args:
        directory: folder with ``config.json`` and safetensors weights.
        dtype: float32, float16 or bfloat16 (weights are cast on load).
        device: where the parameters go.
        variant: ``"onevision"`` or ``"llava_video"``; default from ``config.json``'s
            ``holitom_variant``, else ``"onevision"``.
    """
    if dtype not in SUPPORTED_DTYPES:
        raise ConfigError(f"dtype {dtype} is not supported; use one of {[str(d) for d in SUPPORTED_DTYPES]}.")
    config = LlavaConfig.from_pretrained(directory, variant=variant)
    raw = read_state_dict(directory)
    checkpoint = _canonicalise(raw)
    del raw

    with torch.device("meta"):
        model = LlavaModel(config)
    expected = {
        name: (_ours_to_canonical(name), tuple(p.shape))
        for name, p in model.named_parameters(remove_duplicate=True)
    }
    wanted = {canon for canon, _ in expected.values()}
    missing = sorted(canon for canon in wanted if canon not in checkpoint)
    if missing:
        raise CheckpointError(
            f"checkpoint {directory} lacks tensors the config requires: {_list(missing)} (canonical names); the "
            "weights do not match config.json or the download is incomplete."
        )
    mismatched = [
        f"{checkpoint[canon][0]}: {tuple(checkpoint[canon][1].shape)} (expected {shape})"
        for canon, shape in expected.values()
        if tuple(checkpoint[canon][1].shape) != shape
    ]
    if mismatched:
        raise CheckpointError(
            f"checkpoint {directory} has tensors whose shapes disagree with config.json: {_list(mismatched)}; the "
            "config and the weights belong to different models."
        )
    unused = _known_unused(config)
    unexpected = sorted(
        src
        for canon, (src, _) in checkpoint.items()
        if canon not in wanted and canon not in unused and not (config.vision.use_head and canon.startswith("vision_tower.head."))
    )
    if unexpected:
        raise CheckpointError(
            f"checkpoint {directory} holds tensors holitom's model does not know: {_list(unexpected)}; it is not "
            "a LLaVA-OneVision / LLaVA-Video (SigLIP + Qwen2) checkpoint matching its config.json."
        )

    params = {}
    for name, (canon, _) in expected.items():
        _, tensor = checkpoint.pop(canon)
        params[name] = tensor.to(device=device, dtype=dtype)
    del checkpoint
    if config.tie_word_embeddings:
        params["lm_head.weight"] = params["embed_tokens.weight"]  # state_dict() lists both names of the tied weight
    model.load_state_dict(params, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight  # re-tie: assign=True replaced the shared Parameter
    model.requires_grad_(False)
    return model.eval()


__all__ = ["read_state_dict", "load_llava", "canonical_key"]
