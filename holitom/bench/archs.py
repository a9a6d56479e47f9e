"""Architecture presets for random-weight timing, and their materialised checkpoints.

Timing does not depend on weight values, so the benchmark can time the real
LLaVA-OneVision geometries without downloading anything: a preset names the
widths and depths of the vision tower and the decoder, and
:func:`materialize` writes a llava-hf-layout checkpoint with random weights
(``config.json`` + ``model.safetensors`` written by transformers' own
``LlavaOnevisionForConditionalGeneration(config).save_pretrained``, plus the
embedded default model's tokenizer, chat template and processor configs with
the image size adjusted). Every path of the benchmark (the transformers
baseline, our torch model, our onnxruntime export) then loads the SAME folder
through its real loader.

Presets (:data:`ARCH_NAMES`):

- ``default``: the embedded tiny model (its own folder is used as is unless an
  override changes its geometry).
- ``llava-ov-0.5b``: SigLIP-so400m as LLaVA uses it (hidden 1152, the 26 layers
  the llava-hf config keeps with ``vision_feature_layer=-1``, 16 heads, FFN
  4304, 384 px, patch 14 -> 27x27 patches -> 14x14 = 196 tokens per frame) +
  Qwen2-0.5B (hidden 896, 24 layers, 14 heads, 2 KV heads, FFN 4864, vocab
  151936, tied embeddings).
- ``llava-ov-7b``: the same SigLIP + Qwen2-7B (hidden 3584, 28 layers, 28 heads,
  4 KV heads, FFN 18944, vocab 152064, untied).

Overrides (:meth:`ArchSpec.with_overrides`) shrink a preset so CPU runs finish:
fewer vision / text layers (widths stay real, so each layer costs what it costs
in the real model), a lower resolution, or a smaller vocabulary. The tokenizer
is the default model's (1280 ids, ``<video>`` = 1279): ids beyond it are never
produced by the tokenizer, so a smaller vocabulary changes only the cost of the
``lm_head`` (last prompt position in prefill, every decode step) and the
embedding table's memory.

Resolution and pooling: SigLIP's patch convolution has stride 14 and no
padding, so the grid is ``image_size // 14`` (384 -> 27: the real model also
drops 6 pixels). LLaVA-OneVision then resizes the grid bilinearly to
``ceil(g / 2)`` per side (27 -> 14, 196 tokens; 192 px -> 13 -> 7, 49 tokens;
224 px -> 16 -> 8, 64 tokens); LLaVA-Video average-pools 2x2 with floor
(27 -> 13, 169 tokens; 192 px -> 6, 36 tokens). :attr:`ArchSpec.tokens_per_frame`
reads this from :class:`holitom.models.config.LlavaConfig`, the same code the
model uses.

This module imports neither torch nor transformers until :func:`materialize` runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from holitom.errors import ConfigError

# Written into a materialised folder last: its presence means the folder is complete.
ARCH_MARKER = "holitom_bench_arch.json"
# Bumped when the materialised layout changes, so stale caches are not reused.
MATERIALIZE_VERSION = 1
# Files copied from the embedded default model (tokenizer, chat template, generation defaults).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")
PROCESSOR_FILE = "processor_config.json"


@dataclass(frozen=True)
class VisionArch:
    """SigLIP geometry: every layer listed here runs (``vision_feature_layer = -1``)."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    image_size: int = 384
    patch_size: int = 14


