"""Build the onnxruntime stage set from an export folder's manifest.

This backend runs export folders only; :func:`holitom.runtime.load_pipeline`
exports a checkpoint first (:mod:`holitom.export.cache`), so a backend never
calls the exporter.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from holitom import contracts as C
from holitom.errors import BackendError, ManifestError, MissingDependencyError
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
            raise MissingDependencyError("onnxruntime-gpu", "running the onnxruntime backend on CUDA")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device != "cpu":
        raise BackendError(f"device '{device}' is not supported by the onnxruntime backend; use 'cpu' or 'cuda'.")
    return ["CPUExecutionProvider"]


# onnxruntime's NodeArg.type -> the contract's dtype names.
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(bfloat16)": "bfloat16", "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(bool)": "bool"}


def _session_io(session) -> dict[str, list[tuple[str, str, tuple]]]:
    def describe(arg):
        return arg.name, _ORT_DTYPES.get(arg.type, arg.type), tuple("?" if d is None else d for d in arg.shape)

    return {"inputs": [describe(a) for a in session.get_inputs()], "outputs": [describe(a) for a in session.get_outputs()]}


def session_from_file(path: Path, providers: list[str], spec: C.StageSpec | None = None):
    """Create an InferenceSession (called lazily by the runner's activate); with ``spec``, check its I/O against the contract."""
    ort = _import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own pybind exception types (Fail, InvalidGraph, ...)
        reason = str(exc).strip().rstrip(".")
        raise BackendError(
            f"onnxruntime {ort.__version__} could not load '{path}': {reason}. Re-export the model with this toolkit; "
            "an export made with --attention onnxruntime also needs a build with the com.microsoft contrib ops."
        ) from exc
    if spec is not None:
        from holitom.export.onnx_io import io_mismatches

        problems = io_mismatches(_session_io(session), spec)
        if problems:
            raise ManifestError(
                f"'{path}' is not a '{spec.name}' graph of this export: " + "; ".join(problems) + ". The file was replaced "
                "or the export is damaged; export the model again with `holitom export`."
            )
    return session



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
    runners = {
        stage: OnnxrtRunner(specs[stage], partial(session_from_file, folder / file, providers, specs[stage]), config.check_inputs)
        for stage, file in files.items()
    }
    return export_stage_set("onnxruntime", folder, manifest, config, runners, inner_merge, NumpyArrays())
