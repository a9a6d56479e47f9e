"""scripts/bench_merge.py through a subprocess: it runs on a tiny shape, prints the targets line
for the issue's shape, and refuses bad arguments with one usage error (exit 2), no traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = [sys.executable, str(Path(__file__).resolve().parents[2] / "scripts" / "bench_merge.py")]
QUICK = ["--repeats", "1", "--warmup", "0", "--visual", "12", "--text", "4"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SCRIPT, *args], capture_output=True, text=True, timeout=300)


def test_tiny_run_prints_every_stage():
    proc = run("--frames", "6", "--grid", "2", "3", "--dims", "8", "16", "--scene-len", "3", *QUICK)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("device=cpu ") and "OMP_WAIT_POLICY=" in lines[0]
    outer = [line for line in lines if line.startswith("outer merge F=6 P=6 ")]
    assert [re.search(r"D=(\d+)", line).group(1) for line in outer] == ["8", "16"]
    for line in outer:
        tokens = re.search(r"36 -> (\d+) tokens \+ (\d+) newline", line)
        assert tokens and 1 <= int(tokens.group(1)) < 36 and tokens.group(2) == "1", line
    assert re.search(r"^inner merge L_v=12 D=16 R=0\.5 .* 12 -> 6 visual tokens$", proc.stdout, re.M)
    # The exported graphs on onnxruntime, beside the torch times, at every size.
    for dim in (8, 16):
        assert re.search(rf"^onnxruntime outer_merge graph D={dim}: [\d.]+ ms .*\(torch outer_merge [\d.]+ ms\)$", proc.stdout, re.M)
    assert re.search(r"^onnxruntime inner_merge graph L_v=12 D=16: [\d.]+ ms .*\(torch plan \+ apply [\d.]+ ms\)$", proc.stdout, re.M)
    assert "target:" not in proc.stdout  # only for the issue's shape (F=32, P=196, D=3584)


def test_issue_shape_prints_the_target_verdict():
    proc = run("--dims", "3584", "--no-onnxruntime", *QUICK)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^target: outer merge F=32 P=196 D=3584 <= 20 ms on cpu: [\d.]+ ms, (met|MISSED)$", proc.stdout, re.M)


@pytest.mark.parametrize(
    "args,pattern",
    [
        (["--dims", "0"], r"argument --dims: expected an integer >= 1, got 0"),
        (["--warmup", "-1"], r"argument --warmup: expected an integer >= 0, got -1"),
        (["--static-share", "1.5"], r"argument --static-share: expected a number in \[0, 1\], got 1.5"),
        (["--preset", "r99"], r"unknown merge preset 'r99'"),
        (["--preset", "none"], r"--preset none merges nothing"),
        (["--preset", "pool-r10"], r"--preset pool-r10 is a competing method"),
        (["--device", "tpu"], r"--device must be cpu or cuda, got 'tpu'"),
    ],
)
def test_bad_arguments_are_one_usage_error(args, pattern):
    proc = run(*args)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("bench_merge.py: error: ") and re.search(pattern, last), proc.stderr
