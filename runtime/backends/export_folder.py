"""What every backend that runs an export folder shares: picking the preset's graphs, assembling the stage set.

The onnxruntime and tensorrt backends differ only in how they run one graph file;
which files serve which stage, and the checks that the folder fits the asked
preset and dtype, are written once here.
"""

from __future__ import annotations

from pathlib import Path

from holitom import contracts as C
from holitom.errors import BackendError, ManifestError
from holitom.runtime.stages import StageSet


def select_graphs(folder: Path, manifest, config) -> tuple[dict[str, str], bool]:
    """``({stage: graph file}, inner merge enabled)`` for ``config.preset``; raises if the export lacks them."""
    from holitom.export.manifest import inner_merge_key
    from holitom.merge import MergeConfig

    if config.dtype != manifest.precision:
        raise BackendError(
            f"the export in '{folder}' has precision {manifest.precision}, but dtype {config.dtype} was asked; "
            f"pass --dtype {manifest.precision} or re-export."
        )
    reexport = (
        f"`holitom export --model {manifest.source.get('model', 'CHECKPOINT')} --out NEW_FOLDER --preset {config.preset}` "
        f"(or run the checkpoint itself with --backend onnxruntime, which exports what it needs)"
    )
    if config.preset not in manifest.outer_merge:
        raise ManifestError(
            f"the export in '{folder}' has outer-merge graphs for presets {sorted(manifest.outer_merge)}, not "
            f"'{config.preset}'; pass one of those with --preset, or export the preset with {reexport}."
        )
    merge = MergeConfig.from_dict(manifest.outer_merge[config.preset]["merge"])
    if not config.inner_merge:
        merge = merge.replace(inner=None)
    dims = manifest.dims
    if merge.inner is not None and merge.inner.resolve_layer(dims.num_layers) != dims.inner_layer:
        raise ManifestError(
            f"preset '{config.preset}' merges at layer {merge.inner.resolve_layer(dims.num_layers)} but the export "
            f"splits the decoder at layer {dims.inner_layer}; export the preset with {reexport}."
        )
    files = {stage: entry.file for stage, entry in manifest.graphs.items()}
    files[C.OUTER_MERGE] = manifest.outer_merge[config.preset]["graph"]["file"]
    if merge.inner is not None:
        key = inner_merge_key(merge.inner.ratio, merge.inner.mode)
        if key not in manifest.inner_merge:
            raise ManifestError(f"the export in '{folder}' has no inner-merge graph for {key}; export the preset with {reexport}.")
        files[C.INNER_MERGE] = manifest.inner_merge[key]["graph"]["file"]
    return files, merge.inner is not None


# Advice for a damaged export folder that the user made.
REEXPORT_FIX = "export the model again with `holitom export --model CHECKPOINT --out NEW_FOLDER`"


def export_stage_set(backend: str, folder: Path, manifest, config, runners: dict, inner_merge: bool, arrays) -> StageSet:
    """The stage set over an export folder's runners, tokenizer and preprocessor (both without torch or transformers).

    ``arrays``: the runners' array type (:mod:`holitom.runtime.arrays`); the preprocessor gives numpy
    ``pixel_values`` and the pipeline moves them there.
    """
    from holitom.chat_tokenizer import ChatTokenizer
    from holitom.video.preprocess_np import NumpyVideoPreprocessor

    return StageSet(
        backend=backend,
        preset=config.preset,
        runners=runners,
        dims=manifest.dims,
        tokenizer=ChatTokenizer.from_folder(folder, ManifestError, REEXPORT_FIX),
        preprocessor=NumpyVideoPreprocessor.from_pretrained(folder),
        video_token_id=manifest.video_token_id,
        stop_token_ids=tuple(manifest.stop_token_ids),
        inner_merge_enabled=inner_merge,
        context_length=manifest.context_length,
        arrays=arrays,
    )
