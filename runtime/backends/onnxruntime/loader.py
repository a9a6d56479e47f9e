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


def create_stages(source: ModelSource, config) -> StageSet:
    from holitom.export.manifest import inner_merge_key, read_manifest
    from holitom.merge import MergeConfig
    from holitom.video.preprocess import VideoPreprocessor

    if not source.is_export:
        raise BackendError(
            f"the onnxruntime backend runs export folders, got the checkpoint '{source.path}'; load it with "
            "holitom.runtime.load_pipeline (or `holitom run`), which exports it first, or run `holitom export`."
        )
    folder = source.path
    manifest = read_manifest(folder)
    if config.dtype != manifest.precision:
        raise BackendError(
            f"the export in '{folder}' has precision {manifest.precision}, but dtype {config.dtype} was asked; "
            f"pass --dtype {manifest.precision} or re-export."
        )
    if config.preset not in manifest.outer_merge:
        raise ManifestError(
            f"the export in '{folder}' has outer-merge graphs for presets {sorted(manifest.outer_merge)}, not "
            f"'{config.preset}'; re-export with `holitom export --preset {config.preset}`."
        )
    merge = MergeConfig.from_dict(manifest.outer_merge[config.preset]["merge"])
    if not config.inner_merge:
        merge = merge.replace(inner=None)
    dims = manifest.dims
    if merge.inner is not None and merge.inner.resolve_layer(dims.num_layers) != dims.inner_layer:
        raise ManifestError(
            f"preset '{config.preset}' merges at layer {merge.inner.resolve_layer(dims.num_layers)} but the export "
            f"splits the decoder at layer {dims.inner_layer}; re-export with this preset."
        )

    providers = providers_for(config.device)
    specs = C.stage_specs(dims, manifest.precision)

    def runner(stage: str, file: str) -> OnnxrtRunner:
        return OnnxrtRunner(specs[stage], partial(session_from_file, folder / file, providers), config.check_inputs)

    runners = {stage: runner(stage, entry.file) for stage, entry in manifest.graphs.items()}
    runners[C.OUTER_MERGE] = runner(C.OUTER_MERGE, manifest.outer_merge[config.preset]["graph"]["file"])
    if merge.inner is not None:
        key = inner_merge_key(merge.inner.ratio, merge.inner.mode)
        if key not in manifest.inner_merge:
            raise ManifestError(f"the export in '{folder}' has no inner-merge graph for {key}; re-export with this preset.")
        runners[C.INNER_MERGE] = runner(C.INNER_MERGE, manifest.inner_merge[key]["graph"]["file"])

    from transformers import AutoTokenizer

    return StageSet(
        backend="onnxruntime",
        preset=config.preset,
        runners=runners,
        dims=dims,
        tokenizer=AutoTokenizer.from_pretrained(folder),
        preprocessor=VideoPreprocessor.from_pretrained(folder),
        video_token_id=manifest.video_token_id,
        stop_token_ids=tuple(manifest.stop_token_ids),
        inner_merge_enabled=merge.inner is not None,
    )
