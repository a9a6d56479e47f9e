"""Run the kernel tests (tests/plugins_trt/interpreted) in a process started with TRITON_INTERPRET=1.

See that folder's conftest for why they need a process of their own. The child
runs with this interpreter and the repository root as working directory; its
output is shown when it fails.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_kernels_match_the_reference_under_the_triton_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path("tests", "plugins_trt", "interpreted"))]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    report = (proc.stdout + proc.stderr)[-8000:]
    assert proc.returncode == 0, f"`TRITON_INTERPRET=1 {' '.join(cmd[1:])}` failed:\n{report}"
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, report  # every kernel test ran
