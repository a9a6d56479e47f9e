"""Triton kernels of ``TemporalSegment`` (HoliTom stage I, DESIGN.md section 2).

Each algorithm step is one ``@triton.jit`` helper, inlined into the kernels that need it:

- :func:`_cosine_rows` -- ``|x_t|``, ``|x_{t+1}|`` and ``<x_t, x_{t+1}>`` of a block
  of positions, accumulated in float32 over the hidden size, then the cosine with the
  contract's guard and clamp; :func:`_static` -- the contract's "static iff cos > tau";
- :func:`_run_ends` -- ``run_end[a, p]``: the last frame e with ``[a, e]`` static at p
  (a reversed running minimum over frames);
- :func:`_window_counts` / :func:`_window_table` -- ``n(a, e)`` and the table
  ``C[a, e] = (e - a) * n(a, e)`` (zero for windows the bound excludes);
- :func:`_segment_dp` -- the frame DP and its backtrack, on the table held in registers;
- :func:`_window_static` -- ``static[t, p] = run_end[start_t, p] >= end_t`` in windows
  of >= 2 frames.

Kernels:

1. :func:`temporal_segment_kernel` -- the whole op in ONE program (the form a TensorRT
   AOT plugin launches, :data:`holitom.plugins_trt.trt_spec.AOT_KERNELS`; the Python
   launcher of the op uses it too). It holds no scratch memory: a first pass over the
   position blocks sums the table, the DP runs on it, a second pass recomputes each
   block's similarities (rather than keeping them in global memory the plugin does not
   have) and writes the static mask.
2. :func:`similarity_kernel` and :func:`count_table_kernel` -- the similarity, run ends
   and table as tensors, for the torch merge path on CUDA, whose DP runs on the host
   (see :mod:`holitom.plugins_trt.kernels`).

The reference is :func:`holitom.merge.temporal.plan_temporal`; the tie rules are
the ``TemporalSegment`` contract's (:mod:`holitom.plugins_trt.ops`).
"""

from __future__ import annotations

import triton
import triton.language as tl

from holitom.merge.temporal import COSINE_EPS

_EPS = tl.constexpr(COSINE_EPS)  # the contract's norm guard, a compile-time constant of the one-launch kernel


@triton.jit
def _min_combine(a, b):
    return tl.minimum(a, b)


@triton.jit
def _cosine_rows(x_ptr, t, pos, num_frames, num_pos, dim, eps, BLOCK_D: tl.constexpr):
    """``(cos (BLOCK_P,), |x_t| (BLOCK_P,))`` of frame t at positions ``pos`` (cos is meaningless without a next frame)."""
    pos_ok = pos < num_pos
    has_next = t + 1 < num_frames
    row_a = (t * num_pos + pos.to(tl.int64)) * dim  # (BLOCK_P,) int64 offsets of x[t, p] (t * P fits int32)
    row_b = row_a + num_pos * dim  # x[t+1, p]
    aa = tl.zeros(pos.shape, dtype=tl.float32)
    bb = tl.zeros(pos.shape, dtype=tl.float32)
    ab = tl.zeros(pos.shape, dtype=tl.float32)
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
    # The contract's cosine: norms below eps count as eps; rounding can pass |cos| = 1, so clamp.
    cos = tl.div_rn(ab, tl.maximum(norm_a, eps) * tl.maximum(norm_b, eps))
    return tl.minimum(tl.maximum(cos, -1.0), 1.0), norm_a


@triton.jit
def _static(cos, tau):
    """The contract's rule: a position is static between two frames iff their cosine exceeds tau (float32)."""
    return cos > tau


@triton.jit
def _run_ends(linked, frames, num_frames):
    """``(BLOCK_F, BLOCK_P)`` int64: the last frame e with ``[a, e]`` static at p, for each start frame a.

    ``linked[t, p]``: p is static between frames t and t+1 (False from row ``num_frames - 1`` on).
    A run from a stops at the first frame t >= a that is not linked to the next one.
    """
    stop = tl.where(linked & (frames[:, None] < num_frames - 1), num_frames, frames[:, None]).to(tl.int64)
    return tl.associative_scan(stop, 0, _min_combine, reverse=True)


