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

Presets are the model config's named geometries
(:meth:`holitom.models.config.LlavaConfig.from_name`: ``default``, the embedded
tiny model, whose own folder is used as is unless an override changes it;
``llava-ov-0.5b`` and ``llava-ov-7b``, SigLIP-so400m with Qwen2-0.5B / -7B).

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from holitom.models.config import LlavaConfig, preset_description

# Written into a materialised folder last: its presence means the folder is complete.
ARCH_MARKER = "holitom_bench_arch.json"
# Bumped when the materialised layout changes, so stale caches are not reused.
MATERIALIZE_VERSION = 2
# Files copied from the embedded default model (tokenizer, chat template, generation defaults).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")
PROCESSOR_FILE = "processor_config.json"


@dataclass(frozen=True)
class ArchSpec:
    """A model geometry the benchmark can materialise with random weights.

    ``config`` is a :class:`~holitom.models.config.LlavaConfig` preset
    (:meth:`LlavaConfig.from_name`) with the embedded tokenizer's image and
    video token ids; ``overrides`` records what :meth:`with_overrides` changed
    (empty for the preset itself), so reports say exactly what was timed.
    """

    name: str
    config: LlavaConfig
    description: str = ""
    overrides: dict[str, int] = field(default_factory=dict)

    # ---- geometry (read from the config, the same code the model uses) -----------------

    @property
    def vision(self):
        return self.config.vision

    @property
    def text(self):
        return self.config.text

    @property
    def patch_grid(self) -> int:
        return self.config.vision.patch_grid

    @property
    def pooled_grid(self) -> tuple[int, int]:
        return tuple(self.config.pooled_grid)

    @property
    def tokens_per_frame(self) -> int:
        """P: pooled video tokens per frame (196 at 384 px for LLaVA-OneVision)."""
        return self.config.tokens_per_frame

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

        ``vision_layers`` counts the encoder layers that run (the feature layer
        becomes the last one). ``min_vocab_size`` is the tokenizer's size: the
        vocabulary may not be smaller than the ids the tokenizer produces.
        """
        from holitom.limits import MAX_VOCAB_SIZE, check_int

        cfg = self.config
        changes: dict[str, int] = {}
        # Overrides shrink a preset (upper bounds: its own sizes); all are checked before anything is allocated.
        # Lower bounds: 2x2 pooling needs a 2x2 patch grid; the runtime splits the decoder around the inner-merge layer.
        for key, value, low, high in (
            ("image_size", image_size, 2 * cfg.vision.patch_size, cfg.vision.image_size),
            ("vision_layers", vision_layers, 1, cfg.num_vision_layers_used),
            ("text_layers", text_layers, 2, cfg.text.num_layers),
            ("vocab_size", vocab_size, min_vocab_size, max(MAX_VOCAB_SIZE, cfg.text.vocab_size)),
        ):
            if value is None:
                continue
            changes[key] = check_int(value, f"--{key.replace('_', '-')}", low, high)
        if not changes:
            return self
        vision = replace(cfg.vision, image_size=changes.get("image_size", cfg.vision.image_size))
        feature_layer = cfg.vision_feature_layer
        if "vision_layers" in changes:
            vision = replace(vision, num_layers=changes["vision_layers"])
            feature_layer = -1
        text = replace(
            cfg.text,
            num_layers=changes.get("text_layers", cfg.text.num_layers),
            vocab_size=changes.get("vocab_size", cfg.text.vocab_size),
        )
        config = replace(cfg, vision=vision, text=text, vision_feature_layer=feature_layer)
        return replace(self, config=config, overrides={**self.overrides, **changes})

    # ---- serialisation ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "overrides": dict(self.overrides), "config": self.config.to_dict()}

    def cache_key(self) -> str:
        """Changes when anything that ends up in the materialised folder changes."""
        import transformers

        payload = {
            "config": self.config.to_dict(),
            "materialize_version": MATERIALIZE_VERSION,
            "transformers": transformers.__version__,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# ---- the model config's named presets, as benchmark subjects -----------------------------


def get_arch(name: str) -> ArchSpec:
    """The preset ``name`` with the embedded tokenizer's token ids; ConfigError listing the presets otherwise."""
    config = LlavaConfig.from_name(name)
    tokenizer_ids = LlavaConfig.from_name("default")  # every materialised folder carries the default tokenizer
    config = replace(config, image_token_id=tokenizer_ids.image_token_id, video_token_id=tokenizer_ids.video_token_id)
    return ArchSpec(name=name, config=config, description=preset_description(name))


def default_vocab_floor() -> int:
    """The embedded tokenizer's id count: materialised vocabularies may not be smaller."""
    return LlavaConfig.from_name("default").text.vocab_size


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

    hf_dict = spec.config.to_hf_dict()
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
    "ArchSpec",
    "cache_root",
    "default_vocab_floor",
    "get_arch",
    "materialize",
]
