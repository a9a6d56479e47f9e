"""Typed model configuration for LLaVA-OneVision / LLaVA-Video (SigLIP + MLP projector + Qwen2).

The checkpoint's ``config.json`` (llava-hf layout, ``model_type: llava_onevision``) is
parsed here into frozen dataclasses without importing torch or transformers, so the
exporter and the runtime can read a model's geometry cheaply.

Defaults for keys a ``config.json`` leaves out mirror transformers' own defaults
(``LlavaOnevisionConfig``, ``SiglipVisionConfig``, ``Qwen2Config``), because released
llava-hf configs rely on them (e.g. SigLIP's ``hidden_act`` and Qwen2's ``rms_norm_eps``
are usually absent).

Both LLaVA-OneVision and LLaVA-Video ship llava-hf configs with the same ``model_type``;
they differ only in how the 27x27 patch grid is pooled and where newline tokens go, so
the variant is chosen by: explicit argument > ``"holitom_variant"`` in ``config.json`` >
``"onevision"``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from holitom.errors import CheckpointError, ConfigError
from holitom.limits import check_int


@dataclass(frozen=True)
class VariantSpec:
    """How one model family turns the patch grid into video tokens.

    ``pooling`` names a pooler in :data:`holitom.models.pooling.POOLERS`;
    ``layout`` names the token layout (order and newlines) in the registry of
    :mod:`holitom.merge.layout`, which every path (unmerged, HoliTom, competing
    methods, exported graphs) reads.
    """

    name: str
    pooling: str
    layout: str


# Registry keyed by the variant name used in configs, manifests and the CLI.
VARIANTS: dict[str, VariantSpec] = {
    "onevision": VariantSpec(name="onevision", pooling="bilinear", layout="onevision"),
    "llava_video": VariantSpec(name="llava_video", pooling="avg", layout="llava_video"),
}
DEFAULT_VARIANT = "onevision"
VARIANT_CONFIG_KEY = "holitom_variant"

# Activations our model code implements (see holitom.models.ops.ACTIVATIONS).
SUPPORTED_ACTIVATIONS = ("gelu", "gelu_pytorch_tanh", "silu")
SUPPORTED_MODEL_TYPE = "llava_onevision"
SUPPORTED_VISION_MODEL_TYPE = "siglip_vision_model"
SUPPORTED_TEXT_MODEL_TYPE = "qwen2"

# transformers' SiglipVisionConfig defaults (used for keys a vision_config dict omits).
_SIGLIP_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 16,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "vision_use_head": True,
}
# LlavaOnevisionConfig's vision defaults (used only when vision_config is absent).
_ONEVISION_VISION_DEFAULTS: dict[str, Any] = {
    **_SIGLIP_DEFAULTS,
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "patch_size": 14,
    "image_size": 384,
    "num_hidden_layers": 26,
    "num_attention_heads": 16,
    "vision_use_head": False,
}
# transformers' Qwen2Config defaults.
_QWEN2_DEFAULTS: dict[str, Any] = {
    "vocab_size": 151936,
    "hidden_size": 4096,
    "intermediate_size": 22016,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "hidden_act": "silu",
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "use_sliding_window": False,
}
_DEFAULT_ROPE_THETA = 10000.0


def _positive_ints(owner: str, **values: int) -> None:
    for name, value in values.items():
        check_int(value, f"{owner}.{name}", 1)


@dataclass(frozen=True)
class VisionConfig:
    """SigLIP vision tower geometry (all layers of the checkpoint, before feature-layer selection)."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    image_size: int
    patch_size: int
    num_channels: int = 3
    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu_pytorch_tanh"
    use_head: bool = False

    def __post_init__(self) -> None:
        _positive_ints(
            "VisionConfig",
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            image_size=self.image_size,
            patch_size=self.patch_size,
            num_channels=self.num_channels,
        )
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"VisionConfig.hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})."
            )
        # SigLIP-so400m uses 384 px with patch 14: the valid convolution drops the 6-pixel remainder.
        if self.image_size < self.patch_size:
            raise ConfigError(
                f"VisionConfig.image_size ({self.image_size}) must be at least patch_size ({self.patch_size})."
            )
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ConfigError(f"VisionConfig.hidden_act {self.hidden_act!r} is not one of {SUPPORTED_ACTIVATIONS}.")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_grid(self) -> int:
        """Patches per side (27 for SigLIP-so400m at 384 px / patch 14; the remainder is cropped by the conv)."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.patch_grid**2


@dataclass(frozen=True)
class TextConfig:
    """Qwen2 decoder geometry."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = _DEFAULT_ROPE_THETA
    max_position_embeddings: int = 32768
    hidden_act: str = "silu"
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _positive_ints(
            "TextConfig",
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            max_position_embeddings=self.max_position_embeddings,
        )
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"TextConfig.num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})."
            )
        if self.head_dim % 2:
            raise ConfigError(f"TextConfig.head_dim must be even for RoPE, got {self.head_dim}.")
        if not self.rope_theta > 0:
            raise ConfigError(f"TextConfig.rope_theta must be positive, got {self.rope_theta!r}.")
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ConfigError(f"TextConfig.hidden_act {self.hidden_act!r} is not one of {SUPPORTED_ACTIVATIONS}.")
        # Normalise a list given by a caller so the frozen dataclass stays hashable.
        object.__setattr__(self, "eos_token_ids", tuple(int(t) for t in self.eos_token_ids))


