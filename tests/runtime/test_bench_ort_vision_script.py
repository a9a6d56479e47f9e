"""scripts/bench_ort_vision.py through a subprocess: both backends' vision stages on two frames, one row each."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = [sys.executable, str(Path(__file__).resolve().parents[2] / "scripts" / "bench_ort_vision.py")]


def test_prints_a_row_per_subject_with_ratios_and_matching_outputs(default_export):
    args = ["--export", str(default_export), "--frames", "2", "--repeats", "1", "--chunks", "1,2"]
    proc = subprocess.run([*SCRIPT, *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = {}
    for line in proc.stdout.splitlines():
        m = re.fullmatch(r"(.+?)\s+(\d+\.\d) +(\d+\.\d) +(\d+\.\d\d)x / (\d+\.\d\d)x((?:  \S+ (?:ok|OVER))+)", line)
        if m:
            rows[m.group(1)] = m.group(6).split()[1::2]
    assert set(rows) == {"torch, features only", "torch, with scores", "onnxruntime, 1 frame(s) per call (default)", "onnxruntime, 2 frame(s) per call"}
    # Every subject's features (and scores) against the torch runner's, within the export validator's tolerances.
    for name, verdicts in rows.items():
        assert verdicts == (["ok"] if name == "torch, features only" else ["ok", "ok"]), (name, verdicts)


def test_refuses_bad_arguments_with_a_usage_error():
    proc = subprocess.run([*SCRIPT, "--chunks", "0"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "every --chunks value must be >= 1" in proc.stderr.strip().splitlines()[-1]
