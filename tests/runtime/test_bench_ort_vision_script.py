"""scripts/bench_ort_vision.py through a subprocess: both backends' vision stages on three frames, one row each (and per worker count)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = [sys.executable, str(Path(__file__).resolve().parents[2] / "scripts" / "bench_ort_vision.py")]


def test_prints_a_row_per_subject_with_ratios_and_matching_outputs(default_export):
    from holitom.host import usable_cpus

    args = ["--export", str(default_export), "--frames", "3", "--repeats", "1", "--chunks", "1,2", "--workers", "1,2,0"]
    proc = subprocess.run([*SCRIPT, *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = {}
    for line in proc.stdout.splitlines():
        m = re.fullmatch(r"(.+?)\s+(\d+\.\d) +(\d+\.\d) +(\d+\.\d\d)x / (\d+\.\d\d)x((?:  \S+ (?:ok|OVER))+)", line)
        if m:
            rows[m.group(1)] = m.group(6).split()[1::2]
    # Worker counts as resolved (0: one per usable CPU), each once; "(default)" on the backend's own layout.
    counts, default = dict.fromkeys([1, 2, usable_cpus()]), (1, usable_cpus())
    onnxruntime = {
        f"onnxruntime, {c} frame(s) per call" + (f", {w} workers" if w > 1 else "") + (" (default)" if (c, w) == default else "")
        for w in counts
        for c in (1, 2)
    }
    assert set(rows) == {"torch, features only", "torch, with scores", *onnxruntime}
    # Every subject's features (and scores) against the torch runner's, within the export validator's tolerances.
    for name, verdicts in rows.items():
        assert verdicts == (["ok"] if name == "torch, features only" else ["ok", "ok"]), (name, verdicts)


def test_refuses_bad_arguments_with_a_usage_error():
    for flag, value, message in (("--chunks", "0", "every --chunks value must be >= 1"), ("--workers", "1,-1", "every --workers value must be >= 0")):
        proc = subprocess.run([*SCRIPT, flag, value], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2
        assert message in proc.stderr.strip().splitlines()[-1]
