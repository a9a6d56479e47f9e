"""Triton kernels of ``DensityPeakMerge`` (DPC-KNN and its merge, DESIGN.md section 2, stage II).

Every kernel works on padded groups ``(G, n, ...)``; rows are ``(BLOCK_I, BLOCK_N)``
tiles with ``BLOCK_N >= n`` (a whole row of the distance matrix in registers), so the
per-row steps need no cross-program reduction. Each step is one ``@triton.jit``
helper on such rows:

1. :func:`_distance_tile` -- ``d2[i, j] = sum_d (x_i - x_j)^2 / D`` accumulated in
   float32 over ``BLOCK_D`` chunks; ``+inf`` in every row and column of an invalid slot.
2. :func:`_density_rows` -- ``rho_i = exp(-mean of the k smallest d2 of row i)``
   (self included at 0) by k rounds of "take the row minimum, strike its first
   occurrence", summed smallest first like the reference's sorted cumulative
   sum; also each row's largest valid distance.
3. :func:`_gamma_rows` -- ``delta_i`` (nearest denser token; lower slot denser
   on equal rho) and ``gamma = rho * delta``.
4. :func:`_centre_rows` -- ``rank_i = #{j ahead of i by gamma, lower slot first
   on ties}``; centre iff ``rank_i < M``.
5. :func:`_assign_rows` -- nearest centre (lower slot on equal distance), a
   centre joins itself.
6. :func:`_merge_weights` -- a centre's slot gets ``beta * x_c + sum over members of
   (1 - beta) / count * x_i`` (``x_c`` alone without members), every other slot zeros:
   the weights of the clusters' one-hot matrix.

Kernels:

- :func:`density_peak_merge_kernel` -- the whole op in ONE launch, one program per
  group (the form a TensorRT AOT plugin launches,
  :data:`holitom.plugins_trt.trt_spec.AOT_KERNELS`; the Python launcher of the op uses
  it too). It holds no scratch memory: each step walks the group's rows in chunks and
  keeps the per-slot results (rho, gamma, centres, assignment) as ``(BLOCK_N,)``
  vectors in registers; the distance rows are recomputed for the steps that read them
  (density, delta, assignment) instead of being stored.
- :func:`distance_kernel`, :func:`density_kernel`, :func:`gamma_kernel`,
  :func:`centre_kernel`, :func:`assign_kernel` -- the same steps as separate launches
  over a stored ``(G, n, n)`` distance tensor, for the torch merge path on CUDA, which
  needs the distances and the plan (:func:`holitom.plugins_trt.kernels.dpc_plan`).

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

# Elements of the one-launch kernel's (ROWS, BLOCK_N, BLOCK_D) steps: ROWS = this // (BLOCK_N * BLOCK_D).
ROW_ELEMENTS = tl.constexpr(16384)


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
def _distance_tile(x_ptr, valid_ptr, g, i, j, n, dim, BLOCK_D: tl.constexpr):
    """``(BLOCK_I, BLOCK_J)`` float32 squared distances over D of rows i and columns j of group g; ``+inf`` off the valid slots."""
    i_ok = i < n
    j_ok = j < n
    base = g * n * dim
    acc = tl.zeros([i.shape[0], j.shape[0]], dtype=tl.float32)
    for d0 in range(0, dim, BLOCK_D):
        d = d0 + tl.arange(0, BLOCK_D)
        d_ok = d < dim
        xi = tl.load(x_ptr + base + i[:, None].to(tl.int64) * dim + d[None, :], mask=i_ok[:, None] & d_ok[None, :], other=0.0)
        xj = tl.load(x_ptr + base + j[:, None].to(tl.int64) * dim + d[None, :], mask=j_ok[:, None] & d_ok[None, :], other=0.0)
        diff = xi.to(tl.float32)[:, None, :] - xj.to(tl.float32)[None, :, :]  # (BLOCK_I, BLOCK_J, BLOCK_D)
        acc += tl.sum(diff * diff, axis=2)
    # The flags are loaded here rather than passed in: a column-flag vector loaded once before the one-launch
    # kernel's row loops and broadcast in them broke triton 3.6's TritonGPURemoveLayoutConversions at
    # BLOCK_N = 256, BLOCK_D = 4 ("operand #0 does not dominate this use"); triton 3.8 compiled either form.
    pair_ok = _flags(valid_ptr, g, i, n)[:, None] & _flags(valid_ptr, g, j, n)[None, :]  # (BLOCK_I, BLOCK_J)
    return tl.where(pair_ok, tl.div_rn(acc, dim.to(tl.float32)), float("inf"))


@triton.jit
def _density_rows(tile, j, m, k_nn, valid_i, BLOCK_N: tl.constexpr):
    """``(rho (BLOCK_I,), row_max (BLOCK_I,))`` of distance rows ``tile``: rho -1 at invalid rows (never denser)."""
    finite = tile < float("inf")
    row_max = tl.max(tl.where(finite, tile, 0.0), axis=1)  # largest valid distance of each row, 0 if none
    k = tl.maximum(tl.minimum(m, k_nn), 1).to(tl.int32)  # the contract's k = max(min(k_nn, M), 1)
    total = tl.zeros([tile.shape[0]], dtype=tl.float32)
    for _ in range(0, k):
        low = tl.min(tile, axis=1)  # (BLOCK_I,) next smallest distance
        total += low
        first = tl.min(tl.where(tile == low[:, None], j[None, :], BLOCK_N), axis=1)
        tile = tl.where(j[None, :] == first[:, None], float("inf"), tile)  # strike one occurrence only
    rho = tl.exp(-tl.div_rn(total, k.to(tl.float32)))
    return tl.where(valid_i, rho, -1.0), row_max


@triton.jit
def _gamma_rows(tile, i, j, rho_i, rho_j, group_max, valid_i):
    """``(BLOCK_I,)`` gamma = rho * delta (-1 at invalid rows); ``rho_j`` is below -1 on padding lanes."""
    denser = (rho_j[None, :] > rho_i[:, None]) | ((rho_j[None, :] == rho_i[:, None]) & (j[None, :] < i[:, None]))
    delta2 = tl.min(tl.where(denser, tile, float("inf")), axis=1)  # (BLOCK_I,)
    delta2 = tl.where(delta2 == float("inf"), group_max, delta2)  # the densest token
    return tl.where(valid_i, rho_i * tl.sqrt_rn(delta2), -1.0)


@triton.jit
def _centre_rows(gamma_i, gamma_j, i, j, m, valid_i):
    """``(BLOCK_I,)`` bool: row i is among the top M by gamma; ``gamma_j`` is below -1 on padding lanes."""
    ahead = (gamma_j[None, :] > gamma_i[:, None]) | ((gamma_j[None, :] == gamma_i[:, None]) & (j[None, :] < i[:, None]))
    rank = tl.sum(ahead.to(tl.int32), axis=1)  # (BLOCK_I,) place in the stable descending order
    return valid_i & (rank < m)


@triton.jit
def _assign_rows(tile, i, j, centre_i, centre_j, valid_i, m, BLOCK_N: tl.constexpr):
    """``(BLOCK_I,)`` int64: slot of the centre each row joins, -1 for invalid rows or M = 0."""
    to_centre = tl.where(centre_j[None, :], tile, float("inf"))
    nearest = tl.min(to_centre, axis=1)
    # First centre at the minimum (also when every distance is inf: the first centre, like argmin).
    hit = centre_j[None, :] & (to_centre == nearest[:, None])
    slot = tl.min(tl.where(hit, j[None, :], BLOCK_N), axis=1)
    slot = tl.where(centre_i, i, slot)  # a centre always joins itself
    return tl.where(valid_i & (m > 0), slot, -1).to(tl.int64)


@triton.jit
def _merge_weights(c, j, centre_c, centre_j, assigned_j, beta):
    """``(BLOCK_C, BLOCK_N)`` float32: weight of token j in the merged token of slot c (zero rows for non-centres)."""
    joined = (assigned_j[None, :] == c[:, None]) & centre_c[:, None]  # token j is in cluster c
    member = joined & ~centre_j[None, :]
    count = tl.sum(member.to(tl.int32), axis=1)  # (BLOCK_C,) non-centre members
    centre_w = tl.where(count > 0, beta, 1.0)  # an empty cluster keeps x_centre
    member_w = tl.div_rn(1.0 - beta, tl.maximum(count, 1).to(tl.float32))
    return tl.where(member, member_w[:, None], tl.where(joined, centre_w[:, None], 0.0))


@triton.jit
def _pick(values, j, i):
    """``values[i]`` ``(BLOCK_I,)`` of a ``(BLOCK_N,)`` register vector (one lane each, so the sum is exact)."""
    return tl.sum(tl.where(j[None, :] == i[:, None], values[None, :], 0), axis=1)


@triton.jit
def _put(values, j, i, rows, n):
    """``values`` ``(BLOCK_N,)`` with lanes ``i < n`` set to ``rows`` ``(BLOCK_I,)``."""
    hit = (j[None, :] == i[:, None]) & (i < n)[:, None]  # (BLOCK_I, BLOCK_N)
    picked = tl.sum(tl.where(hit, rows[:, None], 0), axis=0)
    return tl.where(tl.sum(hit.to(tl.int32), axis=0) > 0, picked.to(values.dtype), values)


@triton.jit
def density_peak_merge_kernel(
    tokens_ptr,  # (G, n, D) any float dtype, contiguous
    valid_ptr,  # (G, n) bool
    num_clusters_ptr,  # (G,) int64 M
    groups,  # G: the launch grid
    slots,  # n <= BLOCK_N
    hidden,  # D
    merged_ptr,  # (G, n, D) float32 out
    is_centre_ptr,  # (G, n) bool out
    assignment_ptr,  # (G, n) int64 out
    K_NN: tl.constexpr,
    BETA: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """The whole ``DensityPeakMerge`` op for group ``program_id(0)``, in row chunks of ``ROWS`` slots."""
    ROWS: tl.constexpr = ROW_ELEMENTS // (BLOCK_N * BLOCK_D)  # a (ROWS, BLOCK_N, BLOCK_D) distance step
    g = tl.program_id(0).to(tl.int64)
    j = tl.arange(0, BLOCK_N)
    m = tl.load(num_clusters_ptr + g)
    # Density and each row's largest distance (the densest token's delta is the group's largest).
    rho = tl.full([BLOCK_N], -2.0, dtype=tl.float32)  # padding lanes below every slot (invalid: -1)
    group_max = tl.zeros([ROWS], dtype=tl.float32)
    for r0 in range(0, slots, ROWS):
        i = r0 + tl.arange(0, ROWS)
        valid_i = _flags(valid_ptr, g, i, slots)
        tile = _distance_tile(tokens_ptr, valid_ptr, g, i, j, slots, hidden, BLOCK_D)  # (ROWS, BLOCK_N)
        rho_i, row_max = _density_rows(tile, j, m, K_NN, valid_i, BLOCK_N)
        rho = _put(rho, j, i, rho_i, slots)
        group_max = tl.maximum(group_max, row_max)
    group_max_all = tl.max(group_max, axis=0)
    gamma = tl.full([BLOCK_N], -2.0, dtype=tl.float32)
    for r0 in range(0, slots, ROWS):
        i = r0 + tl.arange(0, ROWS)
        valid_i = _flags(valid_ptr, g, i, slots)
        tile = _distance_tile(tokens_ptr, valid_ptr, g, i, j, slots, hidden, BLOCK_D)
        gamma_i = _gamma_rows(tile, i, j, _pick(rho, j, i), rho, group_max_all, valid_i)
        gamma = _put(gamma, j, i, gamma_i, slots)
    centre = tl.zeros([BLOCK_N], dtype=tl.int32)
    for r0 in range(0, slots, ROWS):
        i = r0 + tl.arange(0, ROWS)
        centre_i = _centre_rows(_pick(gamma, j, i), gamma, i, j, m, _flags(valid_ptr, g, i, slots))
        centre = _put(centre, j, i, centre_i.to(tl.int32), slots)
        tl.store(is_centre_ptr + g * slots + i, centre_i, mask=i < slots)
    is_centre = centre != 0
    assignment = tl.full([BLOCK_N], -1, dtype=tl.int64)
    for r0 in range(0, slots, ROWS):
        i = r0 + tl.arange(0, ROWS)
        valid_i = _flags(valid_ptr, g, i, slots)
        tile = _distance_tile(tokens_ptr, valid_ptr, g, i, j, slots, hidden, BLOCK_D)
        slot = _assign_rows(tile, i, j, _pick(centre, j, i) != 0, is_centre, valid_i, m, BLOCK_N)
        assignment = _put(assignment, j, i, slot, slots)
        tl.store(assignment_ptr + g * slots + i, slot, mask=i < slots)
    # merged = W @ x, W the clusters' weighted one-hot matrix, ROWS output slots at a time.
    rows = (g * slots + j).to(tl.int64) * hidden
    for r0 in range(0, slots, ROWS):
        c = r0 + tl.arange(0, ROWS)
        weight = _merge_weights(c, j, _pick(centre, j, c) != 0, is_centre, assignment, BETA)  # (ROWS, BLOCK_N)
        for d0 in range(0, hidden, BLOCK_D):
            d = d0 + tl.arange(0, BLOCK_D)
            d_ok = d < hidden
            # x transposed, (BLOCK_D, BLOCK_N), so the sum runs over the last axis: Triton's combine pass rewrites
            # sum(w[:, :, None] * x[None, :, :], axis=1) into tt.dot, which rounds float32 inputs to TF32 (10-bit
            # mantissa: merged values off by ~5e-3 on an H200 at ROWS = BLOCK_D = 16, BLOCK_N = 64; not at smaller ROWS).
            xt = tl.load(tokens_ptr + rows[None, :] + d[:, None], mask=d_ok[:, None] & (assignment >= 0)[None, :], other=0.0)  # joined tokens only
            out = tl.sum(weight[:, None, :] * xt.to(tl.float32)[None, :, :], axis=2)  # (ROWS, BLOCK_D)
            tl.store(merged_ptr + (g * slots + c[:, None]).to(tl.int64) * hidden + d[None, :], out, mask=(c < slots)[:, None] & d_ok[None, :])


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
    d2 = _distance_tile(x_ptr, valid_ptr, g, i, j, n, dim, BLOCK_D)
    tl.store(d2_ptr + g * n * n + i[:, None].to(tl.int64) * n + j[None, :], d2, mask=(i < n)[:, None] & (j < n)[None, :])


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
    rho, row_max = _density_rows(tile, j, tl.load(clusters_ptr + g), k_nn, _flags(valid_ptr, g, i, n), BLOCK_N)
    tl.store(row_max_ptr + g * n + i, row_max, mask=i_ok)
    tl.store(rho_ptr + g * n + i, rho, mask=i_ok)


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
    group_max = tl.max(tl.load(row_max_ptr + g * n + j, mask=j_ok, other=0.0), axis=0)
    gamma = _gamma_rows(tile, i, j, rho_i, rho_j, group_max, _flags(valid_ptr, g, i, n))
    tl.store(gamma_ptr + g * n + i, gamma, mask=i_ok)


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
    centre = _centre_rows(gamma_i, gamma_j, i, j, tl.load(clusters_ptr + g), _flags(valid_ptr, g, i, n))
    tl.store(is_centre_ptr + g * n + i, centre, mask=i_ok)


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
    tile = _distance_rows(d2_ptr, g, i, j, n)  # (BLOCK_I, BLOCK_N)
    slot = _assign_rows(
        tile, i, j, _flags(is_centre_ptr, g, i, n), _flags(is_centre_ptr, g, j, n), _flags(valid_ptr, g, i, n),
        tl.load(clusters_ptr + g), BLOCK_N,
    )
    tl.store(assignment_ptr + g * n + i, slot, mask=i < n)
