"""Without tensorrt: everything else works, TensorRT commands say in one line what is missing (exit 2)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from holitom.cli import main

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")


@pytest.mark.parametrize(
    "argv",
    [
        ["build-engines", "{export}"],
        ["compare", "{export}"],
        ["run", "--model", "{export}", "--backend", "tensorrt", "--device", "cuda", "--video", "clip.mp4", "--prompt", "hi"],
    ],
)
def test_tensorrt_commands_name_the_missing_package(default_export, capsys, argv):
    rc = main([a.format(export=default_export) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1
    assert "optional package 'tensorrt'" in err and "pip install" in err


def test_backend_and_builder_modules_import_without_tensorrt():
    code = (
        "import sys, holitom, holitom.export.engines, holitom.export.trt_ops, holitom.plugins_trt.trt_spec, "
        "holitom.runtime.backends.tensorrt, holitom.runtime.backends.tensorrt.compare\n"
        "from holitom.runtime.registry import backend_names\n"
        "assert 'tensorrt' in backend_names()\n"
        "print([m for m in ('tensorrt', 'polygraphy') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_registration_module_needs_tensorrt():
    with pytest.raises(ImportError):
        import holitom.plugins_trt.trt_register  # noqa: F401
