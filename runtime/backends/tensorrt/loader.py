"""Build the tensorrt stage set from an export folder whose manifest records engines for this machine.

Checks, in this order, so the first message names the first thing to fix:
tensorrt and polygraphy importable, the folder is an export with engines, the
engines were built for this TensorRT version and GPU, every engine file is whole.
"""

from __future__ import annotations

import torch

from holitom import contracts as C
from holitom.errors import BackendError, ManifestError
from holitom.runtime.arrays import TorchArrays
from holitom.runtime.backends.tensorrt.runner import TensorrtRunner
from holitom.sources import ModelSource
from holitom.runtime.stages import StageSet

PURPOSE = "the tensorrt backend"


def create_stages(source: ModelSource, config) -> StageSet:
    from holitom.export.manifest import read_manifest
    from holitom.plugins_trt.tensorrt_env import current_target, require_polygraphy, require_tensorrt
    from holitom.runtime.backends.export_folder import export_stage_set, select_graphs

    require_tensorrt(PURPOSE)
    require_polygraphy(PURPOSE)
    if not source.is_export:
        raise BackendError(
            f"the tensorrt backend runs engines of an export folder, not the checkpoint '{source.path}'; run "
            "`holitom export --model CHECKPOINT --out DIR` and `holitom build-engines DIR` first, then pass --model DIR."
        )
    folder = source.path
    manifest = read_manifest(folder)
    if manifest.engines is None:
        raise BackendError(f"the export in '{folder}' has no TensorRT engines; build them with `holitom build-engines {folder}`.")
    device = torch.device(config.device)
    if device.type != "cuda":
        raise BackendError(f"the tensorrt backend runs on a CUDA device, not '{config.device}'; pass --device cuda.")
    manifest.engines.check_target(current_target(PURPOSE, device.index or 0), folder)
    if manifest.engines.plugins == "jit":
        from holitom.plugins_trt.trt_register import register_plugins

        register_plugins("jit")  # these engines call back into the plugins' Python implementation
    files, inner_merge = select_graphs(folder, manifest, config)
    specs = C.stage_specs(manifest.dims, manifest.precision)
    runners = {stage: TensorrtRunner(specs[stage], _engine_loader(folder, manifest, file), device, config.check_inputs) for stage, file in files.items()}
    return export_stage_set("tensorrt", folder, manifest, config, runners, inner_merge, TorchArrays(device))


def _engine_loader(folder, manifest, onnx_file: str):
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes

    entry = manifest.engines.files.get(onnx_file)
    if entry is None:
        raise ManifestError(f"the export in '{folder}' has no engine for '{onnx_file}'; rebuild with `holitom build-engines {folder} --force`.")
    path = folder / entry.file
    if not path.is_file() or path.stat().st_size != entry.size:
        raise ManifestError(
            f"engine file '{path}' is missing or has another size than the manifest records ({entry.size} bytes); "
            f"rebuild with `holitom build-engines {folder} --force`."
        )
    return EngineFromBytes(BytesFromPath(str(path)))
