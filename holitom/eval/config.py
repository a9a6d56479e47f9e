"""The typed settings of one ``holitom eval`` run (CLI flags only fill them in)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from holitom.bench.config import PAPER_RATIOS, RUNTIME_BACKENDS, check_names
from holitom.errors import ConfigError
from holitom.eval.videoqa import NUM_FRAMES, SPLIT_SIZE, SPLITS
from holitom.limits import MAX_FRAMES, MIN_FRAMES, check_int

DEFAULT_ITEMS = 140  # 20 per question type


def all_methods() -> tuple[str, ...]:
    """vanilla, holitom-outer, holitom and every competing method registered as a preset family."""
    from holitom.bench.config import method_specs

    return tuple(method_specs())


@dataclass(frozen=True)
class EvalConfig:
    """What one evaluation runs.

    Attributes:
        model: ``default``, a llava-hf checkpoint folder or a holitom export folder
            (an export runs on the onnxruntime backend only).
        split: benchmark split (``test`` is the held-out one).
        items: number of items, ``start`` .. ``start + items - 1`` of the split.
        start: first item index.
        backends: among ``torch`` and ``onnxruntime``; None = both for a checkpoint,
            onnxruntime for an export.
        methods: method names (``holitom.bench.config.method_specs``); None = all.
        ratios: retain ratios r of the methods that take one.
        frames: frames sampled per clip.
        max_new_tokens: answer length limit (a reply is one word, or an option and its letter: at most 7 tokens of the default's tokenizer).
        threads: torch intra-op threads, None keeps torch's default.
        export: an export folder of the same model (e.g. `holitom calibrate`'s INT8 one) whose
            onnxruntime rows are added beside the others, labelled with its precision.
    """

    model: str = "default"
    split: str = "test"
    items: int = DEFAULT_ITEMS
    start: int = 0
    backends: tuple[str, ...] | None = None
    methods: tuple[str, ...] | None = None
    ratios: tuple[float, ...] = PAPER_RATIOS
    frames: int = NUM_FRAMES
    max_new_tokens: int = 8
    threads: int | None = None
    export: str | None = None

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError(f"split '{self.split}' is not one of {list(SPLITS)}; the held-out split is 'test'.")
        for name, low, high in (("items", 1, SPLIT_SIZE), ("start", 0, SPLIT_SIZE - 1), ("frames", MIN_FRAMES, MAX_FRAMES), ("max_new_tokens", 1, None)):
            object.__setattr__(self, name, check_int(getattr(self, name), name, low, high))
        if self.start + self.items > SPLIT_SIZE:
            raise ConfigError(f"items {self.start}..{self.start + self.items - 1} run past the split's {SPLIT_SIZE} items; lower --start or --items.")
        if self.threads is not None:
            object.__setattr__(self, "threads", check_int(self.threads, "threads", 1))
        if self.backends is not None:
            object.__setattr__(self, "backends", check_names("backends", self.backends, RUNTIME_BACKENDS))
        if self.export is not None:
            from holitom.sources import resolve_source

            if not resolve_source(self.export, "--export").is_export:
                raise ConfigError(f"--export '{self.export}' must be an export folder (`holitom export` or `holitom calibrate` writes one).")
        known = all_methods()
        object.__setattr__(self, "methods", known if self.methods is None else check_names("methods", self.methods, known))
        object.__setattr__(self, "ratios", self._ratios(self.ratios))

    def _ratios(self, values: Any) -> tuple[float, ...]:
        from holitom.bench.config import method_specs
        from holitom.merge import preset_names

        if isinstance(values, (str, bytes)) or not isinstance(values, (tuple, list)) or not values:
            raise ConfigError(f"ratios must be a non-empty list of retain ratios such as 0.1, got {values!r}.")
        presets, specs, out = set(preset_names()), method_specs(), []
        for r in values:
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or not 0 < r <= 1:
                raise ConfigError(f"retain ratio {r!r} must be a number in (0, 1], e.g. 0.1 for r = 10%.")
            pct = round(r * 100)
            missing = [m for m in self.methods if specs[m].uses_ratio and specs[m].preset_for(pct) not in presets]
            if abs(pct - r * 100) > 1e-6 or missing:
                raise ConfigError(f"retain ratio {r!r} has no preset for methods {missing or list(self.methods)}; use ratios among {list(PAPER_RATIOS)}.")
            out.append(pct / 100)
        return tuple(dict.fromkeys(out))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("backends", "methods", "ratios"):
            out[key] = None if out[key] is None else list(out[key])
        return out


__all__ = ["DEFAULT_ITEMS", "EvalConfig", "all_methods"]
