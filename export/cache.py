"""The toolkit's own exports of checkpoints, cached for the onnxruntime backend.

A checkpoint (or 'default') that is to run on onnxruntime is exported once into
a cache folder keyed by the checkpoint's files, the toolkit version, the source
of the code that writes the graphs and the torch / onnx versions, so
`holitom run --backend onnxruntime --model default` works in one step and a
changed exporter (an editable install keeps its version) never serves stale
graphs. :func:`holitom.runtime.load_pipeline` decides when to call
:func:`ensure_export`; no backend calls the exporter. The toolkit owns this
cache: a damaged entry is rebuilt, with one warning line, never reported to the
user as something to fix.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import warnings
from pathlib import Path

from holitom.errors import ManifestError
from holitom.paths import cache_root
from holitom.sources import MANIFEST_NAME, ModelSource

# These exports are only run by the onnxruntime backend, so they take onnxruntime's fused attention op.
OWN_EXPORT_ATTENTION = "onnxruntime"

# Packages whose source decides what the exported graphs hold.
_GRAPH_SOURCES = ("holitom.models", "holitom.merge", "holitom.export", "holitom.plugins_trt")

# Advice in the messages about a damaged cache entry: the toolkit owns its cache and mends it.
_REBUILDING = "rebuilding this cached export"


class CacheRebuildWarning(UserWarning):
    """A damaged entry of the toolkit's own export cache was found and is being rebuilt."""


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


def ensure_export(source: ModelSource, validator=None) -> Path:
    """The export folder for ``source``: itself, or the checkpoint's cached export, built (or rebuilt) on demand.

    A cache entry that fails its checks (a missing, truncated or altered file, a
    half-deleted folder) is rebuilt with one :class:`CacheRebuildWarning` line.
    Concurrent processes may fill the same entry: the first complete copy wins.
    ``validator``: as for :func:`holitom.export.export_model`.
    """
    from holitom.export.manifest import read_manifest

    if source.is_export:
        return source.path
    out = export_cache_dir(source.path)
    if (out / MANIFEST_NAME).is_file():
        try:
            read_manifest(out, fix=_REBUILDING)
            return out
        except ManifestError as exc:
            warnings.warn(f"the cached export of '{source.path}' is damaged: {exc}", CacheRebuildWarning, stacklevel=2)
            _discard(out)
    elif out.exists():
        warnings.warn(f"the cached export '{out}' is incomplete (no {MANIFEST_NAME}); {_REBUILDING}.", CacheRebuildWarning, stacklevel=2)
        _discard(out)
    from holitom.export import ExportConfig, export_model

    export_model(str(source.path), out, ExportConfig(keep_existing=True, attention=OWN_EXPORT_ATTENTION), validator=validator)
    return out


def _discard(folder: Path) -> None:
    """Take a damaged cache entry out of view at once (a rename), then delete it."""
    aside = folder.with_name(f".{folder.name}.damaged-{secrets.token_hex(4)}")
    try:
        folder.rename(aside)
    except FileNotFoundError:  # another process discarded it first
        return
    shutil.rmtree(aside, ignore_errors=True)


__all__ = ["CacheRebuildWarning", "OWN_EXPORT_ATTENTION", "ensure_export", "export_cache_dir"]
