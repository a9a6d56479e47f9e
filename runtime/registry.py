"""Backends are registered by name; the CLI and the Python API look them up here.

A backend is a factory ``(source, runtime_config) -> StageSet`` plus what it
runs: checkpoints or export folders (:func:`holitom.runtime.load_pipeline`
exports a checkpoint for a backend that runs exports; backends never call the
exporter). Registration is lazy: the factory's module (and its heavy imports:
onnxruntime, tensorrt) is imported only when that backend is used.
"""

from __future__ import annotations

import importlib
from typing import Callable

from holitom.errors import BackendError

# name -> "module:attribute" of the factory; imported on first use.
_BACKENDS: dict[str, str] = {
    "torch": "holitom.runtime.backends.torch:create_stages",
    "onnxruntime": "holitom.runtime.backends.onnxruntime:create_stages",
    "tensorrt": "holitom.runtime.backends.tensorrt:create_stages",
}
# Backends that run export folders (the others run checkpoints).
_RUNS_EXPORTS: set[str] = {"onnxruntime"}
# The package extra a backend needs beyond the edge install (its runners exchange torch tensors).
_EXTRAS: dict[str, str] = {"torch": "export", "tensorrt": "export"}


def register_backend(name: str, target: str, *, runs_exports: bool = False) -> None:
    """Register a backend factory by import path ``"package.module:function"``."""
    _BACKENDS[name] = target
    if runs_exports:
        _RUNS_EXPORTS.add(name)
    else:
        _RUNS_EXPORTS.discard(name)


def runs_exports(name: str) -> bool:
    """Whether backend ``name`` runs export folders (a checkpoint is exported for it first)."""
    return name in _RUNS_EXPORTS


def backend_names() -> list[str]:
    return sorted(_BACKENDS)


def get_backend(name: str) -> Callable:
    if name not in _BACKENDS:
        raise BackendError(f"unknown backend '{name}'; choose one of {backend_names()}.")
    if name in _EXTRAS:
        from holitom.errors import require_extra

        require_extra(_EXTRAS[name], f"the {name} backend")
    module_name, attr = _BACKENDS[name].split(":")
    return getattr(importlib.import_module(module_name), attr)
