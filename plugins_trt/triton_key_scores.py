"""Triton kernel of the last vision layer's key scores from the fused attention's log-sum-exp.

HoliTom reads, for each key of a frame, the softmax probability it receives averaged
over heads and queries (:func:`holitom.models.vision.key_attention_scores`). The fused
attention kernel already gives each query's log-sum-exp ``lse``, so a key's column sum
is ``sum_i exp(q_i . k_j * scale - lse_i)``: one more ``q k^T`` and one ``exp2`` per
logit, never the ``(F, H, N, N)`` probabilities. On CUDA the torch form of that pass
(:func:`holitom.models.vision._blocked_key_scores`) writes and re-reads every logit in
device memory in cache-sized blocks, hundreds of launches at SigLIP's 729 patches
(measured on an H200, 32 frames, bfloat16: 18.8 ms against 0.31 ms for the attention
itself); this kernel keeps each ``(BLOCK_Q, BLOCK_K)`` logit tile in registers (0.46 ms there
at its default tiles, :class:`holitom.plugins_trt.kernels.KeyScoreLaunch`).
Its launcher is :func:`holitom.plugins_trt.kernels.key_column_sums`.

One program per (frame x head, block of keys): it loads its keys once, walks the
queries block by block in ascending order (a fixed order: the result does not depend
on the launch), and writes the column sums ``(F*H, N)`` float32. Products accumulate in
float32 and are exact for 16-bit inputs (a bfloat16 / float16 product fits a float32,
and so does the TF32 product of upcast tiles, which TF32 holds exactly); float32 inputs
need float32-accurate products ("ieee" or "tf32x3"), not plain TF32, which would round
the logits to 10 bits. The launcher's :class:`KeyScoreLaunch` picks tiles and modes.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _tile(ptr, base, stride_n, rows, rows_ok, d0, head_dim, BLOCK_D: tl.constexpr):
    """Rows ``rows`` of an ``(N, hd)`` matrix at ``ptr + base`` (row stride ``stride_n``, unit column stride),
    head columns ``d0 .. d0 + BLOCK_D`` (zero past hd)."""
    d = d0 + tl.arange(0, BLOCK_D)
    return tl.load(ptr + base + rows[:, None] * stride_n + d[None, :], mask=rows_ok[:, None] & (d < head_dim)[None, :], other=0.0)


@triton.jit
def _product(queries, keys_t, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    if UPCAST:
        return tl.dot(queries.to(tl.float32), keys_t.to(tl.float32), input_precision=PRECISION)
    return tl.dot(queries, keys_t, input_precision=PRECISION)  # float32 accumulation


@triton.jit
def key_column_sums_kernel(
    q_ptr,  # (F, H, N, hd) any float dtype, any strides but a unit one on hd (the attention's transposed view)
    k_ptr,  # (F, H, N, hd) q's dtype, likewise
    neg_lse2_ptr,  # (R, N) float32, R = F * H: minus each query's log-sum-exp in base 2, contiguous
    out_ptr,  # (R, N) float32 out: sum over queries of each key's probability
    n,
    head_dim,
    heads,
    q_sf, q_sh, q_sn,  # q's strides over frames, heads and patches (elements)
    k_sf, k_sh, k_sn,
    scale_log2,  # the attention scale times log2(e): logits in base 2, so only exp2 is needed
    BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,  # head columns of the first product: a power of two >= 16 (tl.dot's least K)
    BLOCK_DR: tl.constexpr,  # head columns of the second product (the rest past BLOCK_D), a power of two >= 16
    SPLIT: tl.constexpr,  # whether the second product runs (head_dim > BLOCK_D)
    UPCAST: tl.constexpr,  # multiply 16-bit tiles as float32 (exact in TF32) instead of natively
    PRECISION: tl.constexpr,  # tl.dot's input_precision for float32 operands: "ieee", "tf32x3" or "tf32"
):
    row = tl.program_id(0).to(tl.int64)
    kj = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)  # (BLOCK_K,) key indices
    kj_ok = kj < n
    frame, head = row // heads, row % heads
    q_base, k_base = frame * q_sf + head * q_sh, frame * k_sf + head * k_sh
    # A split head size (SigLIP's 72 = 64 + 8) multiplies 64 + 16 columns instead of a padded 128.
    keys_t = tl.trans(_tile(k_ptr, k_base, k_sn, kj, kj_ok, 0, head_dim, BLOCK_D))  # (BLOCK_D, BLOCK_K)
    keys_rest_t = tl.trans(_tile(k_ptr, k_base, k_sn, kj, kj_ok, BLOCK_D, head_dim, BLOCK_DR))  # (BLOCK_DR, BLOCK_K)
    col = tl.zeros([BLOCK_K], dtype=tl.float32)
    for q0 in range(0, n, BLOCK_Q):
        qi = q0 + tl.arange(0, BLOCK_Q)
        qi_ok = qi < n
        logits = _product(_tile(q_ptr, q_base, q_sn, qi, qi_ok, 0, head_dim, BLOCK_D), keys_t, UPCAST, PRECISION)  # (BLOCK_Q, BLOCK_K)
        if SPLIT:
            logits += _product(_tile(q_ptr, q_base, q_sn, qi, qi_ok, BLOCK_D, head_dim, BLOCK_DR), keys_rest_t, UPCAST, PRECISION)
        # Queries past n get -inf: their rows add exp2(-inf) = 0, no mask per logit. Keys past n are not stored.
        neg_lse2 = tl.load(neg_lse2_ptr + row * n + qi, mask=qi_ok, other=float("-inf"))  # (BLOCK_Q,)
        col += tl.sum(tl.exp2(logits * scale_log2 + neg_lse2[:, None]), axis=0)  # (BLOCK_K,)
    tl.store(out_ptr + row * n + kj, col, mask=kj_ok)


__all__ = ["key_column_sums_kernel"]
