"""Triton kernels of ``TemporalSegment`` (HoliTom stage I, DESIGN.md section 2).

Four launches, each a pure function of global memory written by the one before:

1. :func:`similarity_kernel` -- one program per (frame t, block of positions):
   ``|x_t|``, ``|x_{t+1}|`` and ``<x_t, x_{t+1}>`` accumulated in float32 over
   the hidden size, then the cosine with the contract's guard and clamp.
2. :func:`count_table_kernel` -- one program per start frame a: walks e = a+1..F-1
   with a per-position "still static" flag, giving ``run_end[a, p]`` (the last
   frame e with [a, e] static at p) and the table row ``C[a, e] = (e - a) * n(a, e)``.
3. :func:`segment_kernel` -- ONE program: the frame DP and its backtrack (see
   :mod:`holitom.plugins_trt.kernels` for why it runs on the device).
4. :func:`static_mask_kernel` -- one program per (frame, block of positions):
   ``static[t, p] = run_end[start_t, p] >= end_t`` in windows of >= 2 frames.

The reference is :func:`holitom.merge.temporal.plan_temporal`; the tie rules are
the ``TemporalSegment`` contract's (:mod:`holitom.plugins_trt.ops`).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def similarity_kernel(
    x_ptr,  # (F, P, D) any float dtype, contiguous
    sim_ptr,  # (F-1, P) float32 out
    norm_ptr,  # (F, P) float32 out: |x_t|, for the finiteness flag
    num_frames,
    num_pos,
    dim,
    eps,
    BLOCK_P: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    pos = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)  # (BLOCK_P,)
    pos_ok = pos < num_pos
    has_next = t + 1 < num_frames
    row_a = (t * num_pos + pos) * dim  # (BLOCK_P,) int64 offsets of x[t, p]
    row_b = row_a + num_pos * dim  # x[t+1, p]
    aa = tl.zeros([BLOCK_P], dtype=tl.float32)
    bb = tl.zeros([BLOCK_P], dtype=tl.float32)
    ab = tl.zeros([BLOCK_P], dtype=tl.float32)
    for d0 in range(0, dim, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)  # (BLOCK_D,)
        mask = pos_ok[:, None] & (d < dim)[None, :]  # (BLOCK_P, BLOCK_D)
        a = tl.load(x_ptr + row_a[:, None] + d[None, :], mask=mask, other=0.0).to(tl.float32)
        b = tl.load(x_ptr + row_b[:, None] + d[None, :], mask=mask & has_next, other=0.0).to(tl.float32)
        aa += tl.sum(a * a, axis=1)
        bb += tl.sum(b * b, axis=1)
        ab += tl.sum(a * b, axis=1)
    norm_a = tl.sqrt_rn(aa)
    norm_b = tl.sqrt_rn(bb)
    tl.store(norm_ptr + t * num_pos + pos, norm_a, mask=pos_ok)
    # The contract's cosine: norms below eps count as eps; rounding can pass |cos| = 1, so clamp.
    cos = tl.div_rn(ab, tl.maximum(norm_a, eps) * tl.maximum(norm_b, eps))
    cos = tl.minimum(tl.maximum(cos, -1.0), 1.0)
    tl.store(sim_ptr + t * num_pos + pos, cos, mask=pos_ok & has_next)


@triton.jit
def count_table_kernel(
    sim_ptr,  # (F-1, P) float32
    run_end_ptr,  # (F, P) int64 out
    table_ptr,  # (F, F) int64 out: C[a, e]
    num_frames,
    num_pos,
    tau,  # float32: static iff sim > tau
    max_window,  # 0 = unbounded
    BLOCK_P: tl.constexpr,
    BLOCK_F: tl.constexpr,
):
    a = tl.program_id(0)
    frames = tl.arange(0, BLOCK_F)  # (BLOCK_F,) end frame e of the table row
    counts = tl.zeros([BLOCK_F], dtype=tl.int64)  # n(a, e)
    for p0 in range(0, num_pos, BLOCK_P):
        pos = p0 + tl.arange(0, BLOCK_P)
        pos_ok = pos < num_pos
        alive = pos_ok  # [a, e] still static at p
        run_end = tl.zeros([BLOCK_P], dtype=tl.int64) + a
        for e in range(a + 1, num_frames):
            s = tl.load(sim_ptr + (e - 1) * num_pos + pos, mask=pos_ok, other=0.0)  # (F-1) * P fits int32
            alive = alive & (s > tau)
            run_end = tl.where(alive, e, run_end)
            counts += tl.where(frames == e, tl.sum(alive.to(tl.int64), axis=0), 0)
        tl.store(run_end_ptr + a.to(tl.int64) * num_pos + pos, run_end, mask=pos_ok)
    length = frames - a  # e - a
    usable = (length > 0) & ((max_window <= 0) | (length + 1 <= max_window))
    tl.store(table_ptr + a.to(tl.int64) * num_frames + frames, tl.where(usable, length * counts, 0), mask=frames < num_frames)


@triton.jit
def segment_kernel(
    table_ptr,  # (F, F) int64
    start_ptr,  # (F,) int64 out: first frame of t's window
    end_ptr,  # (F,) int64 out: last frame of t's window
    num_frames,
    max_window,  # 0 = unbounded
    BLOCK_F: tl.constexpr,  # >= F + 1
):
    idx = tl.arange(0, BLOCK_F)
    # best[j] = dp[j - 1] (best[0] = dp[-1] = 0), held in registers: no barrier between steps.
    best = tl.zeros([BLOCK_F], dtype=tl.int64)
    choice = tl.full([BLOCK_F], 1, dtype=tl.int32)  # window length that ends at frame i
    limit = tl.where(max_window > 0, max_window, num_frames)
    for i in range(0, num_frames):
        alone = tl.sum(tl.where(idx == i, best, 0), axis=0)  # dp[i-1]: frame i closes a window alone
        widest = tl.minimum(i + 1, limit)
        # window [s, i] for start s = i - w + 1, w = 2..widest: total dp[s-1] + C[s, i] = best[s] + C[s, i]
        starts = (idx <= i - 1) & (idx >= i + 1 - widest)
        cost = tl.load(table_ptr + idx.to(tl.int64) * num_frames + i, mask=starts, other=0)
        totals = tl.where(starts, best + cost, -1)
        top = tl.max(totals, axis=0)
        shortest = tl.max(tl.where(starts & (totals == top), idx, -1), axis=0)  # latest start among ties
        better = top > alone  # strictly more than the single frame
        best = tl.where(idx == i + 1, tl.where(better, top, alone), best)
        choice = tl.where(idx == i, tl.where(better, i - shortest + 1, 1), choice)
    # Backtrack from the last frame; a masked step per frame keeps the loop bound static.
    window_start = tl.zeros([BLOCK_F], dtype=tl.int64)
    window_end = tl.zeros([BLOCK_F], dtype=tl.int64)
    end = num_frames - 1
    for _ in range(0, num_frames):
        length = tl.sum(tl.where(idx == end, choice, 0), axis=0)  # 0 once end < 0
        start = end - length + 1
        inside = (idx >= start) & (idx <= end)
        window_start = tl.where(inside, start, window_start)
        window_end = tl.where(inside, end, window_end)
        end = tl.where(end >= 0, start - 1, end)
    frame_ok = idx < num_frames
    tl.store(start_ptr + idx, window_start, mask=frame_ok)
    tl.store(end_ptr + idx, window_end, mask=frame_ok)


@triton.jit
def static_mask_kernel(
    run_end_ptr,  # (F, P) int64
    start_ptr,  # (F,) int64
    end_ptr,  # (F,) int64
    static_ptr,  # (F, P) bool out
    num_pos,
    BLOCK_P: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    pos = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    pos_ok = pos < num_pos
    start = tl.load(start_ptr + t)
    end = tl.load(end_ptr + t)
    reach = tl.load(run_end_ptr + start * num_pos + pos, mask=pos_ok, other=0)
    # Static in [start, end] iff the static run from the window's first frame reaches its last.
    tl.store(static_ptr + t * num_pos + pos, (reach >= end) & (end > start), mask=pos_ok)