@triton.jit
def _window_counts(run_end, pos_ok, frames, num_frames):
    """``(BLOCK_F, BLOCK_F)`` int64 ``n(a, e)``: positions of ``pos_ok`` static over the whole of ``[a, e]``."""
    counts = tl.zeros([frames.shape[0], frames.shape[0]], dtype=tl.int64)
    for e in range(0, num_frames):
        reach = tl.sum(((run_end >= e) & pos_ok[None, :]).to(tl.int64), axis=1)  # (BLOCK_F,) over start frames a
        counts += tl.where(frames[None, :] == e, reach[:, None], 0)
    return counts


@triton.jit
def _window_table(counts, frames, max_window):
    """The removed-token table ``C[a, e] = (e - a) * n(a, e)`` over windows of 2..max_window frames (0 = unbounded)."""
    length = frames[None, :] - frames[:, None]  # e - a
    usable = (length > 0) & ((max_window <= 0) | (length + 1 <= max_window))
    return tl.where(usable, length * counts, 0)


@triton.jit
def _segment_dp(table, frames, num_frames, max_window):
    """The frame DP over ``table`` ``(BLOCK_F, BLOCK_F)`` and its backtrack: ``(window_start, window_end)`` ``(BLOCK_F,)``.

    Needs ``BLOCK_F >= num_frames``. Held in registers, so no barrier between the dependent steps.
    """
    # best[j] = dp[j - 1] (best[0] = dp[-1] = 0); dp[F - 1] would sit at best[F], which nothing reads.
    best = tl.zeros(frames.shape, dtype=tl.int64)
    choice = tl.full(frames.shape, 1, dtype=tl.int32)  # window length that ends at frame i
    limit = tl.where(max_window > 0, max_window, num_frames)
    for i in range(0, num_frames):
        alone = tl.sum(tl.where(frames == i, best, 0), axis=0)  # dp[i-1]: frame i closes a window alone
        widest = tl.minimum(i + 1, limit)
        # window [s, i] for start s = i - w + 1, w = 2..widest: total dp[s-1] + C[s, i] = best[s] + C[s, i]
        starts = (frames <= i - 1) & (frames >= i + 1 - widest)
        cost = tl.sum(tl.where(frames[None, :] == i, table, 0), axis=1)  # (BLOCK_F,) column i: C[s, i]
        totals = tl.where(starts, best + cost, -1)
        top = tl.max(totals, axis=0)
        shortest = tl.max(tl.where(starts & (totals == top), frames, -1), axis=0)  # latest start among ties
        better = top > alone  # strictly more than the single frame
        best = tl.where(frames == i + 1, tl.where(better, top, alone), best)
        choice = tl.where(frames == i, tl.where(better, i - shortest + 1, 1), choice)
    # Backtrack from the last frame; a masked step per frame keeps the loop bound static.
    window_start = tl.zeros(frames.shape, dtype=tl.int64)
    window_end = tl.zeros(frames.shape, dtype=tl.int64)
    end = num_frames - 1
    for _ in range(0, num_frames):
        length = tl.sum(tl.where(frames == end, choice, 0), axis=0)  # 0 once end < 0
        start = end - length + 1
        inside = (frames >= start) & (frames <= end)
        window_start = tl.where(inside, start, window_start)
        window_end = tl.where(inside, end, window_end)
        end = tl.where(end >= 0, start - 1, end)
    return window_start, window_end


@triton.jit
def _window_static(run_end, window_start, window_end, frames, num_frames):
    """``(BLOCK_F, BLOCK_P)`` bool: static in t's window iff the run from its first frame reaches its last."""
    static = tl.zeros(run_end.shape, dtype=tl.int1)
    for a in range(0, num_frames):
        reach = tl.sum(tl.where(frames[:, None] == a, run_end, 0), axis=0)  # (BLOCK_P,) run_end[a, :]
        mine = (window_start == a) & (window_end > a)  # (BLOCK_F,) frames of a window of >= 2 frames starting at a
        static = tl.where(mine[:, None], reach[None, :] >= window_end[:, None], static)
    return static