def checkpoint_folder(directory: str | Path) -> Path:
    """``directory`` as a Path, or a :class:`CheckpointError` that says why it is not a checkpoint folder."""
    root = Path(directory)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise CheckpointError(
            f"checkpoint directory {str(directory)!r} {what}; pass the folder that holds config.json and "
            "the *.safetensors files (e.g. a local snapshot of llava-hf/llava-onevision-qwen2-7b-ov-hf)."
        )
    return root


@dataclass(frozen=True)
class LlavaConfig:
    """The whole model: vision tower, projector, pooling variant and decoder.

    ``vision_feature_layer`` indexes the SigLIP hidden states the transformers way
    (index 0 = patch embeddings, index i = output of encoder layer i-1, negative
    indices count from the end of ``num_layers + 1`` states). Only one layer is
    supported; its index, resolved, is :attr:`num_vision_layers_used`.
    """

    vision: VisionConfig
    text: TextConfig
    variant: str = DEFAULT_VARIANT
    vision_feature_layer: int = -1
    vision_feature_select_strategy: str = "full"
    projector_hidden_act: str = "gelu"
    projector_bias: bool = True
    image_token_id: int = 151646
    video_token_id: int = 151647
    tie_word_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ConfigError(f"LlavaConfig.variant {self.variant!r} is not one of {sorted(VARIANTS)}.")
        if self.vision_feature_select_strategy != "full":
            # "default" drops the first token (a CLS token in CLIP); SigLIP has none, so it
            # would drop a real patch and break the square grid the pooling needs.
            raise ConfigError(
                f"LlavaConfig.vision_feature_select_strategy {self.vision_feature_select_strategy!r} is not "
                "supported; SigLIP towers have no CLS token, so only 'full' is."
            )
        if self.projector_hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ConfigError(
                f"LlavaConfig.projector_hidden_act {self.projector_hidden_act!r} is not one of {SUPPORTED_ACTIVATIONS}."
            )
        n_states = self.vision.num_layers + 1
        if not isinstance(self.vision_feature_layer, int) or not -n_states <= self.vision_feature_layer < n_states:
            raise ConfigError(
                f"LlavaConfig.vision_feature_layer {self.vision_feature_layer!r} is out of range for a vision tower "
                f"with {self.vision.num_layers} layers (valid: {-n_states}..{n_states - 1})."
            )
        if self.num_vision_layers_used == 0:
            raise ConfigError(
                "LlavaConfig.vision_feature_layer selects the patch embeddings (before any encoder layer); HoliTom "
                "needs the attention of the layer that produces the features, so select an encoder layer."
            )
        for name in ("image_token_id", "video_token_id"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < self.text.vocab_size:
                raise ConfigError(f"LlavaConfig.{name} {value!r} is outside the vocabulary (0..{self.text.vocab_size - 1}).")
        if self.image_token_id == self.video_token_id:
            raise ConfigError(f"LlavaConfig.image_token_id and video_token_id are both {self.video_token_id}.")

    # ---- derived geometry -------------------------------------------------------------

    @property
    def variant_spec(self) -> VariantSpec:
        return VARIANTS[self.variant]

    @property
    def layout(self) -> str:
        """The family's token layout, a name in :mod:`holitom.merge.layout`'s registry."""
        return self.variant_spec.layout

    @property
    def pooling(self) -> str:
        return self.variant_spec.pooling

    @property
    def num_vision_layers_used(self) -> int:
        """Encoder layers that run; layers after the selected one never run."""
        return self.vision_feature_layer % (self.vision.num_layers + 1)

    @property
    def vision_attention_layer(self) -> int:
        """0-based encoder layer whose attention HoliTom reads (the one producing the features)."""
        return self.num_vision_layers_used - 1

    @property
    def pooled_grid(self) -> tuple[int, int]:
        """``(h, w)`` of the pooled grid: ceil(g/2) for bilinear resize, floor(g/2) for 2x2 average pooling."""
        g = self.vision.patch_grid
        side = math.ceil(g / 2) if self.pooling == "bilinear" else g // 2
        return (side, side)

    @property
    def tokens_per_frame(self) -> int:
        """P: pooled tokens per frame, without newlines (196 for OneVision, 169 for LLaVA-Video at 384 px)."""
        h, w = self.pooled_grid
        return h * w

    @property
    def hidden_size(self) -> int:
        """D: the decoder width that video features are projected to."""
        return self.text.hidden_size

    @property
    def num_layers(self) -> int:
        """L: decoder layers."""
        return self.text.num_layers

    def num_video_tokens(self, num_frames: int) -> int:
        """Video tokens of an unmerged video (features plus newlines), as transformers expands the placeholder."""
        if num_frames <= 0:
            raise ConfigError(f"num_frames must be positive, got {num_frames}.")
        from holitom.merge.layout import get_layout

        return get_layout(self.layout).unmerged_rows(num_frames, tuple(self.pooled_grid))

    # ---- (de)serialisation -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (for manifests); derived geometry is included for readers and ignored by :meth:`from_dict`."""
        out = dataclasses.asdict(self)
        out["text"]["eos_token_ids"] = list(self.text.eos_token_ids)
        out["layout"] = self.layout
        out["pooled_grid"] = list(self.pooled_grid)
        out["tokens_per_frame"] = self.tokens_per_frame
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LlavaConfig:
        """Inverse of :meth:`to_dict`."""
        try:
            fields = {f.name for f in dataclasses.fields(cls)}
            kwargs = {k: v for k, v in d.items() if k in fields and k not in ("vision", "text")}
            text = dict(d["text"])
            text["eos_token_ids"] = tuple(text.get("eos_token_ids", ()))
            config = cls(vision=VisionConfig(**d["vision"]), text=TextConfig(**text), **kwargs)
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"not a LlavaConfig dict (as written by LlavaConfig.to_dict): {exc}") from exc
        if "layout" in d and d["layout"] != config.layout:
            raise ConfigError(f"LlavaConfig dict says layout {d['layout']!r} but variant {config.variant!r}.")
        return config

    @classmethod
    def from_hf_dict(cls, d: Mapping[str, Any], variant: str | None = None) -> LlavaConfig:
        """Parse a llava-hf ``config.json`` dict (transformers 4.x or 5.x flavour).

        Raises:
            CheckpointError: an architecture this toolkit does not implement.
            ConfigError: ``variant`` is given but unknown.
        """
        if variant is not None and variant not in VARIANTS:
            raise ConfigError(f"variant {variant!r} is not one of {sorted(VARIANTS)}.")
        model_type = d.get("model_type")
        if model_type != SUPPORTED_MODEL_TYPE:
            raise CheckpointError(
                f"config.json has model_type {model_type!r}; holitom supports only {SUPPORTED_MODEL_TYPE!r} "
                "(llava-hf LLaVA-OneVision / LLaVA-Video checkpoints)."
            )
        if variant is None:
            variant = d.get(VARIANT_CONFIG_KEY, DEFAULT_VARIANT)
            if variant not in VARIANTS:
                raise CheckpointError(
                    f"config.json has {VARIANT_CONFIG_KEY}={variant!r}; expected one of {sorted(VARIANTS)}."
                )
        vision = _vision_from_hf(d.get("vision_config"))
        text, text_tie = _text_from_hf(d.get("text_config"))

        feature_layer = d.get("vision_feature_layer", -1)
        if isinstance(feature_layer, (list, tuple)):
            if len(feature_layer) != 1:
                raise CheckpointError(
                    f"config.json has vision_feature_layer={list(feature_layer)} (features concatenated from several "
                    "SigLIP layers); holitom supports a single feature layer, e.g. -1."
                )
            feature_layer = feature_layer[0]
        strategy = d.get("vision_feature_select_strategy", "full")
        if strategy != "full":
            raise CheckpointError(
                f"config.json has vision_feature_select_strategy={strategy!r}; holitom supports only 'full' "
                "(SigLIP has no CLS token to drop)."
            )
        projector_act = d.get("projector_hidden_act", "gelu")
        if projector_act not in SUPPORTED_ACTIVATIONS:
            raise CheckpointError(
                f"config.json has projector_hidden_act={projector_act!r}; supported: {SUPPORTED_ACTIVATIONS}."
            )
        # transformers forwards tie_word_embeddings from the text config when the top level says False.
        tie = bool(d.get("tie_word_embeddings", False)) or text_tie
        try:
            return cls(
                vision=vision,
                text=text,
                variant=variant,
                vision_feature_layer=int(feature_layer),
                vision_feature_select_strategy=strategy,
                projector_hidden_act=projector_act,
                projector_bias=bool(d.get("multimodal_projector_bias", True)),
                image_token_id=int(d.get("image_token_index", d.get("image_token_id", 151646))),
                video_token_id=int(d.get("video_token_index", d.get("video_token_id", 151647))),
                tie_word_embeddings=tie,
            )
        except ConfigError as exc:
            raise CheckpointError(f"config.json describes an unsupported model: {exc}") from exc

    def to_hf_dict(self) -> dict[str, Any]:
        """The llava-hf ``config.json`` dict of this geometry (inverse of :meth:`from_hf_dict`).

        transformers' ``LlavaOnevisionConfig`` reads it, so a preset can be
        materialised as a checkpoint that every loader (ours and transformers') reads.
        """
        v, t = self.vision, self.text
        return {
            "model_type": SUPPORTED_MODEL_TYPE,
            "architectures": ["LlavaOnevisionForConditionalGeneration"],
            VARIANT_CONFIG_KEY: self.variant,
            "vision_config": {
                "model_type": SUPPORTED_VISION_MODEL_TYPE,
                "hidden_size": v.hidden_size,
                "intermediate_size": v.intermediate_size,
                "num_hidden_layers": v.num_layers,
                "num_attention_heads": v.num_heads,
                "image_size": v.image_size,
                "patch_size": v.patch_size,
                "num_channels": v.num_channels,
                "hidden_act": v.hidden_act,
                "layer_norm_eps": v.layer_norm_eps,
                "vision_use_head": v.use_head,
            },
            "text_config": {
                "model_type": SUPPORTED_TEXT_MODEL_TYPE,
                "hidden_size": t.hidden_size,
                "intermediate_size": t.intermediate_size,
                "num_hidden_layers": t.num_layers,
                "num_attention_heads": t.num_heads,
                "num_key_value_heads": t.num_kv_heads,
                "head_dim": t.head_dim,
                "vocab_size": t.vocab_size,
                "hidden_act": t.hidden_act,
                "rms_norm_eps": t.rms_norm_eps,
                "rope_theta": t.rope_theta,
                "max_position_embeddings": t.max_position_embeddings,
                "tie_word_embeddings": self.tie_word_embeddings,
                "use_sliding_window": False,
                "bos_token_id": t.bos_token_id,
                "eos_token_id": list(t.eos_token_ids) or None,
            },
            "image_token_index": self.image_token_id,
            "video_token_index": self.video_token_id,
            "vision_feature_layer": self.vision_feature_layer,
            "vision_feature_select_strategy": self.vision_feature_select_strategy,
            "vision_aspect_ratio": "anyres_max_9",
            "projector_hidden_act": self.projector_hidden_act,
            "multimodal_projector_bias": self.projector_bias,
            "tie_word_embeddings": self.tie_word_embeddings,
        }

    @classmethod
    def from_name(cls, name: str) -> LlavaConfig:
        """A named geometry preset (:data:`PRESET_NAMES`), like gpt-fast's ``ModelArgs.from_name``.

        ``default`` is the embedded tiny checkpoint's geometry; the others are the
        released LLaVA-OneVision models' (random-weight timing materialises them,
        see :mod:`holitom.bench.archs`).

        Raises:
            ConfigError: ``name`` is not a preset.
        """
        return _preset(name).build()

    @classmethod
    def from_pretrained(cls, directory: str | Path, variant: str | None = None) -> LlavaConfig:
        """Read ``<directory>/config.json``."""
        path = checkpoint_folder(directory) / "config.json"
        if not path.is_file():
            raise CheckpointError(f"{path} is missing; a llava-hf checkpoint folder needs its config.json next to the weights.")
        try:
            d = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path} is not valid JSON ({exc}); re-download the checkpoint's config.json.") from exc
        if not isinstance(d, dict):
            raise CheckpointError(f"{path} holds a {type(d).__name__}, expected a JSON object.")
        return cls.from_hf_dict(d, variant=variant)


