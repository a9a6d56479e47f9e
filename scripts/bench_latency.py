#!/usr/bin/env python
"""Latency benchmark of HoliTom against the transformers baseline (the script behind ``holitom bench``).

For a model ('default', an architecture preset with random weights, or a
llava-hf checkpoint) and a video (generated when none is given), measures in
one run, after warm-up, medians over repeats: TTFT split into video decode /
vision / merge / prefill, decode tokens/s, peak memory, visual tokens after
each stage, and prefill FLOPs (the paper's formula and counted matmuls), for
the transformers baseline and our torch and onnxruntime paths (vanilla,
HoliTom outer merge only, full HoliTom) at each retain ratio. Prints a table,
or JSON with --json; --out DIR writes bench.json and two PNG plots.

Usage::

    python scripts/bench_latency.py --frames 8 --ratios 0.1 --repeats 3
    python scripts/bench_latency.py --model llava-ov-0.5b --vision-layers 3 --text-layers 3 --out bench-out
    python scripts/bench_latency.py --help
"""

from __future__ import annotations

import sys

from holitom.bench.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="bench_latency.py"))
