"""scripts/bench_key_scores.py through a subprocess: it runs on a tiny shape and prints the ratio line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = [sys.executable, str(Path(__file__).resolve().parents[2] / "scripts" / "bench_key_scores.py")]


def test_prints_the_last_over_ordinary_ratio_and_the_verdict():
    proc = subprocess.run([*SCRIPT, "--frames", "1", "--patches", "9", "--warmup", "0", "--repeats", "1", "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"last / ordinary layer: \d+\.\d\dx \(median; min \d+\.\d\dx\); target <= 1\.3x: (met|NOT met)", last), last


def test_refuses_bad_arguments_with_a_usage_error():
    proc = subprocess.run([*SCRIPT, "--dtype", "int8"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("bench_key_scores.py: error: --dtype must be one of")