@triton.jit
def _linked_block(x_ptr, p0, frames, num_frames, num_pos, dim, tau, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):
    """``(BLOCK_F, BLOCK_P)`` bool: position ``p0 + p`` is static between frames t and t+1 (from the features)."""
    pos = p0 + tl.arange(0, BLOCK_P)
    linked = tl.zeros([frames.shape[0], BLOCK_P], dtype=tl.int1)
    for t in range(0, num_frames - 1):
        cos, _ = _cosine_rows(x_ptr, t, pos, num_frames, num_pos, dim, _EPS, BLOCK_D)
        linked = tl.where(frames[:, None] == t, _static(cos, tau)[None, :], linked)
    return linked


@triton.jit
def temporal_segment_kernel(
    features_ptr,  # (F, P, D) any float dtype, contiguous
    frames,  # F <= BLOCK_F
    positions,  # P
    hidden,  # D
    window_start_ptr,  # (F,) int64 out
    window_end_ptr,  # (F,) int64 out
    static_mask_ptr,  # (F, P) bool out
    TAU: tl.constexpr,
    MAX_WINDOW: tl.constexpr,  # 0 = unbounded
    BLOCK_F: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """The whole ``TemporalSegment`` op in one program (launch grid ``(1,)``)."""
    f = tl.arange(0, BLOCK_F)
    counts = tl.zeros([BLOCK_F, BLOCK_F], dtype=tl.int64)
    for p0 in range(0, positions, BLOCK_P):
        pos_ok = p0 + tl.arange(0, BLOCK_P) < positions
        run_end = _run_ends(_linked_block(features_ptr, p0, f, frames, positions, hidden, TAU, BLOCK_P, BLOCK_D), f, frames)
        counts += _window_counts(run_end, pos_ok, f, frames)
    start, end = _segment_dp(_window_table(counts, f, MAX_WINDOW), f, frames, MAX_WINDOW)
    frame_ok = f < frames
    tl.store(window_start_ptr + f, start, mask=frame_ok)
    tl.store(window_end_ptr + f, end, mask=frame_ok)
    for p0 in range(0, positions, BLOCK_P):  # second pass: the similarities again, for the static mask
        pos = p0 + tl.arange(0, BLOCK_P)
        run_end = _run_ends(_linked_block(features_ptr, p0, f, frames, positions, hidden, TAU, BLOCK_P, BLOCK_D), f, frames)
        static = _window_static(run_end, start, end, f, frames)
        offsets = f[:, None].to(tl.int64) * positions + pos[None, :]
        tl.store(static_mask_ptr + offsets, static, mask=frame_ok[:, None] & (pos < positions)[None, :])


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
    cos, norm = _cosine_rows(x_ptr, t, pos, num_frames, num_pos, dim, eps, BLOCK_D)
    tl.store(norm_ptr + t * num_pos + pos, norm, mask=pos_ok)
    tl.store(sim_ptr + t * num_pos + pos, cos, mask=pos_ok & (t + 1 < num_frames))


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
    BLOCK_F: tl.constexpr,  # >= F
):
    """Run ends and the table from stored similarities, in one program (grid ``(1,)``)."""
    f = tl.arange(0, BLOCK_F)
    counts = tl.zeros([BLOCK_F, BLOCK_F], dtype=tl.int64)
    for p0 in range(0, num_pos, BLOCK_P):
        pos = p0 + tl.arange(0, BLOCK_P)
        pos_ok = pos < num_pos
        sim = tl.load(sim_ptr + f[:, None] * num_pos + pos[None, :], mask=(f < num_frames - 1)[:, None] & pos_ok[None, :], other=0.0)
        run_end = _run_ends(_static(sim, tau), f, num_frames)  # (BLOCK_F, BLOCK_P)
        tl.store(run_end_ptr + f[:, None].to(tl.int64) * num_pos + pos[None, :], run_end, mask=(f < num_frames)[:, None] & pos_ok[None, :])
        counts += _window_counts(run_end, pos_ok, f, num_frames)
    table = _window_table(counts, f, max_window)
    frame_ok = f < num_frames
    tl.store(table_ptr + f[:, None].to(tl.int64) * num_frames + f[None, :], table, mask=frame_ok[:, None] & frame_ok[None, :])
