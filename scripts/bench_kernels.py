#!/usr/bin/env python
"""Benchmark of the Triton merge kernels against the torch reference on a CUDA GPU (a benchmark, not a test).

Prints median (and min) wall-clock times over ``--repeats`` runs after
``--warmup`` runs, each the kernels' time and the torch reference's on the same
GPU and inputs, and their ratio (reference / kernels):

- ``TemporalSegment`` (the op in one launch: similarity, table, device DP, static
  mask) and where the DP runs: that launch against the torch path's similarity and
  table kernels, copying the table to the host and running the DP there;
- ``DensityPeakMerge`` on the static groups of the synthetic video;
- the outer merge (stages I + II: ``holitom.merge.outer_merge``) with the
  kernels (the default on CUDA) and with the torch code (``use_kernels(False)``),
  at F frames x P positions x D (default 32 x 196 x 3584, the issue's shape);
- the inner merge (plan + apply) at ``--visual`` tokens (default 1000), with the
  kernels (``use_kernels()``: on CUDA the inner merge runs the torch code by
  default, ``holitom.merge._device.KERNELS_ON_CUDA``) and with the torch code.

Last, the targets of issue 14 on an H100 / H200: outer merge <= 2 ms, inner
merge <= 0.5 ms. Inputs are the synthetic videos of ``scripts/bench_merge.py``.
Without CUDA it exits with one line (status 2); the kernels are checked on the
CPU by ``tests/plugins_trt`` (Triton's interpreter).

Usage::

    python scripts/bench_kernels.py
    python scripts/bench_kernels.py --dtype float32 --repeats 50
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_merge import fmt, non_negative_int, positive_int, share, synthetic_video, timed_ms  # noqa: E402

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
OUTER_TARGET_MS = 2.0  # issue 14, H100 / H200, F=32 P=196 D=3584
INNER_TARGET_MS = 0.5  # issue 14, 1000 visual tokens


def row(name: str, kernel: tuple[float, float], reference: tuple[float, float]) -> str:
    return f"{name}: kernels {fmt(kernel)} | torch {fmt(reference)} | torch / kernels {reference[0] / kernel[0]:.1f}x"


def profile_top_ops(calls: dict, rows: int = 12) -> None:
    """torch.profiler tables of each call (after the timed runs: warm), by GPU time and by host time.

    Where a merge's time goes on the GPU: kernel time against host time (launches, syncs, Python)."""
    from torch.profiler import ProfilerActivity, profile

    for name, fn in calls.items():
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        events = prof.key_averages()
        launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx"))
        syncs = sum(e.count for e in events if "Synchronize" in e.key or e.key == "cudaMemcpyAsync")
        print(f"--- profile of one {name}: {launches} kernel launches, {syncs} memcpy/sync calls")
        print(events.table(sort_by="self_device_time_total", row_limit=rows, max_name_column_width=60))
        print(events.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=60))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=positive_int, default=32)
    ap.add_argument("--grid", type=positive_int, nargs=2, default=(14, 14), help="pooled grid rows cols (P = rows * cols)")
    ap.add_argument("--dim", type=positive_int, default=3584)
    ap.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    ap.add_argument("--preset", default="r10")
    ap.add_argument("--layout", default="onevision", choices=("onevision", "llava_video"))
    ap.add_argument("--scene-len", type=positive_int, default=8)
    ap.add_argument("--static-share", type=share, default=0.8)
    ap.add_argument("--visual", type=positive_int, default=1000, help="visual tokens for the inner merge")
    ap.add_argument("--warmup", type=non_negative_int, default=5)
    ap.add_argument("--repeats", type=positive_int, default=30)
    ap.add_argument("--profile", action="store_true", help="also print torch.profiler's top ops (GPU and host time) of one outer and one inner merge")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_kernels: error: needs a CUDA GPU (torch.cuda.is_available() is False); "
              "on the CPU the kernels are checked by tests/plugins_trt", file=sys.stderr)
        return 2

    from holitom.merge import MergeConfig, apply_inner_merge, get_preset, outer_merge, plan_inner_merge, plan_outer_merge
    from holitom.merge._device import use_kernels
    from holitom.merge.temporal import _segment
    from holitom.plugins_trt import kernels, ops

    config = get_preset(args.preset)
    if not isinstance(config, MergeConfig) or not config.outer_enabled:
        ap.error(f"--preset {args.preset} is not a HoliTom setting with an outer merge; pick one of r10, r15, r20, r25")
    device = torch.device("cuda")
    dtype = DTYPES[args.dtype]
    grid = tuple(args.grid)
    positions = grid[0] * grid[1]
    warm, reps = args.warmup, args.repeats
    print(f"device={torch.cuda.get_device_name()} torch={torch.__version__} dtype={args.dtype} preset={args.preset} (medians of {reps} runs)")

    x, attention = synthetic_video(args.frames, positions, args.dim, args.scene_len, args.static_share, seed=args.dim)
    x, attention = x.to(device, dtype), attention.to(device)
    newline = torch.zeros(args.dim, device=device, dtype=dtype)
    tau, window = config.tau, 0 if config.max_window is None else config.max_window

    def reference(op, *inputs, **attributes):
        with use_kernels(False):  # on CUDA the merge code would dispatch to the kernels
            return op(*inputs, **attributes)

    # TemporalSegment in one launch (DP on the device), against the torch path's kernels + table copy + host DP.
    shape = f"F={args.frames} P={positions} D={args.dim}"
    one_launch = timed_ms(lambda: kernels.temporal_segment(x, tau=tau, max_window=window), device, warm, reps)
    print(row(f"TemporalSegment {shape}", one_launch,
              timed_ms(lambda: reference(ops.temporal_segment, x, tau=tau, max_window=window), device, warm, reps)))

    def host_dp():
        _, _, _, table = kernels.temporal_stage1(x, tau, config.max_window)
        _segment(table.cpu().numpy(), config.max_window)

    print(f"temporal stage I F={args.frames}: one launch (DP in one program) {fmt(one_launch)} | "
          f"similarity + table kernels, table copy + host DP {fmt(timed_ms(host_dp, device, warm, reps))}")

    # DensityPeakMerge on the static slots of each multi-frame window (its first frame's tokens;
    # the outer merge clusters the window means of the same slots).
    start_h, end_h, static = reference(ops.temporal_segment, x, tau=tau, max_window=window)
    firsts = torch.unique(start_h[end_h > start_h])
    groups = x.float()[firsts]  # (G, P, D)
    valid = static[firsts]  # (G, P)
    clusters = (valid.sum(1).double() * config.retain_ratio).round().long()  # (G,)
    if len(firsts):
        print(row(f"DensityPeakMerge G={len(firsts)} n={positions} D={args.dim}",
                  timed_ms(lambda: kernels.density_peak_merge(groups, valid, clusters, k_nn=config.k_nn, beta=config.beta), device, warm, reps),
                  timed_ms(lambda: reference(ops.density_peak_merge, groups, valid, clusters, k_nn=config.k_nn, beta=config.beta), device, warm, reps)))

    # Outer merge (plan + apply) through holitom.merge: kernels (the CUDA default) against the torch code.
    def outer():
        return outer_merge(x, attention, config, grid, args.layout, newline)

    def outer_torch():
        with use_kernels(False):
            return outer()

    outer_k, outer_t = timed_ms(outer, device, warm, reps), timed_ms(outer_torch, device, warm, reps)
    plan = plan_outer_merge(x, attention, config, grid, args.layout)
    print(row(f"outer merge {shape}", outer_k, outer_t) + f"; {args.frames * positions} -> {plan.num_visual_tokens} tokens")

    # Inner merge (plan + apply) at --visual tokens.
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.visual + 100, args.dim, generator=g).to(device, dtype)
    span = (50, 50 + args.visual)
    scores = torch.rand(args.visual, generator=g).to(device)
    ratio = config.inner.ratio if config.inner is not None else 0.5
    mode = config.inner.mode if config.inner is not None else "sequential"

    def merge_inner():
        return apply_inner_merge(hidden, span, plan_inner_merge(scores, hidden[span[0] : span[1]], ratio, validate=False), mode)

    def inner():
        with use_kernels():  # the inner merge's CUDA default is the torch code
            return merge_inner()

    def inner_torch():
        with use_kernels(False):
            return merge_inner()

    inner_k, inner_t = timed_ms(inner, device, warm, reps), timed_ms(inner_torch, device, warm, reps)
    print(row(f"inner merge L_v={args.visual} D={args.dim} {mode}", inner_k, inner_t))

    if args.profile:
        profile_top_ops({"outer merge": outer, "inner merge": inner})
    if args.frames == 32 and positions == 196 and args.dim == 3584:
        verdict = "met" if outer_k[0] <= OUTER_TARGET_MS else "MISSED"
        print(f"target: outer merge F=32 P=196 D=3584 <= {OUTER_TARGET_MS:g} ms: {outer_k[0]:.2f} ms, {verdict}")
    if args.visual == 1000:
        verdict = "met" if inner_k[0] <= INNER_TARGET_MS else "MISSED"
        print(f"target: inner merge 1000 tokens <= {INNER_TARGET_MS:g} ms: {inner_k[0]:.2f} ms, {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
