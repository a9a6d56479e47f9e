"""Build the onnxruntime stage set from an export folder's manifest.

A checkpoint (or 'default') passed to this backend is exported first into a
cache folder keyed by the checkpoint's files, the toolkit version, the source of
the code that writes the graphs and the torch / onnx versions, so
`holitom run --backend onnxruntime --model default` works in one step and a
changed exporter (an editable install keeps its version) never serves stale graphs.
Those exports write the decoder's prefill attention as onnxruntime's fused
GroupQueryAttention op (``OWN_EXPORT_ATTENTION``, see holitom.models.export_attention).
"""

from __future__ import annotations

import hashlib
import os
from functools import partial
from pathlib import Path

from holitom import contracts as C
from holitom.errors import BackendError, MissingDependencyError
from holitom.runtime.backends.onnxruntime.runner import OnnxrtRunner
from holitom.runtime.sources import ModelSource
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


def session_from_file(path: Path, providers: list[str]):
    """Create an InferenceSession (called lazily by the runner's activate)."""
    ort = _import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own pybind exception types (Fail, InvalidGraph, ...)
        reason = str(exc).strip().rstrip(".")
        raise BackendError(
            f"onnxruntime {ort.__version__} could not load '{path}': {reason}. Re-export the model with this toolkit; "
            "an export made with --attention onnxruntime also needs a build with the com.microsoft contrib ops."
        ) from exc


def cache_root() -> Path:
    return Path(os.environ.get("HOLITOM_CACHE", Path.home() / ".cache" / "holitom"))


# The backend's own exports run only here, so they take onnxruntime's fused attention op.
OWN_EXPORT_ATTENTION = "onnxruntime"

# Packages whose source decides what the exported graphs hold.
_GRAPH_SOURCES = ("holitom.models", "holitom.merge", "holitom.export", "holitom.plugins_trt")


def _graph_code_digest() -> str:
    """sha256 over the graph-writing packages' ``.py`` files and the torch / onnx versions."""
    import importlib

    import onnx
    import torch

    h = hashlib.sha256(f"torch {torch.__version__} onnx {onnx.__version__}".encode())
    for name in _GRAPH_SOURCES:
        package = Path(importlib.import_module(name).__file__).parent
        for f in sorted(package.rglob("*.py")):
            h.update(f"{name}/{f.relative_to(package).as_posix()}".encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def export_cache_dir(checkpoint: Path) -> Path:
    """A folder name that changes when the checkpoint's files, the toolkit version or the exporter's code change."""
    from holitom import __version__

    h = hashlib.sha256(__version__.encode())
    h.update(_graph_code_digest().encode())
    h.update(f"attention={OWN_EXPORT_ATTENTION}".encode())
    for f in sorted(checkpoint.iterdir()):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    h.update(str(checkpoint.resolve()).encode())
    return cache_root() / "exports" / f"{checkpoint.name}-{h.hexdigest()[:16]}"


def ensure_export(source: ModelSource) -> Path:
    if source.is_export:
        return source.path
    out = export_cache_dir(source.path)
    if not (out / "manifest.json").is_file():
        from holitom.export import ExportConfig, export_model

        export_model(str(source.path), out, ExportConfig(force=True, attention=OWN_EXPORT_ATTENTION))
    return out


def create_stages(source: ModelSource, config) -> StageSet:
    from holitom.export.manifest import read_manifest
    from holitom.runtime.backends.export_folder import export_stage_set, select_graphs

    folder = ensure_export(source)
    manifest = read_manifest(folder)
    files, inner_merge = select_graphs(folder, manifest, config)
    providers = providers_for(config.device)
    specs = C.stage_specs(manifest.dims, manifest.precision)
    runners = {
        stage: OnnxrtRunner(specs[stage], partial(session_from_file, folder / file, providers), config.check_inputs)
        for stage, file in files.items()
    }
    return export_stage_set("onnxruntime", folder, manifest, config, runners, inner_merge)