def _vision_from_hf(vc: Mapping[str, Any] | None) -> VisionConfig:
    if vc is None:
        vc = dict(_ONEVISION_VISION_DEFAULTS)
    vision_type = vc.get("model_type", SUPPORTED_VISION_MODEL_TYPE)
    if vision_type != SUPPORTED_VISION_MODEL_TYPE:
        raise CheckpointError(
            f"config.json has vision_config.model_type {vision_type!r}; holitom supports only "
            f"{SUPPORTED_VISION_MODEL_TYPE!r} (SigLIP)."
        )
    v = {**_SIGLIP_DEFAULTS, **vc}
    for key in ("image_size", "patch_size"):
        if isinstance(v[key], (list, tuple)):
            if len(set(v[key])) != 1:
                raise CheckpointError(f"config.json has a non-square vision_config.{key}={v[key]}; only square is supported.")
            v[key] = v[key][0]
    if v["hidden_act"] not in SUPPORTED_ACTIVATIONS:
        raise CheckpointError(
            f"config.json has vision_config.hidden_act={v['hidden_act']!r}; supported: {SUPPORTED_ACTIVATIONS}."
        )
    try:
        return VisionConfig(
            hidden_size=v["hidden_size"],
            intermediate_size=v["intermediate_size"],
            num_layers=v["num_hidden_layers"],
            num_heads=v["num_attention_heads"],
            image_size=v["image_size"],
            patch_size=v["patch_size"],
            num_channels=v["num_channels"],
            layer_norm_eps=float(v["layer_norm_eps"]),
            hidden_act=v["hidden_act"],
            use_head=bool(v["vision_use_head"]),
        )
    except ConfigError as exc:
        raise CheckpointError(f"config.json vision_config is invalid: {exc}") from exc


