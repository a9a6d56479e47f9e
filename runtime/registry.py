"""Backends are registered by name; the CLI and the Python API look them up here.

A backend is a factory ``(source, runtime_config) -> StageSet``. Registration is
lazy: the factory's module (and its heavy imports: onnxruntime, tensorrt) is
imported only when that backend is used.
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


def register_backend(name: str, target: str) -> None:
    """Register a backend factory by import path ``"package.module:function"``."""
    _BACKENDS[name] = target


def backend_names() -> list[str]:
    return sorted(_BACKENDS)


def get_backend(name: str) -> Callable:
    if name not in _BACKENDS:
        raise BackendError(f"unknown backend '{name}'; choose one of {backend_names()}.")
    module_name, attr = _BACKENDS[name].split(":")
    return getattr(importlib.import_module(module_name), attr)
