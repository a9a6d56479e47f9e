"""Benchmarks: TTFT / decode / memory / FLOPs of HoliTom against the transformers baseline and competing methods.

    from holitom.bench import BenchConfig, run_bench
    from holitom.bench.report import print_table, write_outputs

    result = run_bench(BenchConfig(model="llava-ov-0.5b", vision_layers=3, text_layers=3, ratios=(0.1,)))
    print_table(result)
    write_outputs(result, "bench-out")   # bench.json + ttft_breakdown.png + ttft_flops_vs_tokens.png

Modules: :mod:`.config` (settings, methods, rows), :mod:`.archs` (architecture
presets and their random-weight checkpoints), :mod:`.subjects` (what is timed),
:mod:`.memory` (per-row peak memory in a child process), :mod:`.runner` (the
run and the result object), :mod:`.report` (table, JSON, plots), :mod:`.cli`.
``import holitom.bench`` imports no torch.
"""

from __future__ import annotations

from holitom.bench.config import BenchConfig

__all__ = ["BenchConfig", "run_bench"]


def __getattr__(name):
    # run_bench imports torch on use, not on `import holitom.bench`.
    if name == "run_bench":
        from holitom.bench.runner import run_bench

        return run_bench
    raise AttributeError(f"module 'holitom.bench' has no attribute '{name}'")