@dataclass(frozen=True)
class TextArch:
    """Qwen2 decoder geometry."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    tie_word_embeddings: bool = False
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 32768


@dataclass(frozen=True)
class ArchSpec:
    """A model geometry the benchmark can materialise with random weights.

    ``base`` names the preset it came from; ``overrides`` records what
    :meth:`with_overrides` changed (empty for the preset itself), so reports
    say exactly what was timed.
    """

    name: str
    vision: VisionArch
    text: TextArch
    variant: str = "onevision"
    description: str = ""
    overrides: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The model's own config validates widths, heads, activations and the
        # feature layer; building it here makes a bad override fail at once.
        self.llava_config()
        if self.vision.image_size // self.vision.patch_size < 2:
            raise ConfigError(
                f"arch '{self.name}': image_size {self.vision.image_size} with patch {self.vision.patch_size} gives a "
                f"{self.vision.image_size // self.vision.patch_size}x{self.vision.image_size // self.vision.patch_size} "
                f"patch grid; use image_size >= {2 * self.vision.patch_size} so 2x2 pooling has something to pool."
            )
        if self.text.num_layers < 2:
            raise ConfigError(
                f"arch '{self.name}': the decoder needs at least 2 layers (the runtime splits it around the "
                f"inner-merge layer), got {self.text.num_layers}."
            )

    # ---- geometry --------------------------------------------------------------------

    def llava_config(self):
        """The :class:`~holitom.models.config.LlavaConfig` this arch materialises to (torch-free)."""
        from holitom.models.config import LlavaConfig

        return LlavaConfig.from_hf_dict(self.hf_config_dict(image_token_id=0, video_token_id=1))

    @property
    def patch_grid(self) -> int:
        return self.vision.image_size // self.vision.patch_size

    @property
    def pooled_grid(self) -> tuple[int, int]:
        return tuple(self.llava_config().pooled_grid)

    @property
    def tokens_per_frame(self) -> int:
        """P: pooled video tokens per frame (196 at 384 px for LLaVA-OneVision)."""
        return self.llava_config().tokens_per_frame

    # ---- derived presets -------------------------------------------------------------

    def with_overrides(
        self,
        image_size: int | None = None,
        vision_layers: int | None = None,
        text_layers: int | None = None,
        vocab_size: int | None = None,
        min_vocab_size: int = 1,
    ) -> "ArchSpec":
        """A copy with fewer layers / another resolution / another vocabulary; None keeps the preset's value.

        ``min_vocab_size`` is the tokenizer's size: the vocabulary may not be
        smaller than the ids the tokenizer produces.
        """
        from holitom.limits import MAX_VOCAB_SIZE, check_int

        changes: dict[str, int] = {}
        # Overrides shrink a preset (upper bounds: its own sizes); all are checked before anything is allocated.
        for key, value, low, high in (
            ("image_size", image_size, 2 * self.vision.patch_size, self.vision.image_size),
            ("vision_layers", vision_layers, 1, self.vision.num_layers),
            ("text_layers", text_layers, 2, self.text.num_layers),
            ("vocab_size", vocab_size, min_vocab_size, max(MAX_VOCAB_SIZE, self.text.vocab_size)),
        ):
            if value is None:
                continue
            changes[key] = check_int(value, f"--{key.replace('_', '-')}", low, high)
        if not changes:
            return self
        vision = replace(
            self.vision,
            image_size=changes.get("image_size", self.vision.image_size),
            num_layers=changes.get("vision_layers", self.vision.num_layers),
        )
        text = replace(
            self.text,
            num_layers=changes.get("text_layers", self.text.num_layers),
            vocab_size=changes.get("vocab_size", self.text.vocab_size),
        )
        return replace(self, vision=vision, text=text, overrides={**self.overrides, **changes})

    # ---- serialisation ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["patch_grid"] = self.patch_grid
        out["pooled_grid"] = list(self.pooled_grid)
        out["tokens_per_frame"] = self.tokens_per_frame
        return out

    def cache_key(self) -> str:
        """Changes when anything that ends up in the materialised folder changes."""
        import transformers

        payload = {
            "vision": asdict(self.vision),
            "text": asdict(self.text),
            "variant": self.variant,
            "materialize_version": MATERIALIZE_VERSION,
            "transformers": transformers.__version__,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def hf_config_dict(self, image_token_id: int, video_token_id: int) -> dict[str, Any]:
        """A llava-hf ``config.json`` dict (what transformers' LlavaOnevisionConfig serialises to)."""
        v, t = self.vision, self.text
        return {
            "model_type": "llava_onevision",
            "architectures": ["LlavaOnevisionForConditionalGeneration"],
            "holitom_variant": self.variant,
            "vision_config": {
                "model_type": "siglip_vision_model",
                "hidden_size": v.hidden_size,
                "intermediate_size": v.intermediate_size,
                "num_hidden_layers": v.num_layers,
                "num_attention_heads": v.num_heads,
                "image_size": v.image_size,
                "patch_size": v.patch_size,
                "num_channels": 3,
                "hidden_act": "gelu_pytorch_tanh",
                "layer_norm_eps": 1e-6,
                "vision_use_head": False,
            },
            "text_config": {
                "model_type": "qwen2",
                "hidden_size": t.hidden_size,
                "intermediate_size": t.intermediate_size,
                "num_hidden_layers": t.num_layers,
                "num_attention_heads": t.num_heads,
                "num_key_value_heads": t.num_kv_heads,
                "vocab_size": t.vocab_size,
                "hidden_act": "silu",
                "rms_norm_eps": 1e-6,
                "rope_theta": t.rope_theta,
                "max_position_embeddings": t.max_position_embeddings,
                "tie_word_embeddings": t.tie_word_embeddings,
                "use_sliding_window": False,
            },
            "image_token_index": image_token_id,
            "video_token_index": video_token_id,
            "vision_feature_layer": -1,
            "vision_feature_select_strategy": "full",
            "vision_aspect_ratio": "anyres_max_9",
            "projector_hidden_act": "gelu",
            "multimodal_projector_bias": True,
            "tie_word_embeddings": t.tie_word_embeddings,
        }


# ---- the registry -------------------------------------------------------------------

SIGLIP_SO400M = VisionArch(hidden_size=1152, intermediate_size=4304, num_layers=26, num_heads=16, image_size=384, patch_size=14)


def _default_arch() -> ArchSpec:
    from holitom.default_model import default_model_dir
    from holitom.models.config import LlavaConfig

    cfg = LlavaConfig.from_pretrained(default_model_dir())
    v, t = cfg.vision, cfg.text
    return ArchSpec(
        name="default",
        vision=VisionArch(v.hidden_size, v.intermediate_size, cfg.num_vision_layers_used, v.num_heads, v.image_size, v.patch_size),
        text=TextArch(
            t.hidden_size, t.intermediate_size, t.num_layers, t.num_heads, t.num_kv_heads, t.vocab_size,
            tie_word_embeddings=cfg.tie_word_embeddings, rope_theta=t.rope_theta, max_position_embeddings=t.max_position_embeddings,
        ),
        variant=cfg.variant,
        description="the embedded tiny default model (real 384 px geometry, tiny widths)",
    )


def _llava_ov_05b() -> ArchSpec:
    return ArchSpec(
        name="llava-ov-0.5b",
        vision=SIGLIP_SO400M,
        text=TextArch(hidden_size=896, intermediate_size=4864, num_layers=24, num_heads=14, num_kv_heads=2, vocab_size=151936, tie_word_embeddings=True),
        description="LLaVA-OneVision-0.5B: SigLIP-so400m (26 layers used) + Qwen2-0.5B",
    )


def _llava_ov_7b() -> ArchSpec:
    return ArchSpec(
        name="llava-ov-7b",
        vision=SIGLIP_SO400M,
        text=TextArch(hidden_size=3584, intermediate_size=18944, num_layers=28, num_heads=28, num_kv_heads=4, vocab_size=152064, tie_word_embeddings=False),
        description="LLaVA-OneVision-7B: SigLIP-so400m (26 layers used) + Qwen2-7B",
    )


# name -> factory; factories (not instances) so importing this module reads no files.
_ARCHS: dict[str, Callable[[], ArchSpec]] = {
    "default": _default_arch,
    "llava-ov-0.5b": _llava_ov_05b,
    "llava-ov-7b": _llava_ov_7b,
}
ARCH_NAMES: tuple[str, ...] = tuple(_ARCHS)


def get_arch(name: str) -> ArchSpec:
    """The preset ``name``; ConfigError listing the known presets otherwise."""
    if name not in _ARCHS:
        raise ConfigError(f"unknown architecture preset '{name}'; choose one of {list(ARCH_NAMES)} or pass a checkpoint folder.")
    return _ARCHS[name]()


def default_vocab_floor() -> int:
    """The embedded tokenizer's id count: materialised vocabularies may not be smaller."""
    from holitom.default_model import default_model_dir
    from holitom.models.config import LlavaConfig

    return LlavaConfig.from_pretrained(default_model_dir()).text.vocab_size


# ---- materialisation ----------------------------------------------------------------


def cache_root() -> Path:
    """Where materialised checkpoints go: ``$HOLITOM_CACHE/bench/archs`` (the runtime's cache root)."""
    from holitom.paths import cache_root as toolkit_cache_root

    return toolkit_cache_root() / "bench" / "archs"


def materialize(spec: ArchSpec, seed: int = 0, root: Path | None = None, log: Callable[[str], None] | None = None) -> Path:
    """A checkpoint folder for ``spec`` (created once, then reused from the cache).

    The unmodified ``default`` preset is the embedded folder itself. Anything
    else is written to ``<root>/<name>-<key>/`` through a temporary sibling
    folder renamed into place when complete, so an interrupted run leaves no
    half-written checkpoint behind.
    """
    from holitom.default_model import default_model_dir

    if spec.name == "default" and not spec.overrides:
        return default_model_dir()
    root = Path(root) if root is not None else cache_root()
    out = root / f"{spec.name}-{spec.cache_key()}"
    if (out / ARCH_MARKER).is_file():
        return out
    root.mkdir(parents=True, exist_ok=True)
    if log:
        log(f"materialising a random-weight checkpoint for arch '{spec.name}' {spec.overrides or ''} in {out}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=root))
    try:
        _write_checkpoint(spec, tmp, seed, default_model_dir())
        if out.exists():  # another process finished first; keep its copy
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_checkpoint(spec: ArchSpec, folder: Path, seed: int, default_dir: Path) -> None:
    import torch
    import transformers

    default_cfg = json.loads((default_dir / "config.json").read_text())
    hf_dict = spec.hf_config_dict(default_cfg["image_token_index"], default_cfg["video_token_index"])
    vision_cfg = hf_dict.pop("vision_config")
    text_cfg = hf_dict.pop("text_config")
    for key in ("model_type", "architectures"):
        hf_dict.pop(key)
    for key in ("model_type",):
        vision_cfg.pop(key)
        text_cfg.pop(key)
    config = transformers.LlavaOnevisionConfig(
        vision_config=transformers.SiglipVisionConfig(**vision_cfg),
        text_config=transformers.Qwen2Config(**text_cfg),
        **hf_dict,
    )
    torch.manual_seed(seed)
    model = transformers.LlavaOnevisionForConditionalGeneration(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    del model
    for name in TOKENIZER_FILES:
        if (default_dir / name).is_file():
            shutil.copy2(default_dir / name, folder / name)
    # The processor resizes frames to the vision tower's input size; nothing else changes.
    processor = json.loads((default_dir / PROCESSOR_FILE).read_text())
    size = {"height": spec.vision.image_size, "width": spec.vision.image_size}
    for part in ("image_processor", "video_processor"):
        if isinstance(processor.get(part), dict):
            processor[part]["size"] = dict(size)
    processor["num_image_tokens"] = spec.patch_grid**2
    (folder / PROCESSOR_FILE).write_text(json.dumps(processor, indent=2) + "\n")
    marker = {"arch": spec.to_dict(), "seed": seed, "transformers": transformers.__version__, "torch": torch.__version__}
    (folder / ARCH_MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")


__all__ = [
    "ARCH_NAMES",
    "ArchSpec",
    "TextArch",
    "VisionArch",
    "cache_root",
    "default_vocab_floor",
    "get_arch",
    "materialize",
]
