"""Triton kernels of ``DensityPeakMerge`` (DPC-KNN and its merge, DESIGN.md section 2, stage II).

Every kernel works on padded groups ``(G, n, ...)``; a group's row tiles are
``(BLOCK_I, BLOCK_N)`` with ``BLOCK_N >= n`` (a whole row of the distance
matrix in registers), so the per-row steps need no cross-program reduction:

1. :func:`distance_kernel` -- ``d2[g, i, j] = sum_d (x_i - x_j)^2 / D`` per
   ``(BLOCK_I, BLOCK_J)`` tile, accumulated in float32 over ``BLOCK_D`` chunks;
   ``+inf`` in every row and column of an invalid slot.
2. :func:`density_kernel` -- ``rho_i = exp(-mean of the k smallest d2 of row i)``
   (self included at 0) by k rounds of "take the row minimum, strike its first
   occurrence", summed smallest first like the reference's sorted cumulative
   sum; also each row's largest valid distance.
3. :func:`gamma_kernel` -- ``delta_i`` (nearest denser token; lower slot denser
   on equal rho) and ``gamma = rho * delta``.
4. :func:`centre_kernel` -- ``rank_i = #{j ahead of i by gamma, lower slot first
   on ties}``; centre iff ``rank_i < M``.
5. :func:`assign_kernel` -- nearest centre (lower slot on equal distance), a
   centre joins itself.
6. :func:`merge_kernel` -- one program per (group, block of slots): a centre's
   slot gets ``beta * x_c + sum over members of (1 - beta) / count * x_i``
   (``x_c`` alone without members), every other slot zeros, as the product of
   the clusters' weighted one-hot matrix with the tokens.

Why direct differences rather than the reference's centred Gram matrix: the
contract requires exact duplicates at distance exactly 0 and an exactly
symmetric matrix; ``(x_i - x_j)^2`` gives both by construction (the same
products summed in the same order for ``(i, j)`` and ``(j, i)``) with no
cancellation, at 1.5x the multiply-adds of a Gram product. Distances may differ
from the reference's in the last bits, so only decisions within a few ulps of a
tie can differ; exact ties (duplicates, ``k = 1``) are decided by the same rules.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _row_block(BLOCK_I: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's group g (int64), its rows i ``(BLOCK_I,)`` and every column j ``(BLOCK_N,)``."""
    return tl.program_id(0).to(tl.int64), tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I), tl.arange(0, BLOCK_N)


@triton.jit
def _flags(ptr, g, idx, n):
    """Bool flags of group g at slots ``idx`` (False outside ``0..n-1``)."""
    return tl.load(ptr + g * n + idx, mask=idx < n, other=0) != 0


@triton.jit
def _distance_rows(d2_ptr, g, i, j, n):
    """``(BLOCK_I, BLOCK_N)`` rows i of group g's distance matrix, ``+inf`` outside the ``n x n`` matrix."""
    return tl.load(
        d2_ptr + g * n * n + i[:, None].to(tl.int64) * n + j[None, :],
        mask=(i < n)[:, None] & (j < n)[None, :],
        other=float("inf"),
    )


