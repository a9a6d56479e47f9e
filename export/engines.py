"""TensorRT engines for an export folder, one per ONNX graph, built through Polygraphy's loaders.

    holitom build-engines EXPORT_DIR [--precision fp16|bf16|fp32] [--plugins aot|jit|none]

Engines are built on the machine that will run them (they are tied to its
TensorRT version and GPU), from an export made anywhere, and saved beside the
ONNX files as ``<graph>.engine``; the manifest records them with the TensorRT
version and GPU (:class:`holitom.export.manifest.EngineSet`), which the tensorrt
backend checks before loading.

Everything TensorRT is handed is a pure function of the export's model sizes,
testable without TensorRT: the named-dimension ranges of the optimization
profiles (:func:`dim_ranges`: frames 1..64, opt 32; the prefill sequence range;
the decode step's two KV lengths), each graph's input shapes
(:func:`profile_shapes`) and its builder flags (:func:`builder_flags`: fp16 / bf16
for the model stages, float32 for the merge stages whose discrete decisions must
match the reference, INT8 when the graph carries Q/DQ nodes: explicit quantization,
no calibrator). :func:`build_engines` hands them to Polygraphy
(``NetworkFromOnnxPath``, ``CreateConfig``, ``Profile``, ``EngineFromNetwork``,
``SaveEngine``) and writes nothing of its own beyond files and the manifest.

Plugins (``--plugins``): ``aot`` registers the HoliTom plugins with their
ahead-of-time Triton kernels (engines run without Python; TensorRT >= 10.9),
``jit`` with the Python implementation (the process running the engine must register
it too), ``none`` registers nothing, so the parser builds the merge ops from their
ONNX local functions (the only choice on TensorRT < 10.9, e.g. JetPack 6's 10.3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from holitom import contracts as C
from holitom.errors import ConfigError, ExportError

PRECISIONS = ("fp32", "fp16", "bf16")
PLUGIN_MODES = ("aot", "jit", "none")
ENGINE_SUFFIX = ".engine"
# Stages whose outputs are discrete decisions (windows, kept indices) that must equal the reference's.
FLOAT32_STAGES = (C.OUTER_MERGE, C.INNER_MERGE)
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class ProfileConfig:
    """The ranges the engines accept. CLI flags only fill this in."""

    min_frames: int = 1
    opt_frames: int = 32
    max_frames: int = 64
    opt_text_tokens: int = 128  # prompt text around the video
    max_text_tokens: int = 1024
    max_new_tokens: int = 1024  # decode steps the KV profiles leave room for
    opt_retain: float = 0.15  # visual tokens kept by the outer merge at the opt point (the r15 preset)

    def __post_init__(self):
        if not 1 <= self.min_frames <= self.opt_frames <= self.max_frames <= 512:
            raise ConfigError(
                f"frames min/opt/max = {self.min_frames}/{self.opt_frames}/{self.max_frames} must satisfy 1 <= min <= opt <= max <= 512."
            )
        if not 1 <= self.opt_text_tokens <= self.max_text_tokens:
            raise ConfigError(f"text tokens opt/max = {self.opt_text_tokens}/{self.max_text_tokens} must satisfy 1 <= opt <= max.")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens={self.max_new_tokens} must be >= 1.")
        if not 0.0 < self.opt_retain <= 1.0:
            raise ConfigError(f"opt_retain={self.opt_retain} must be in (0, 1].")


def dim_ranges(dims: C.ModelDims, grid: tuple[int, int], config: ProfileConfig | None = None) -> dict[str, tuple[int, int, int]]:
    """``{named dimension: (min, opt, max)}`` for every named input dimension of the stage contracts.

    Visual tokens are bounded by every frame's tokens plus one newline per grid row
    (LLaVA-Video's layout; LLaVA-OneVision's single newline is fewer), the prompt by
    those plus the text, the KV caches by the prompt plus the decode steps.
    """
    cfg = config or ProfileConfig()
    per_frame = dims.tokens_per_frame + int(grid[0])
    visual_opt = math.ceil(cfg.opt_frames * dims.tokens_per_frame * cfg.opt_retain) + 1
    visual_max = cfg.max_frames * per_frame + 1
    seq_opt, seq_max = visual_opt + cfg.opt_text_tokens, visual_max + cfg.max_text_tokens
    tail_opt = seq_opt - visual_opt // 2  # the inner merge drops about half the visual tokens
    kv_max = seq_max + cfg.max_new_tokens
    return {
        C.FRAMES: (cfg.min_frames, cfg.opt_frames, cfg.max_frames),
        C.VISUAL: (1, visual_opt, visual_max),
        C.SEQUENCE: (1, seq_opt, seq_max),
        C.TAIL_SEQUENCE: (1, tail_opt, seq_max),
        C.PAST_HEAD: (1, seq_opt, kv_max),
        C.PAST_TAIL: (1, tail_opt, kv_max),
    }


def profile_shapes(spec: C.StageSpec, ranges: dict, present: list[str] | None = None) -> dict[str, tuple[tuple[int, ...], ...]]:
    """``{input: (min shape, opt shape, max shape)}`` for the inputs the graph file has (``present``)."""
    shapes = {}
    for t in spec.inputs:
        if present is not None and t.name not in present:
            continue  # dropped by the exporter as unused: not an engine input
        missing = [d for d in t.shape if isinstance(d, str) and d not in ranges]
        if missing:
            raise ExportError(f"{spec.name}: input '{t.name}' has dimensions {missing} without a profile range; this is a bug.")
        shapes[t.name] = tuple(tuple(ranges[d][k] if isinstance(d, str) else d for d in t.shape) for k in range(3))
    return shapes


def builder_flags(stage: str, precision: str, has_qdq: bool) -> dict[str, bool]:
    """Polygraphy ``CreateConfig`` precision flags for one graph."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision '{precision}' is not one of {PRECISIONS}.")
    low = precision if stage not in FLOAT32_STAGES else "fp32"
    return {"fp16": low == "fp16", "bf16": low == "bf16", "int8": has_qdq}


