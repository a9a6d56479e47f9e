"""The repository's scripts/ files as modules, for the tests that call their functions."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str, register: bool = False) -> ModuleType:
    """``scripts/<name>.py`` executed as the module ``name``; with ``register`` also in ``sys.modules`` (as an import
    would put it: worker processes then find its functions by name), for the caller to remove."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    if register:
        sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