@triton.jit
def distance_kernel(
    x_ptr,  # (G, n, D) any float dtype, contiguous
    valid_ptr,  # (G, n) bool
    d2_ptr,  # (G, n, n) float32 out
    n,
    dim,
    BLOCK_I: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    g = tl.program_id(0).to(tl.int64)
    i = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)  # (BLOCK_I,)
    j = tl.program_id(2) * BLOCK_J + tl.arange(0, BLOCK_J)  # (BLOCK_J,)
    i_ok = i < n
    j_ok = j < n
    base = g * n * dim
    acc = tl.zeros([BLOCK_I, BLOCK_J], dtype=tl.float32)
    for d0 in range(0, dim, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        d_ok = d < dim
        xi = tl.load(x_ptr + base + i[:, None].to(tl.int64) * dim + d[None, :], mask=i_ok[:, None] & d_ok[None, :], other=0.0)
        xj = tl.load(x_ptr + base + j[:, None].to(tl.int64) * dim + d[None, :], mask=j_ok[:, None] & d_ok[None, :], other=0.0)
        diff = xi.to(tl.float32)[:, None, :] - xj.to(tl.float32)[None, :, :]  # (BLOCK_I, BLOCK_J, BLOCK_D)
        acc += tl.sum(diff * diff, axis=2)
    valid_i = _flags(valid_ptr, g, i, n)
    valid_j = _flags(valid_ptr, g, j, n)
    d2 = tl.where(valid_i[:, None] & valid_j[None, :], tl.div_rn(acc, dim.to(tl.float32)), float("inf"))
    tl.store(d2_ptr + g * n * n + i[:, None].to(tl.int64) * n + j[None, :], d2, mask=i_ok[:, None] & j_ok[None, :])


@triton.jit
def density_kernel(
    d2_ptr,  # (G, n, n) float32
    valid_ptr,  # (G, n) bool
    clusters_ptr,  # (G,) int64 M
    rho_ptr,  # (G, n) float32 out; -1 at invalid slots (never denser)
    row_max_ptr,  # (G, n) float32 out: largest valid distance of each row, 0 if none
    n,
    k_nn,
    BLOCK_I: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    g, i, j = _row_block(BLOCK_I, BLOCK_N)
    i_ok = i < n
    tile = _distance_rows(d2_ptr, g, i, j, n)  # (BLOCK_I, BLOCK_N)
    finite = tile < float("inf")
    tl.store(row_max_ptr + g * n + i, tl.max(tl.where(finite, tile, 0.0), axis=1), mask=i_ok)
    m = tl.load(clusters_ptr + g)
    k = tl.maximum(tl.minimum(m, k_nn), 1).to(tl.int32)  # the contract's k = max(min(k_nn, M), 1)
    total = tl.zeros([BLOCK_I], dtype=tl.float32)
    for _ in range(0, k):
        low = tl.min(tile, axis=1)  # (BLOCK_I,) next smallest distance
        total += low
        first = tl.min(tl.where(tile == low[:, None], j[None, :], BLOCK_N), axis=1)
        tile = tl.where(j[None, :] == first[:, None], float("inf"), tile)  # strike one occurrence only
    valid = _flags(valid_ptr, g, i, n)
    rho = tl.exp(-tl.div_rn(total, k.to(tl.float32)))
    tl.store(rho_ptr + g * n + i, tl.where(valid, rho, -1.0), mask=i_ok)


@triton.jit
def gamma_kernel(
    d2_ptr,  # (G, n, n) float32
    valid_ptr,  # (G, n) bool
    rho_ptr,  # (G, n) float32
    row_max_ptr,  # (G, n) float32
    gamma_ptr,  # (G, n) float32 out; -1 at invalid slots
    n,
    BLOCK_I: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    g, i, j = _row_block(BLOCK_I, BLOCK_N)
    i_ok = i < n
    j_ok = j < n
    rho_i = tl.load(rho_ptr + g * n + i, mask=i_ok, other=-1.0)
    rho_j = tl.load(rho_ptr + g * n + j, mask=j_ok, other=-2.0)  # padding lanes below every slot
    tile = _distance_rows(d2_ptr, g, i, j, n)  # (BLOCK_I, BLOCK_N)
    denser = (rho_j[None, :] > rho_i[:, None]) | ((rho_j[None, :] == rho_i[:, None]) & (j[None, :] < i[:, None]))
    delta2 = tl.min(tl.where(denser, tile, float("inf")), axis=1)  # (BLOCK_I,)
    group_max = tl.max(tl.load(row_max_ptr + g * n + j, mask=j_ok, other=0.0), axis=0)
    delta2 = tl.where(delta2 == float("inf"), group_max, delta2)  # the densest token
    valid = _flags(valid_ptr, g, i, n)
    tl.store(gamma_ptr + g * n + i, tl.where(valid, rho_i * tl.sqrt_rn(delta2), -1.0), mask=i_ok)


@triton.jit
def centre_kernel(
    gamma_ptr,  # (G, n) float32
    valid_ptr,  # (G, n) bool
    clusters_ptr,  # (G,) int64 M
    is_centre_ptr,  # (G, n) bool out
    n,
    BLOCK_I: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    g, i, j = _row_block(BLOCK_I, BLOCK_N)
    i_ok = i < n
    gamma_i = tl.load(gamma_ptr + g * n + i, mask=i_ok, other=-1.0)
    gamma_j = tl.load(gamma_ptr + g * n + j, mask=j < n, other=-2.0)
    ahead = (gamma_j[None, :] > gamma_i[:, None]) | ((gamma_j[None, :] == gamma_i[:, None]) & (j[None, :] < i[:, None]))
    rank = tl.sum(ahead.to(tl.int32), axis=1)  # (BLOCK_I,) place in the stable descending order
    m = tl.load(clusters_ptr + g)
    valid = _flags(valid_ptr, g, i, n)
    tl.store(is_centre_ptr + g * n + i, valid & (rank < m), mask=i_ok)


@triton.jit
def assign_kernel(
    d2_ptr,  # (G, n, n) float32
    valid_ptr,  # (G, n) bool
    clusters_ptr,  # (G,) int64 M
    is_centre_ptr,  # (G, n) bool
    assignment_ptr,  # (G, n) int64 out: slot of the joined centre, -1 if none
    n,
    BLOCK_I: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    g, i, j = _row_block(BLOCK_I, BLOCK_N)
    i_ok = i < n
    centre_j = _flags(is_centre_ptr, g, j, n)
    tile = _distance_rows(d2_ptr, g, i, j, n)  # (BLOCK_I, BLOCK_N)
    to_centre = tl.where(centre_j[None, :], tile, float("inf"))
    nearest = tl.min(to_centre, axis=1)
    # First centre at the minimum (also when every distance is inf: the first centre, like argmin).
    hit = centre_j[None, :] & (to_centre == nearest[:, None])
    slot = tl.min(tl.where(hit, j[None, :], BLOCK_N), axis=1)
    centre_i = _flags(is_centre_ptr, g, i, n)
    slot = tl.where(centre_i, i, slot)  # a centre always joins itself
    valid = _flags(valid_ptr, g, i, n)
    m = tl.load(clusters_ptr + g)
    tl.store(assignment_ptr + g * n + i, tl.where(valid & (m > 0), slot, -1).to(tl.int64), mask=i_ok)


@triton.jit
def merge_kernel(
    x_ptr,  # (G, n, D) any float dtype
    is_centre_ptr,  # (G, n) bool
    assignment_ptr,  # (G, n) int64
    merged_ptr,  # (G, n, D) float32 out
    n,
    dim,
    beta,
    BLOCK_C: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    g = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # (BLOCK_C,) the slots this program writes
    j = tl.arange(0, BLOCK_N)
    c_ok = c < n
    j_ok = j < n
    centre_c = _flags(is_centre_ptr, g, c, n)
    centre_j = _flags(is_centre_ptr, g, j, n)
    assigned = tl.load(assignment_ptr + g * n + j, mask=j_ok, other=-1)
    joined = (assigned[None, :] == c[:, None]) & centre_c[:, None]  # (BLOCK_C, BLOCK_N) token j is in cluster c
    member = joined & ~centre_j[None, :]
    count = tl.sum(member.to(tl.int32), axis=1)  # (BLOCK_C,) non-centre members
    centre_w = tl.where(count > 0, beta, 1.0)  # an empty cluster keeps x_centre
    member_w = tl.div_rn(1.0 - beta, tl.maximum(count, 1).to(tl.float32))
    # The weighted one-hot matrix of the clusters: merged = W @ x in one IEEE float32 product per D chunk.
    weight = tl.where(member, member_w[:, None], tl.where(joined, centre_w[:, None], 0.0))  # (BLOCK_C, BLOCK_N)
    rows = (g * n + j).to(tl.int64) * dim
    for d0 in range(0, dim, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        d_ok = d < dim
        x = tl.load(x_ptr + rows[:, None] + d[None, :], mask=j_ok[:, None] & d_ok[None, :], other=0.0)
        out = tl.dot(weight, x.to(tl.float32), input_precision="ieee")  # (BLOCK_C, BLOCK_D)
        tl.store(merged_ptr + (g * n + c[:, None]).to(tl.int64) * dim + d[None, :], out, mask=c_ok[:, None] & d_ok[None, :])
