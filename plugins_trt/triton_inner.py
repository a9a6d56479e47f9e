"""Triton kernels of the inner merge (HoliTom stage III, DESIGN.md section 2).

1. :func:`kept_norm_kernel` -- ``max(|h_j|, eps)`` of each kept token (float32).
2. :func:`assign_kernel` -- each dropped token's most similar kept token:
   ``argmax_j <h_i, h_j> / max(|h_j|, eps)`` (the dropped token's own norm does
   not change the argmax), as ``(BLOCK_M, BLOCK_K)`` float32 tiles summed over
   the hidden size and a running row argmax over the kept blocks in
   ascending order: a strict ``>`` across blocks and the first maximum inside a
   block, so equal similarities go to the lower kept index like the reference's
   ``argmax``.
3. :func:`merge_kernel` -- one program per (block of kept tokens, block of the
   hidden size): start from ``h_j`` and fold its members in ascending index order,
   ``h <- (h + h_i) / 2`` (the official sequential average, literally) or
   ``h <- h + h_i`` then ``/ (m + 1)`` (uniform mean), in float32.

The reference is :mod:`holitom.merge.inner` (``plan_inner_merge`` /
``apply_inner_merge``); the kept / dropped split (a sort of the scores) stays
in torch.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def kept_norm_kernel(
    h_ptr,  # (L_v, D) any float dtype, row stride stride_h
    keep_ptr,  # (k,) int64
    norm_ptr,  # (k,) float32 out
    num_keep,
    dim,
    stride_h,
    eps,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    kk = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    kk_ok = kk < num_keep
    rows = tl.load(keep_ptr + kk, mask=kk_ok, other=0)
    acc = tl.zeros([BLOCK_K], dtype=tl.float32)
    for d0 in range(0, dim, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        h = tl.load(h_ptr + rows[:, None] * stride_h + d[None, :], mask=kk_ok[:, None] & (d < dim)[None, :], other=0.0)
        h = h.to(tl.float32)
        acc += tl.sum(h * h, axis=1)
    tl.store(norm_ptr + kk, tl.maximum(tl.sqrt_rn(acc), eps), mask=kk_ok)


@triton.jit
def assign_kernel(
    h_ptr,  # (L_v, D) any float dtype, row stride stride_h
    keep_ptr,  # (k,) int64
    dropped_ptr,  # (L_v - k,) int64
    kept_norm_ptr,  # (k,) float32
    assign_ptr,  # (L_v - k,) int64 out: index into keep
    num_keep,
    num_dropped,
    dim,
    stride_h,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = m < num_dropped
    drop_rows = tl.load(dropped_ptr + m, mask=m_ok, other=0)
    best = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    best_idx = tl.zeros([BLOCK_M], dtype=tl.int64)
    for k0 in range(0, num_keep, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        kk_ok = kk < num_keep
        keep_rows = tl.load(keep_ptr + kk, mask=kk_ok, other=0)
        dots = tl.zeros([BLOCK_M, BLOCK_K], dtype=tl.float32)
        for d0 in range(0, dim, BLOCK_D):
            d = d0 + tl.arange(0, BLOCK_D)
            d_ok = d < dim
            a = tl.load(h_ptr + drop_rows[:, None] * stride_h + d[None, :], mask=m_ok[:, None] & d_ok[None, :], other=0.0)
            b = tl.load(h_ptr + keep_rows[:, None] * stride_h + d[None, :], mask=kk_ok[:, None] & d_ok[None, :], other=0.0)
            # Products summed per element in one fixed order (not tl.dot, whose result for equal
            # columns may depend on their place in the tile): duplicated kept tokens tie exactly.
            dots += tl.sum(a.to(tl.float32)[:, None, :] * b.to(tl.float32)[None, :, :], axis=2)
        norm = tl.load(kept_norm_ptr + kk, mask=kk_ok, other=1.0)
        sim = tl.where(kk_ok[None, :], tl.div_rn(dots, norm[None, :]), float("-inf"))  # (BLOCK_M, BLOCK_K)
        top = tl.max(sim, axis=1)
        first = tl.min(tl.where(sim == top[:, None], kk[None, :], num_keep), axis=1).to(tl.int64)
        better = top > best  # strict: an equal similarity in a later block keeps the lower index
        best_idx = tl.where(better, first, best_idx)
        best = tl.where(better, top, best)
    tl.store(assign_ptr + m, best_idx, mask=m_ok)


@triton.jit
def merge_kernel(
    h_ptr,  # (L_v, D) any float dtype, row stride stride_h
    keep_ptr,  # (k,) int64
    member_ptr,  # (L_v - k,) int64 dropped rows grouped by kept token, ascending within a group
    offsets_ptr,  # (k + 1,) int64 members of kept token j: member[offsets[j]:offsets[j+1]]
    out_ptr,  # (k, D) float32 out, row stride stride_out
    num_keep,
    dim,
    stride_h,
    stride_out,
    SEQUENTIAL: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    j = tl.program_id(0) * BLOCK_J + tl.arange(0, BLOCK_J)  # (BLOCK_J,) kept tokens
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    j_ok = j < num_keep
    d_ok = d < dim
    mask = j_ok[:, None] & d_ok[None, :]
    row = tl.load(keep_ptr + j, mask=j_ok, other=0)
    acc = tl.load(h_ptr + row[:, None] * stride_h + d[None, :], mask=mask, other=0.0).to(tl.float32)  # (BLOCK_J, BLOCK_D)
    first = tl.load(offsets_ptr + j, mask=j_ok, other=0)
    count = tl.load(offsets_ptr + j + 1, mask=j_ok, other=0) - first  # (BLOCK_J,) members m_j
    # Step e folds the e-th member of every kept token that has one (the others keep their value).
    for e in range(0, tl.max(count, axis=0)):
        has = e < count
        member = tl.load(member_ptr + first + e, mask=has, other=0)
        h = tl.load(h_ptr + member[:, None] * stride_h + d[None, :], mask=mask & has[:, None], other=0.0).to(tl.float32)
        if SEQUENTIAL:
            acc = tl.where(has[:, None], (acc + h) * 0.5, acc)
        else:
            acc += h
    if not SEQUENTIAL:
        acc = tl.div_rn(acc, (count + 1).to(tl.float32)[:, None])
    tl.store(out_ptr + j[:, None].to(tl.int64) * stride_out + d[None, :], acc, mask=mask)