def _text_from_hf(tc: Mapping[str, Any] | None) -> tuple[TextConfig, bool]:
    tc = dict(tc or {})
    text_type = tc.get("model_type", SUPPORTED_TEXT_MODEL_TYPE)
    if text_type != SUPPORTED_TEXT_MODEL_TYPE:
        raise CheckpointError(
            f"config.json has text_config.model_type {text_type!r}; holitom supports only "
            f"{SUPPORTED_TEXT_MODEL_TYPE!r} (Qwen2 decoders)."
        )
    t = {**_QWEN2_DEFAULTS, **{k: v for k, v in tc.items() if v is not None}}
    if "num_key_value_heads" in tc and tc["num_key_value_heads"] is None:
        # Qwen2Config: an explicit null means multi-head attention (a missing key means its default, 32).
        t["num_key_value_heads"] = t["num_attention_heads"]
    layer_types = tc.get("layer_types") or []
    if t["use_sliding_window"] or any(lt != "full_attention" for lt in layer_types):
        raise CheckpointError(
            "config.json enables sliding-window attention in text_config (use_sliding_window / layer_types); "
            "holitom's Qwen2 decoder implements full causal attention only."
        )
    rope_theta = _rope_theta(tc)
    if t["hidden_act"] not in SUPPORTED_ACTIVATIONS:
        raise CheckpointError(f"config.json has text_config.hidden_act={t['hidden_act']!r}; supported: {SUPPORTED_ACTIVATIONS}.")
    eos = tc.get("eos_token_id")
    eos_ids = () if eos is None else tuple(eos) if isinstance(eos, (list, tuple)) else (eos,)
    head_dim = tc.get("head_dim") or t["hidden_size"] // t["num_attention_heads"]
    try:
        text = TextConfig(
            vocab_size=t["vocab_size"],
            hidden_size=t["hidden_size"],
            intermediate_size=t["intermediate_size"],
            num_layers=t["num_hidden_layers"],
            num_heads=t["num_attention_heads"],
            num_kv_heads=t["num_key_value_heads"],
            head_dim=head_dim,
            rms_norm_eps=float(t["rms_norm_eps"]),
            rope_theta=rope_theta,
            max_position_embeddings=t["max_position_embeddings"],
            hidden_act=t["hidden_act"],
            bos_token_id=tc.get("bos_token_id"),
            eos_token_ids=eos_ids,
        )
    except ConfigError as exc:
        raise CheckpointError(f"config.json text_config is invalid: {exc}") from exc
    return text, bool(t["tie_word_embeddings"])


