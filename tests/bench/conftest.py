"""Fixtures for the benchmark tests: a private cache folder and ONE tiny benchmark run shared by the tests.

The run is the CI-sized benchmark: the embedded default model, 2 frames, one
warm-up and one repeat, r = 0.10, the transformers / torch / onnxruntime rows.
Most of its time is the one-off ONNX export of the default model.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TINY = dict(
    model="default",
    frames=2,
    repeats=1,
    warmup=1,
    ratios=(0.1,),
    methods=("vanilla", "holitom"),
    backends=("transformers", "torch", "onnxruntime"),
    decode_tokens=3,
    # One torch thread: on a shared two-core machine more threads spin against other processes.
    threads=1,
)


@pytest.fixture(scope="session")
def bench_cache(tmp_path_factory) -> Path:
    """HOLITOM_CACHE for this session (materialised archs and exports), inherited by subprocesses."""
    path = tmp_path_factory.mktemp("holitom_cache")
    old = os.environ.get("HOLITOM_CACHE")
    os.environ["HOLITOM_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("HOLITOM_CACHE", None)
    else:
        os.environ["HOLITOM_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_run(bench_cache, tmp_path_factory):
    """(result, out_dir) of the CI-sized benchmark, with bench.json and the PNGs written."""
    from holitom.bench import BenchConfig, run_bench
    from holitom.bench.report import write_outputs

    result = run_bench(BenchConfig(**TINY), log=None)
    out = tmp_path_factory.mktemp("bench_out")
    write_outputs(result, out)
    return result, out
