"""Build the onnxruntime stage set from an export folder's manifest.

This backend runs export folders only; :func:`holitom.runtime.load_pipeline`
exports a checkpoint first (:mod:`holitom.export.cache`), so a backend never
calls the exporter.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from holitom import contracts as C
from holitom.errors import BackendError, ConfigError, ManifestError, MissingDependencyError
from holitom.host import usable_cpus
from holitom.runtime.arrays import NumpyArrays
from holitom.runtime.backends.onnxruntime.runner import OnnxrtRunner
from holitom.sources import ModelSource
from holitom.runtime.stages import StageSet


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - onnxruntime is a dependency, but may be broken
        raise MissingDependencyError("onnxruntime", "the onnxruntime backend") from exc
    return onnxruntime


def providers_for(device: str) -> list[str]:
    ort = _import_onnxruntime()
    available = ort.get_available_providers()
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise MissingDependencyError("onnxruntime-gpu", "running the onnxruntime backend on CUDA", 'pip install "holitom-deploy[gpu]"')
        index = int(device.split(":")[1]) if ":" in device else 0
        # TensorRT's provider first where the build has it (it takes the subgraphs it can and leaves the rest,
        # e.g. the merge graphs' local functions, to CUDA), then CUDA, then the CPU for what neither takes.
        gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
        return [(p, {"device_id": index}) for p in gpu] + ["CPUExecutionProvider"]
    if device != "cpu":
        raise BackendError(f"device '{device}' is not supported by the onnxruntime backend; use 'cpu' or 'cuda'.")
    return ["CPUExecutionProvider"]


# onnxruntime's NodeArg.type -> the contract's dtype names.
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(bfloat16)": "bfloat16", "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(bool)": "bool"}


def _session_io(session) -> dict[str, list[tuple[str, str, tuple]]]:
    def describe(arg):
        return arg.name, _ORT_DTYPES.get(arg.type, arg.type), tuple("?" if d is None else d for d in arg.shape)

    return {"inputs": [describe(a) for a in session.get_inputs()], "outputs": [describe(a) for a in session.get_outputs()]}


@dataclass(frozen=True)
class SessionSettings:
    """How every session of the backend is built; each default is a measured choice (``scripts/bench_ort_session.py``,
    figures in the README's edge runtime section).

    - ``optimization``: onnxruntime's graph optimization level ("all" adds the layout and fusion passes).
    - ``threads``: intra-op threads; 0 lets onnxruntime take one per physical core.
    - ``memory_arena``: onnxruntime's CPU arena, which keeps (and rounds up) the largest buffers a session ever
      needed; without it freed activations go back to the heap.
    - ``memory_pattern``: onnxruntime's memory pattern, which plans one block for all of a run's intermediate
      tensors from the shapes of the run before. Off, each tensor is allocated when it is produced and freed after
      its last use. The prefill's 16 chained GroupQueryAttention nodes a layer pass growing past keys and values
      from one to the next; planned as one block they peaked at 212 MB above the loaded session (the default
      model's decoder head, 6,273 tokens, 2 threads) against 139 MB unplanned, in 328 against 308 ms.
    - ``optimized_cache``: keep each graph as optimized for this machine under the cache folder, so a later load
      skips the optimization passes (graphs whose weights sit in an external-data file are not cached).
    - ``io_binding``: the standard form's decode step binds its inputs where they lie and writes its outputs
      (logits, KV caches) into buffers the runner reuses. An ``--attention onnxruntime`` export's decode step
      always runs with IO binding over preallocated KV buffers (``kv_buffers.py``), whatever this says.
    - ``vision_chunk``: frames per vision-encoder call (0: all at once); the frames are independent, so the
      tower's activations peak at a chunk's size. One frame per call: the last layer's ``(frames, H, N, N)``
      score tensors (8.5 MB a frame at 4 heads x 729 patches) then stay in the CPU's cache
      (``scripts/bench_ort_vision.py``).
    - ``vision_workers``: how many of those chunks run at once (0: one per CPU this process may use, 1: one after
      another), each on one intra-op thread; CPU execution provider only (a GPU provider runs them one after another).
      One frame's ops split over two intra-op threads kept 1.7 of 2 cores busy (700 ms CPU in 405 ms wall for 32
      frames); two frames side by side on one thread each, 1.94 (582 ms in 300 ms), and less work in all: no
      hand-off between the threads inside each op (``scripts/bench_ort_vision.py --workers``, README).
    - ``spinning``: idle intra-op threads spin for work instead of sleeping (onnxruntime's default); between two
      session calls the pipeline runs numpy and Python code that spinning threads compete with.
    - ``disabled_optimizers``: onnxruntime graph passes left out (:data:`QDQ_DISABLED_OPTIMIZERS` for Q/DQ graphs).
    """

    optimization: str = "all"
    threads: int = 0
    memory_arena: bool = False
    memory_pattern: bool = False
    optimized_cache: bool = True
    io_binding: bool = False
    spinning: bool = False
    vision_chunk: int = 1
    vision_workers: int = 0
    disabled_optimizers: tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("threads", "vision_chunk", "vision_workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"SessionSettings.{name} must be an integer >= 0, got {value!r}.")


# Graph passes turned off for graphs with Q/DQ nodes (`holitom calibrate`'s INT8 vision tower). Common-subexpression
# elimination merges the identical per-consumer QuantizeLinear nodes of q, k and v into one Q feeding three DQs;
# onnxruntime's int8 -> uint8 activation rewrite for CPUs without VNNI then skips those MatMuls, which stay float
# and dequantize their weights on every call (scripts/profile_vision_int8.py: 6 of the 16 quantized MatMuls of two
# so400m-width layers).
QDQ_DISABLED_OPTIMIZERS = ("CommonSubexpressionElimination",)


def settings_for(quantization: dict | None) -> SessionSettings:
    """The session settings of a graph with these manifest quantization details (None: a float32 graph)."""
    if quantization and quantization.get("format") == "QDQ":
        return replace(DEFAULT_SESSION_SETTINGS, disabled_optimizers=QDQ_DISABLED_OPTIMIZERS)
    return DEFAULT_SESSION_SETTINGS


DEFAULT_SESSION_SETTINGS = SessionSettings()


def vision_workers(settings: SessionSettings, providers: list) -> int:
    """How many vision-encoder chunks run at once with these settings and execution providers."""
    if not settings.vision_chunk:
        return 1  # the frames in one call: nothing to share out
    if any((p if isinstance(p, str) else p[0]) != "CPUExecutionProvider" for p in providers):
        return 1  # a GPU provider: concurrent calls would only queue on the one device
    return settings.vision_workers or usable_cpus()


def vision_settings(settings: SessionSettings, workers: int) -> SessionSettings:
    """The vision session's settings when ``workers`` calls share it: one intra-op thread (the pool is per session, so
    every concurrent call then computes on its own worker thread alone).

    Measured layouts (default model, 32 frames one per call, 2 CPUs, wall medians of 7 and 9 interleaved repeats in one
    process, 2026-12-04, load average 1.5-1.8 and 1.0-1.4; identical bytes in every layout): one 2-thread session, frames
    in turn 429.5 / 586.4 ms; two workers sharing one 1-thread session 295.4 / 354.4 ms (1.45x / 1.65x); two workers
    sharing one 2-thread session 356.0 / 409.2 ms (the workers' calls and the pool's threads contend for the two
    cores); a 1-thread session per worker 296.6 / 353.7 ms, level with the shared one for a second copy of the weights.
    """
    return replace(settings, threads=1) if workers > 1 else settings


_OPTIMIZATION_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
OPTIMIZED_CACHE_DIR = "ort-optimized"


def _optimized_cache_path(path: Path, providers: list[str], settings: SessionSettings) -> Path | None:
    """Where the optimized form of ``path`` is kept for this onnxruntime, provider list and machine (None: not cached)."""
    if not settings.optimized_cache or (path.parent / (path.name + ".data")).exists():
        return None
    import hashlib
    import platform

    from holitom.paths import cache_root

    ort = _import_onnxruntime()
    st = path.stat()
    # The file's identity (path, size, mtime) and everything the optimized graph depends on.
    key = "|".join(map(str, (path.resolve(), st.st_size, st.st_mtime_ns, ort.__version__, providers, settings.optimization, settings.disabled_optimizers, platform.machine(), platform.processor())))
    try:
        root = cache_root()
    except ConfigError:
        return None  # no usable cache folder: load without the cache
    return root / OPTIMIZED_CACHE_DIR / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.onnx"


def session_from_file(path: Path, providers: list[str], spec: C.StageSpec | None = None, settings: SessionSettings | None = None):
    """Create an InferenceSession (called lazily by the runner's activate); with ``spec``, check its I/O against the contract."""
    import os

    ort = _import_onnxruntime()
    settings = settings or DEFAULT_SESSION_SETTINGS
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.threads
    options.enable_cpu_mem_arena = settings.memory_arena
    options.enable_mem_pattern = settings.memory_pattern
    if not settings.spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    level = settings.optimization
    load_from, cached, staging = path, _optimized_cache_path(path, providers, settings), None
    if cached is not None and cached.is_file():
        load_from, level = cached, "disable"  # already optimized for this machine: onnxruntime's offline mode
    elif cached is not None:
        staging = cached.with_name(f".{cached.stem}.{os.getpid()}.onnx")
        try:
            staging.parent.mkdir(parents=True, exist_ok=True)
            options.optimized_model_filepath = str(staging)
            options.log_severity_level = 3  # its warning that the file is for this machine only: the cache key says so
        except OSError:
            staging = None
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPTIMIZATION_LEVELS[level])
    try:
        session = ort.InferenceSession(str(load_from), sess_options=options, providers=providers, disabled_optimizers=list(settings.disabled_optimizers))
    except Exception as exc:  # onnxruntime raises its own pybind exception types (Fail, InvalidGraph, ...)
        reason = str(exc).strip().rstrip(".")
        raise BackendError(
            f"onnxruntime {ort.__version__} could not load '{path}': {reason}. Re-export the model with this toolkit; "
            "an export made with --attention onnxruntime also needs a build with the com.microsoft contrib ops."
        ) from exc
    if staging is not None and staging.is_file():
        os.replace(staging, cached)  # whole files only: a concurrent load reads the old one or this one
    if spec is not None:
        from holitom.export.onnx_io import io_mismatches

        if spec.name == C.DECODE_STEP and any(i.name == C.KV_LENGTHS for i in session.get_inputs()):
            spec = C.kv_buffer_decode_spec(spec)  # an --attention onnxruntime decode step (its runner keeps the plain contract)

        problems = io_mismatches(_session_io(session), spec)
        if problems:
            raise ManifestError(
                f"'{path}' is not a '{spec.name}' graph of this export: " + "; ".join(problems) + ". The file was replaced "
                "or the export is damaged; export the model again with `holitom export`."
            )
    return session


def decode_step_output_shapes(dims: C.ModelDims, feed: dict) -> dict[str, tuple[int, ...]]:
    """The decode step's output shapes from its inputs: one position more than each past KV, and the logits."""
    shapes = {"logits": (1, dims.vocab_size)}
    for i in range(dims.num_layers):
        for past, present in ((C.past_key_name(i), C.present_key_name(i)), (C.past_value_name(i), C.present_value_name(i))):
            b, h, length, d = feed[past].shape  # (B, Hkv, S, hd)
            shapes[present] = (b, h, length + 1, d)
    return shapes


def create_stages(source: ModelSource, config) -> StageSet:
    from holitom.export.manifest import read_manifest
    from holitom.runtime.backends.export_folder import REEXPORT_FIX, export_stage_set, select_graphs

    if not source.is_export:
        raise BackendError(
            f"the onnxruntime backend runs export folders, got the checkpoint '{source.path}'; load it with "
            "holitom.runtime.load_pipeline (or `holitom run`), which exports it first, or run `holitom export`."
        )
    folder = source.path
    manifest = read_manifest(folder, fix=REEXPORT_FIX)
    files, inner_merge = select_graphs(folder, manifest, config)
    providers = providers_for(config.device)
    specs = C.stage_specs(manifest.dims, manifest.precision)
    shapes = {C.DECODE_STEP: partial(decode_step_output_shapes, manifest.dims)} if DEFAULT_SESSION_SETTINGS.io_binding else {}
    chunks = {C.VISION: DEFAULT_SESSION_SETTINGS.vision_chunk}
    workers = {C.VISION: vision_workers(DEFAULT_SESSION_SETTINGS, providers)}
    quantized = (manifest.quantization or {}).get("graphs", {})
    settings = {stage: settings_for(quantized.get(stage)) for stage in files}
    if C.VISION in settings:
        settings[C.VISION] = vision_settings(settings[C.VISION], workers[C.VISION])
    runners = {
        stage: OnnxrtRunner(
            specs[stage],
            partial(session_from_file, folder / file, providers, specs[stage], settings[stage]),
            config.check_inputs,
            shapes.get(stage),
            chunks.get(stage, 0),
            workers.get(stage, 1),
        )
        for stage, file in files.items()
    }
    return export_stage_set("onnxruntime", folder, manifest, config, runners, inner_merge, NumpyArrays())