def check_plugin_limits(plugins: str, config: ProfileConfig) -> None:
    """The AOT TemporalSegment kernel runs the whole DP in one program over at most BLOCK_F frames."""
    from holitom.plugins_trt.ops import TEMPORAL_SEGMENT
    from holitom.plugins_trt.trt_spec import AOT_KERNELS

    if plugins not in PLUGIN_MODES:
        raise ConfigError(f"plugins '{plugins}' is not one of {PLUGIN_MODES}.")
    limit = dict(AOT_KERNELS[TEMPORAL_SEGMENT].blocks)["BLOCK_F"]
    if plugins == "aot" and config.max_frames > limit:
        raise ConfigError(
            f"--max-frames {config.max_frames} exceeds the {limit} frames the AOT TemporalSegment kernel handles; "
            f"pass --max-frames {limit} or less, or --plugins jit / none."
        )


def has_qdq(model) -> bool:
    """Whether the ONNX model holds Q/DQ nodes (main graph or functions): built as explicit INT8."""
    nodes = list(model.graph.node) + [n for f in model.functions for n in f.node]
    return any(n.op_type in QDQ_OPS for n in nodes)


@dataclass(frozen=True)
class GraphJob:
    stage: str
    onnx_file: str

    @property
    def engine_file(self) -> str:
        return Path(self.onnx_file).stem + ENGINE_SUFFIX


def graph_jobs(manifest) -> list[GraphJob]:
    """Every graph of the export, with the stage whose contract it follows."""
    jobs = [GraphJob(stage, entry.file) for stage, entry in manifest.graphs.items()]
    jobs += [GraphJob(C.OUTER_MERGE, v["graph"]["file"]) for v in manifest.outer_merge.values()]
    jobs += [GraphJob(C.INNER_MERGE, v["graph"]["file"]) for v in manifest.inner_merge.values()]
    return jobs


def build_engines(
    folder: str | Path,
    precision: str = "fp16",
    plugins: str = "aot",
    config: ProfileConfig | None = None,
    force: bool = False,
    progress: bool = True,
):
    """Build and save one engine per graph of the export in ``folder``; returns the updated manifest."""
    import onnx
    from tqdm.auto import tqdm

    from holitom.export.manifest import EngineEntry, EngineSet, read_manifest
    from holitom.export.onnx_io import graph_io
    from holitom.plugins_trt.tensorrt_env import current_target, require_polygraphy

    check_plugin_limits(plugins, config or ProfileConfig())
    if precision not in PRECISIONS:
        raise ConfigError(f"precision '{precision}' is not one of {PRECISIONS}.")
    folder = Path(folder).expanduser()
    manifest = read_manifest(folder)
    if manifest.engines is not None and not force:
        raise ExportError(f"'{folder}' already has TensorRT engines; pass --force to rebuild them.")
    purpose = "building TensorRT engines"
    target = current_target(purpose)
    require_polygraphy(purpose)
    from polygraphy.backend.trt import CreateConfig, EngineFromNetwork, NetworkFromOnnxPath, Profile, SaveEngine

    if plugins != "none":
        from holitom.plugins_trt.trt_register import register_plugins

        register_plugins(plugins)
    ranges = dim_ranges(manifest.dims, manifest.grid, config)
    specs = C.stage_specs(manifest.dims, manifest.precision)
    files: dict[str, EngineEntry] = {}
    for job in tqdm(graph_jobs(manifest), desc="engines", unit="graph", disable=not progress):
        model = onnx.load(str(folder / job.onnx_file), load_external_data=False)
        present = [name for name, _, _ in graph_io(model)["inputs"]]
        profile = Profile()
        for name, (lo, opt, hi) in profile_shapes(specs[job.stage], ranges, present).items():
            profile.add(name, min=lo, opt=opt, max=hi)
        flags = builder_flags(job.stage, precision, has_qdq(model))
        tmp = folder / f".{job.engine_file}.partial"
        try:
            SaveEngine(EngineFromNetwork(NetworkFromOnnxPath(str(folder / job.onnx_file)), CreateConfig(profiles=[profile], **flags)), str(tmp))()
        except Exception as exc:  # TensorRT / Polygraphy raise their own types; keep the message, add the graph
            tmp.unlink(missing_ok=True)
            raise ExportError(f"building the TensorRT engine for '{job.onnx_file}' failed: {type(exc).__name__}: {exc}") from exc
        tmp.replace(folder / job.engine_file)
        used = "fp32" if not (flags["fp16"] or flags["bf16"]) else precision
        files[job.onnx_file] = EngineEntry(job.engine_file, (folder / job.engine_file).stat().st_size, used + ("+int8" if flags["int8"] else ""))
    manifest.engines = EngineSet(target=target, plugins=plugins, profile={k: list(v) for k, v in ranges.items()}, files=files)
    manifest.write(folder)
    return manifest