def _rope_theta(tc: Mapping[str, Any]) -> float:
    """RoPE base from either the transformers-5 ``rope_parameters`` or the 4.x ``rope_theta`` / ``rope_scaling``."""
    params = tc.get("rope_parameters") or tc.get("rope_scaling") or {}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type != "default":
        raise CheckpointError(
            f"config.json text_config uses RoPE scaling {rope_type!r}; holitom implements the default RoPE only."
        )
    return float(params.get("rope_theta", tc.get("rope_theta", _DEFAULT_ROPE_THETA)))

# ---- named geometry presets ---------------------------------------------------------------

# SigLIP-so400m as LLaVA-OneVision uses it: 26 layers (vision_feature_layer -1 of the
# llava-hf config), 384 px, patch 14 -> 27x27 patches -> 14x14 = 196 tokens per frame.
SIGLIP_SO400M = VisionConfig(hidden_size=1152, intermediate_size=4304, num_layers=26, num_heads=16, image_size=384, patch_size=14)


@dataclass(frozen=True)
class ModelPreset:
    """A named geometry: ``build`` is called on lookup, so importing this module reads no files."""

    name: str
    description: str
    build: Callable[[], LlavaConfig]


def _default_geometry() -> LlavaConfig:
    from holitom.default_model import default_model_dir

    return LlavaConfig.from_pretrained(default_model_dir())


