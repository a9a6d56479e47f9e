"""The benchmark's typed settings and its registry of methods (rows).

:class:`BenchConfig` holds everything one ``holitom bench`` run measures and is
validated in ``__post_init__`` (CLI flags only fill it in). A row of the
benchmark is one (backend, method, ratio); :func:`plan_rows` expands the
config into rows.

Methods (:func:`method_specs`):

- ``vanilla``: every video token (preset ``none``).
- ``holitom-outer``: HoliTom's outer merge only (preset ``r{pct}``, inner merge off).
- ``holitom``: full HoliTom (preset ``r{pct}``).
- competing methods, discovered from the merge preset registry: every preset
  named ``<family>-r<pct>`` (e.g. ``uniform_pool-r10``, ``fastv-r10``) makes
  ``<family>`` a method, run on the torch backend at the same retain ratio r
  as HoliTom (equal budgets). Adding one is one ``register_preset`` call in
  :mod:`holitom.merge`; nothing here changes.

The transformers baseline is the backend ``transformers`` with method
``vanilla`` (all tokens); every ratio in the report is measured against it.

Importing this module imports no torch: the preset registry is consulted only
during validation.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from holitom.errors import ConfigError
from holitom.limits import MAX_FRAMES, MAX_SEED, MIN_FRAMES, MIN_SEED, PAPER_RETAIN_PERCENTS, check_device, check_dtype, check_int

TRANSFORMERS = "transformers"
RUNTIME_BACKENDS = ("torch", "onnxruntime")
ALL_BACKENDS = (TRANSFORMERS, *RUNTIME_BACKENDS)
PAPER_RATIOS = tuple(percent / 100 for percent in PAPER_RETAIN_PERCENTS)
DEFAULT_METHODS = ("vanilla", "holitom-outer", "holitom")
DEFAULT_PROMPT = "Describe what happens in this video."
# A competing method's presets are named like HoliTom's, with a family prefix: "evs-r10".
_COMPETITOR_PRESET = re.compile(r"^(?P<family>[A-Za-z][A-Za-z0-9_.]*)-r(?P<pct>\d{1,3})$")


@dataclass(frozen=True)
class MethodSpec:
    """One way of reducing visual tokens, as a row family of the benchmark.

    ``preset`` is a merge preset name, with ``{pct}`` standing for the retain
    ratio in percent when ``uses_ratio``; ``inner_merge`` is passed to
    :class:`~holitom.runtime.RuntimeConfig`; ``backends`` lists where it runs.
    """

    name: str
    preset: str
    inner_merge: bool
    uses_ratio: bool
    backends: tuple[str, ...]
    description: str

    def preset_for(self, pct: int | None) -> str:
        return self.preset.format(pct=pct) if self.uses_ratio else self.preset


_BUILTIN_METHODS = (
    MethodSpec("vanilla", "none", True, False, ALL_BACKENDS, "all video tokens"),
    # "r{pct}" with the inner merge switched off, not "r{pct}-outer": exports carry the paper presets only.
    MethodSpec("holitom-outer", "r{pct}", False, True, RUNTIME_BACKENDS, "HoliTom outer merge only (stages I+II)"),
    MethodSpec("holitom", "r{pct}", True, True, RUNTIME_BACKENDS, "full HoliTom (stages I+II+III)"),
)


def _preset_names() -> list[str]:
    from holitom.merge import preset_names

    return preset_names()


def method_specs() -> dict[str, MethodSpec]:
    """Built-in methods plus the competing methods the merge preset registry holds right now."""
    methods = {m.name: m for m in _BUILTIN_METHODS}
    for name in _preset_names():
        match = _COMPETITOR_PRESET.match(name)
        if match and match["family"] not in methods:
            family = match["family"]
            methods[family] = MethodSpec(family, f"{family}-r{{pct}}", True, True, ("torch",), f"competing method '{family}' at HoliTom's budget")
    return methods


def _pct(ratio: float) -> int:
    return round(ratio * 100)


@dataclass(frozen=True)
class RowSpec:
    """One row: a backend running a method at a ratio (None for methods without one).

    ``export``: an onnxruntime row that runs this export folder (e.g. `holitom calibrate`'s INT8 one)
    instead of the model's float32 export; ``precision`` labels it (:func:`holitom.calibration.config.precision_label`).
    """

    backend: str
    method: str
    ratio: float | None
    preset: str
    inner_merge: bool
    export: str | None = None
    precision: str | None = None

    @property
    def label(self) -> str:
        """The backend as the tables show it: ``onnxruntime[int8]`` for a row running a quantized export."""
        return self.backend if self.precision is None else f"{self.backend}[{self.precision}]"

    @property
    def id(self) -> str:
        suffix = f"@r{_pct(self.ratio):02d}" if self.ratio is not None else ""
        return f"{self.label}/{self.method}{suffix}"

    @property
    def is_baseline(self) -> bool:
        return self.backend == TRANSFORMERS

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, **asdict(self)}


def check_names(what: str, values: Any, known: tuple[str, ...]) -> tuple[str, ...]:
    """``values`` as a tuple without repeats, or a ConfigError naming the unknown ones."""
    if isinstance(values, str) or not isinstance(values, (tuple, list)) or not values:
        raise ConfigError(f"{what} must be a non-empty list of names from {list(known)}, got {values!r}.")
    unknown = [v for v in values if v not in known]
    if unknown:
        raise ConfigError(f"unknown {what} {unknown}; choose from {list(known)}.")
    return tuple(dict.fromkeys(values))  # drop repeats, keep order


def plan_rows(backends: tuple[str, ...], methods: tuple[str, ...], ratios: tuple[float, ...]) -> list[RowSpec]:
    """Rows for validated names: the transformers baseline first, then each runtime backend x method x ratio.

    A method runs only on the backends its :class:`MethodSpec` lists (competing
    methods: torch); ``holitom eval`` plans its rows here too.
    """
    specs = method_specs()
    rows: list[RowSpec] = []
    if TRANSFORMERS in backends:
        rows.append(RowSpec(TRANSFORMERS, "vanilla", None, "none", True))
    for backend in RUNTIME_BACKENDS:
        if backend not in backends:
            continue
        for name in methods:
            spec = specs[name]
            if backend not in spec.backends:
                continue
            for ratio in ratios if spec.uses_ratio else (None,):
                pct = None if ratio is None else _pct(ratio)
                rows.append(RowSpec(backend, name, ratio, spec.preset_for(pct), spec.inner_merge))
    return rows


def export_rows(export: str, methods: tuple[str, ...], ratios: tuple[float, ...], float_attention: str | None = None) -> list[RowSpec]:
    """The onnxruntime rows that run the export folder ``export`` (``--export``), labelled with its precision.

    ``float_attention``: the attention form of the float32 onnxruntime rows beside them (default: the form of the
    toolkit's own exports, which a checkpoint's rows run). When ``export`` holds another form, the label says so
    (``int8,standard``): the two forms' prefill and decode differ far more than their precisions do.
    """
    from dataclasses import replace

    from holitom.calibration.config import precision_label
    from holitom.export.cache import OWN_EXPORT_ATTENTION
    from holitom.export.manifest import read_manifest

    manifest = read_manifest(export, check_files=False)
    label = precision_label(manifest.quantization)
    if manifest.attention != (float_attention or OWN_EXPORT_ATTENTION):
        label = f"{label},{manifest.attention}"
    return [replace(row, export=str(export), precision=label) for row in plan_rows(("onnxruntime",), methods, ratios)]


@dataclass(frozen=True)
class BenchConfig:
    """What one benchmark run measures.

    Attributes:
        model: ``default``, an architecture preset (:data:`holitom.models.config.PRESET_NAMES`,
            random weights) or a llava-hf checkpoint folder.
        video: a video file; None generates a clip (textured background, moving
            shapes, one scene cut) with :func:`holitom.video.make_frames`.
        prompt: the question (the checkpoint's chat template is applied).
        frames: frames sampled from the video (32 in the paper).
        image_size, vision_layers, text_layers, vocab_size: overrides of an
            architecture preset (None keeps the preset's value); refused for a
            checkpoint folder, whose geometry is fixed.
        backends: rows to run among ``transformers`` (the baseline), ``torch``, ``onnxruntime``.
        methods: method names (:func:`method_specs`).
        ratios: retain ratios r for the methods that take one (presets ``r10``..``r25``).
        repeats: measured runs per row (medians are reported); >= 1.
        warmup: unmeasured runs per row before any measurement; >= 0.
        decode_tokens: tokens generated per run (stop tokens ignored, so every
            row decodes the same count); >= 2 so decode speed is measured.
        device: ``cpu`` or ``cuda[:N]``.
        dtype: compute dtype; onnxruntime rows need float32 (what the exporter writes).
        count_flops: count the decoder's matmul FLOPs with FlopCounterMode (one extra untimed run per method).
        measure_memory: measure peak memory of each row in a fresh child process.
        seed: seed of the generated clip and of the random weights of a preset.
        threads: torch intra-op threads (``torch.set_num_threads``) for every
            torch-based row; None keeps torch's default (one per core). On a
            shared machine, fewer threads than cores avoids OpenMP threads
            spinning against other processes, which can slow torch by 10x.
            onnxruntime sessions keep the runtime's own thread settings.
        interleave: load every row's model at once and measure the rows
            round-robin (fairest on a machine whose speed drifts); False
            measures one backend at a time with only its models loaded, for
            models whose backends do not fit in memory together.
        project_full_depth: for an architecture preset trimmed to fewer layers, time
            every row once more at a second depth and report a full-depth projection
            beside the measured rows (:mod:`holitom.bench.projection`).
        cuda_graph: the torch rows' decode step as a CUDA graph (None: on CUDA devices;
            True off CUDA is refused; False decodes eagerly, for an A/B of decode speed).
    """

    model: str = "default"
    video: str | None = None
    prompt: str = DEFAULT_PROMPT
    frames: int = 32
    image_size: int | None = None
    vision_layers: int | None = None
    text_layers: int | None = None
    vocab_size: int | None = None
    backends: tuple[str, ...] = ALL_BACKENDS
    methods: tuple[str, ...] = DEFAULT_METHODS
    ratios: tuple[float, ...] = PAPER_RATIOS
    repeats: int = 3
    warmup: int = 1
    decode_tokens: int = 16
    device: str = "cpu"
    dtype: str = "float32"
    count_flops: bool = True
    measure_memory: bool = True
    seed: int = 0
    threads: int | None = None
    interleave: bool = True
    project_full_depth: bool = True
    export: str | None = None  # an export folder of the same model (e.g. `holitom calibrate`'s INT8 one): onnxruntime rows added for it
    cuda_graph: bool | None = None  # torch rows' decode step as a CUDA graph; None: on CUDA (holitom.runtime.config.resolve_cuda_graph)
    overrides: dict[str, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        check_int(self.repeats, "repeats", 1)
        check_int(self.warmup, "warmup", 0)
        check_int(self.decode_tokens, "decode_tokens", 2)
        check_int(self.frames, "frames", MIN_FRAMES, MAX_FRAMES)
        if self.threads is not None:
            check_int(self.threads, "threads", 1)
        for flag in ("count_flops", "measure_memory", "interleave", "project_full_depth"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag} must be True or False, got {getattr(self, flag)!r}.")
        check_int(self.seed, "seed", MIN_SEED, MAX_SEED)
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ConfigError("prompt must be a non-empty question about the video.")
        check_dtype(self.dtype)
        check_device(self.device)
        from holitom.runtime.config import resolve_cuda_graph

        resolve_cuda_graph(self.cuda_graph, self.device)

        object.__setattr__(self, "backends", check_names("backends", self.backends, ALL_BACKENDS))
        object.__setattr__(self, "methods", check_names("methods", self.methods, tuple(method_specs())))
        object.__setattr__(self, "ratios", self._ratios(self.ratios))
        if ("onnxruntime" in self.backends or self.export is not None) and self.dtype != "float32":
            raise ConfigError(
                f"the onnxruntime backend runs the float32 export, but dtype {self.dtype} was asked; "
                "drop onnxruntime from --backends or use --dtype float32."
            )
        if self.export is not None:
            from holitom.sources import resolve_source

            if not resolve_source(self.export, "--export").is_export:
                raise ConfigError(f"--export '{self.export}' must be an export folder (`holitom export` or `holitom calibrate` writes one).")
            if self.project_full_depth and (self.vision_layers or self.text_layers):
                raise ConfigError("--export runs one fixed export, so a layer-trimmed preset cannot be projected to full depth; add --no-projection.")
        if self.video is not None:
            from holitom.paths import existing_path

            existing_path(self.video, "video", "file", ConfigError)
        self._check_model()
        if not self.rows():
            raise ConfigError(
                f"backends {list(self.backends)} x methods {list(self.methods)} give no rows to run "
                "(competing methods run on the torch backend only; the transformers backend runs 'vanilla')."
            )

    # ---- validation helpers ------------------------------------------------------------

    def _ratios(self, values: Any) -> tuple[float, ...]:
        if isinstance(values, (str, bytes)) or not isinstance(values, (tuple, list)) or not values:
            raise ConfigError(f"ratios must be a non-empty list of retain ratios such as 0.1, got {values!r}.")
        out = []
        presets = set(_preset_names())
        for r in values:
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or not 0 < r <= 1:
                raise ConfigError(f"retain ratio {r!r} must be a number in (0, 1], e.g. 0.1 for r = 10%.")
            pct = _pct(r)
            if abs(pct - r * 100) > 1e-6:
                raise ConfigError(f"retain ratio {r!r} is not a whole percentage; presets exist for {list(PAPER_RATIOS)}.")
            for name in self.methods:
                spec = method_specs()[name]
                if spec.uses_ratio and spec.preset_for(pct) not in presets:
                    raise ConfigError(
                        f"method '{name}' has no preset for r = {r} ('{spec.preset_for(pct)}' is not registered); "
                        f"use ratios among {list(PAPER_RATIOS)}."
                    )
            out.append(pct / 100)
        return tuple(dict.fromkeys(out))

    def _check_model(self) -> None:
        from holitom.models.config import PRESET_NAMES

        overrides = {
            k: v
            for k, v in (("image_size", self.image_size), ("vision_layers", self.vision_layers), ("text_layers", self.text_layers), ("vocab_size", self.vocab_size))
            if v is not None
        }
        object.__setattr__(self, "overrides", overrides)
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"model must be 'default', an architecture preset {list(PRESET_NAMES)} or a checkpoint folder, got {self.model!r}.")
        if self.model in PRESET_NAMES:
            from holitom.bench.archs import default_vocab_floor, get_arch

            # Cheap (no torch, no weights): a bad override fails here, before any model is built.
            get_arch(self.model).with_overrides(**overrides, min_vocab_size=default_vocab_floor())
            return
        from holitom.paths import expand_user

        path = expand_user(self.model, "model", ConfigError)
        if not path.exists():
            raise ConfigError(
                f"model '{self.model}' is neither an architecture preset {list(PRESET_NAMES)} nor an existing checkpoint folder."
            )
        if overrides:
            flags = ", ".join("--" + k.replace("_", "-") for k in overrides)
            raise ConfigError(
                f"{flags} change an architecture preset's geometry; '{self.model}' is a checkpoint folder, whose geometry is fixed. "
                f"Drop {flags} or pass a preset from {list(PRESET_NAMES)}."
            )

    # ---- derived ---------------------------------------------------------------------

    @property
    def is_arch_preset(self) -> bool:
        from holitom.models.config import PRESET_NAMES

        return self.model in PRESET_NAMES

    def rows(self) -> list[RowSpec]:
        """The rows to run: the transformers baseline first, then each runtime backend x method x ratio, then ``export``'s."""
        rows = plan_rows(self.backends, self.methods, self.ratios)
        return rows if self.export is None else rows + export_rows(self.export, self.methods, self.ratios)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["backends"], out["methods"], out["ratios"] = list(self.backends), list(self.methods), list(self.ratios)
        return out


__all__ = [
    "ALL_BACKENDS",
    "BenchConfig",
    "DEFAULT_METHODS",
    "MethodSpec",
    "PAPER_RATIOS",
    "RowSpec",
    "RUNTIME_BACKENDS",
    "TRANSFORMERS",
    "check_names",
    "method_specs",
    "plan_rows",
]
