"""scripts/bench_kernels.py times kernels on a GPU only: elsewhere it exits 2 with one line, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_kernels.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine the script runs the benchmark")
def test_without_cuda_one_line_and_status_2():
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench_kernels: error: needs a CUDA GPU"), proc.stderr


def test_bad_argument_is_a_usage_error():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--frames", "0"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--frames" in proc.stderr