def _qwen2(hidden: int, ffn: int, layers: int, heads: int, kv_heads: int, vocab: int) -> TextConfig:
    return TextConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_layers=layers, num_heads=heads,
        num_kv_heads=kv_heads, head_dim=hidden // heads, rope_theta=1_000_000.0,
    )


_PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        ModelPreset("default", "the embedded tiny default model (real 384 px geometry, tiny widths)", _default_geometry),
        ModelPreset(
            "llava-ov-0.5b",
            "LLaVA-OneVision-0.5B: SigLIP-so400m (26 layers used) + Qwen2-0.5B",
            lambda: LlavaConfig(SIGLIP_SO400M, _qwen2(896, 4864, 24, 14, 2, 151936), tie_word_embeddings=True),
        ),
        ModelPreset(
            "llava-ov-7b",
            "LLaVA-OneVision-7B: SigLIP-so400m (26 layers used) + Qwen2-7B",
            lambda: LlavaConfig(SIGLIP_SO400M, _qwen2(3584, 18944, 28, 28, 4, 152064)),
        ),
    )
}
PRESET_NAMES: tuple[str, ...] = tuple(_PRESETS)


def _preset(name: str) -> ModelPreset:
    if name not in _PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; choose one of {list(PRESET_NAMES)} or pass a checkpoint folder.")
    return _PRESETS[name]


def preset_description(name: str) -> str:
    return _preset(name).description


__all__ = [
    "VisionConfig",
    "TextConfig",
    "LlavaConfig",
    "VariantSpec",
    "VARIANTS",
    "DEFAULT_VARIANT",
    "VARIANT_CONFIG_KEY",
    "PRESET_NAMES",
    "SIGLIP_SO400M",
    "preset_description",
]
