"""`holitom bench` and scripts/bench_latency.py through a subprocess: bad arguments are one line on stderr, exit 2."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOLITOM_BENCH = [sys.executable, "-m", "holitom.cli", "bench"]
SCRIPT = [sys.executable, str(ROOT / "scripts" / "bench_latency.py")]


def run(cmd, *args):
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=300)


def assert_one_line_error(proc, prefix, pattern):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(prefix), lines[0]
    assert re.search(pattern, lines[0]), lines[0]
    assert proc.stdout == ""


@pytest.mark.parametrize(
    "args,pattern",
    [
        (["--model", "llava-ov-99b"], r"'llava-ov-99b' is neither an architecture preset"),
        (["--repeats", "0"], r"repeats must be an integer >= 1, got 0"),
        (["--warmup", "-1"], r"warmup must be an integer >= 0, got -1"),
        (["--backends", "torch,tensorrtx"], r"unknown backends \['tensorrtx'\]"),
        (["--methods", "holitom,tome"], r"unknown methods \['tome'\]"),
        (["--ratios", "0.1,abc"], r"--ratios must be numbers"),
        (["--model", "llava-ov-0.5b", "--text-layers", "1"], r"--text-layers must be an integer >= 2"),
        (["--model", "{checkpoint}", "--vision-layers", "2"], r"checkpoint folder, whose geometry is fixed"),
    ],
)
def test_holitom_bench_refuses_bad_arguments(args, pattern):
    from holitom.default_model import default_model_dir

    args = [str(default_model_dir()) if a == "{checkpoint}" else a for a in args]
    assert_one_line_error(run(HOLITOM_BENCH, *args), "holitom bench: error:", pattern)


def test_a_missing_gpu_is_one_line_before_any_work():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    proc = run(HOLITOM_BENCH, "--model", "default", "--device", "cuda")
    assert_one_line_error(proc, "holitom bench: error:", r"device 'cuda' was asked but torch sees no CUDA device; use --device cpu")


def test_script_refuses_bad_arguments_the_same_way():
    assert_one_line_error(run(SCRIPT, "--repeats", "0"), "bench_latency.py: error:", r"repeats must be an integer >= 1")
    assert_one_line_error(run(SCRIPT, "--backends", "cuda"), "bench_latency.py: error:", r"unknown backends \['cuda'\]")


def test_help_lists_the_options():
    for cmd in (HOLITOM_BENCH, SCRIPT):
        proc = run(cmd, "--help")
        assert proc.returncode == 0, proc.stderr
        for flag in ("--ratios", "--backends", "--methods", "--image-size", "--vision-layers", "--text-layers", "--out", "--json"):
            assert flag in proc.stdout, flag


def test_cli_json_run(bench_cache, tmp_path):
    """The smallest full CLI run (torch rows only, no memory probes): stdout is one JSON object."""
    import json

    proc = run(
        HOLITOM_BENCH, "--frames", 1, "--repeats", 1, "--warmup", 0, "--ratios", "0.1", "--backends", "transformers,torch",
        "--methods", "holitom", "--decode-tokens", 2, "--threads", 1, "--no-memory", "--no-flops", "--json", "--quiet",
        "--out", tmp_path / "out",
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [r["id"] for r in result["rows"]] == ["transformers/vanilla", "torch/holitom@r10"]
    assert all(r["memory"] is None and r["flops"]["counted"] is None for r in result["rows"])
    from holitom.bench.floor import NO_FLOPS_REASON

    assert all(r["floor"]["x_floor"] is None and r["floor"]["reason"] == NO_FLOPS_REASON for r in result["rows"])
    assert result["matmul_rate"]["flops_per_s"] > 0  # measured all the same: the header shows it
    assert result["rows"][1]["flops"]["paper_formula"] < result["rows"][0]["flops"]["paper_formula"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bench.json", "ttft_breakdown.png", "ttft_flops_vs_tokens.png"]
