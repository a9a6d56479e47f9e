"""Python launchers of the Triton kernels of the HoliTom ops (the GPU form of each op contract).

``temporal_segment`` and ``density_peak_merge`` have exactly the signatures,
outputs and tie rules of the references in :mod:`holitom.plugins_trt.ops`;
``plan_inner_merge`` / ``apply_inner_merge`` mirror :mod:`holitom.merge.inner`.
The TensorRT plugins launch the same kernels; the torch merge path uses them
through :mod:`holitom.merge._device`: the outer merge's steps ``temporal_stage1``
and ``dpc_plan`` by default on CUDA tensors, the inner merge's ``inner_assign``
and ``inner_merge_rows`` only inside ``use_kernels()`` (on CUDA its torch code
is the default: measured 10x faster, see ``_device.KERNELS_ON_CUDA``).
Kernels live in ``triton_temporal.py``, ``triton_dpc.py``, ``triton_inner.py`` and ``triton_key_scores.py``
(the last vision layer's key scores, :func:`key_column_sums`, which the vision tower calls on CUDA).

Each op runs as ONE launch (:func:`temporal_segment_kernel`, :func:`density_peak_merge_kernel`,
re-exported here): the kernel a TensorRT AOT plugin compiles and launches, with the
parameters agreed in :data:`holitom.plugins_trt.trt_spec.AOT_KERNELS`; the launchers
below launch the same kernel with block sizes that fit the input. The torch merge
path's steps (``temporal_stage1``, ``dpc_plan``) launch the step kernels instead,
which share every algorithm step (a ``@triton.jit`` helper) with the one-launch kernels.

Design decisions:

- Where the temporal DP runs: on the device, in the op's one program
  (:func:`triton_temporal.temporal_segment_kernel`), for the ``TemporalSegment`` op. The
  DP is ``F`` dependent steps of a vector max over at most ``F`` window lengths
  (``F = 32``: 32 steps, a few microseconds in one program, with ``dp`` held in
  registers, so no barrier between steps), and the op's consumers are on the
  device: a TensorRT plugin's ``enqueue`` must stay asynchronous on its stream
  (a host round trip would need a stream sync inside ``enqueue`` and would break
  CUDA-graph capture), so a device DP removes the op's only sync. The torch
  merge path is different: its budgets, group sizes and output length are host
  integers, so it copies the ``(F, F)`` table to the host once anyway (the one
  documented sync of ``plan_outer_merge``) and runs the DP there on the copy
  (:func:`temporal_stage1` builds the table with the kernels, the host code of
  :mod:`holitom.merge.temporal` does the rest). This choice was not measured
  on a GPU (none was available when it was written); ``scripts/bench_kernels.py``
  times the one launch against the step kernels + copy + host DP.
- Precision: every kernel loads its inputs in their dtype (float32, float16,
  bfloat16) and accumulates in float32; divisions and square roots are
  IEEE-rounded (``div_rn``, ``sqrt_rn``); products that decide a tie (distances,
  the inner merge's similarities) are summed element by element in one fixed
  order, so equal inputs give bitwise-equal results wherever they sit in a
  tile (``tl.dot`` does not promise that); the DPC merge's weighted sum is
  float32 too (within the merged values' tolerance). Such a broadcast
  product is reduced over its last axis: Triton's combine pass rewrites
  ``sum(a[:, :, None] * b[None, :, :], axis=1)`` into a ``tt.dot`` with TF32
  inputs at large enough tiles (merged values off by ~5e-3 on an H200);
  ``tests/plugins_trt/test_kernels_compile.py`` refuses any ``tt.dot``. ``exp`` (the density) may differ from
  torch's by a few ulps on a GPU, so only decisions within a few ulps of a tie
  can differ from the reference; exact ties follow the contracts' rules.
- No host sync in any launcher: shapes and attributes are checked on the host
  metadata; value preconditions (``0 <= num_clusters[g] <=`` the group's valid
  count, finite inputs) are the caller's, as for a TensorRT plugin.
- :func:`_empty` allocates every output and scratch buffer (tests poison it so
  an element a kernel never writes fails the comparison), from torch's caching
  allocator; kernels launch on torch's current CUDA stream (a TensorRT plugin
  wraps its ``enqueue`` stream in ``torch.cuda.ExternalStream``).

Importing this module imports triton; ``import holitom`` and
``holitom.plugins_trt`` never do (the merge dispatch imports this module on
first use). Without a GPU the kernels run under ``TRITON_INTERPRET=1`` on CPU
tensors (that is how CI checks them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from holitom.errors import ConfigError, InputError, MissingDependencyError

try:
    import triton
except ImportError as exc:  # pragma: no cover - triton ships with CUDA builds of torch
    raise MissingDependencyError("triton", "the HoliTom merge kernels (GPU path)") from exc

from holitom.plugins_trt import triton_dpc, triton_inner, triton_key_scores, triton_temporal
from holitom.plugins_trt.triton_dpc import ROW_ELEMENTS as DPC_ROW_ELEMENTS
from holitom.plugins_trt.triton_dpc import density_peak_merge_kernel  # the ops' one-launch kernels (trt_spec.AOT_KERNELS)
from holitom.plugins_trt.triton_temporal import temporal_segment_kernel
from holitom.plugins_trt.ops import (
    DENSITY_PEAK_MERGE,
    DENSITY_PEAK_MERGE_CONTRACT,
    TEMPORAL_SEGMENT,
    TEMPORAL_SEGMENT_CONTRACT,
    _default,
)


def _empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Every output and scratch buffer of the launchers (one place, so tests can poison them)."""
    return torch.empty(shape, dtype=dtype, device=device)


@dataclass(frozen=True)
class _Tiles:
    """Block sizes of the launches (powers of two; every mask is per element, so any size is correct)."""

    positions: int  # similarity: positions per program
    frame_positions: int  # one-program temporal kernels: BLOCK_P of their (BLOCK_F, BLOCK_P) tiles
    hidden: int  # streaming reductions over the hidden size (similarity, kept norms)
    pair: int  # DPC distance tile BLOCK_I = BLOCK_J
    pair_hidden: int  # its BLOCK_D (the tile is BLOCK_I x BLOCK_J x BLOCK_D)
    row_elements: int  # DPC row tiles (BLOCK_I, BLOCK_N): at most this many elements
    dpc_hidden: int  # one-launch DPC kernel: BLOCK_D of its (rows, BLOCK_N, BLOCK_D) steps
    inner: int  # inner assignment tile BLOCK_M = BLOCK_K
    inner_hidden: int  # its BLOCK_D
    kept: int  # inner merge: kept tokens per program


# GPU: tiles that keep a program's registers in bounds (4 warps). CPU tensors can only run
# under Triton's interpreter, whose cost is per program and per op rather than per element,
# so it gets larger tiles (the interpreter tests still cross several blocks at P = 196).
_GPU_TILES = _Tiles(
    positions=16, frame_positions=64, hidden=64, pair=16, pair_hidden=32, row_elements=4096, dpc_hidden=32, inner=32, inner_hidden=8, kept=16
)
_INTERPRETER_TILES = _Tiles(
    positions=64, frame_positions=256, hidden=256, pair=64, pair_hidden=64, row_elements=8192, dpc_hidden=2, inner=128, inner_hidden=16, kept=128
)


def _tiles(x: torch.Tensor) -> _Tiles:
    return _GPU_TILES if x.is_cuda else _INTERPRETER_TILES


def _block(size: int, floor: int = 16) -> int:
    """A power-of-two block covering ``size`` (Triton tiles are powers of two)."""
    return max(floor, triton.next_power_of_2(max(size, 1)))


def _row_contiguous(x: torch.Tensor) -> torch.Tensor:
    return x if x.is_contiguous() else x.contiguous()


# --------------------------------------------------------------------------- TemporalSegment


def temporal_stage1(
    x: torch.Tensor, tau: float, max_window: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage I on the device: ``(similarity (F-1, P) f32, norms (F, P) f32, run_end (F, P) i64, table (F, F) i64)``.

    ``x`` is ``(F, P, D)`` in any float dtype; ``tau`` and ``max_window`` are
    already checked (``max_window`` None = unbounded). The step the torch merge
    path calls on CUDA (see :func:`holitom.merge.temporal._stage1_device`).
    """
    x = _row_contiguous(x)
    num_frames, num_pos, dim = x.shape
    device = x.device
    # One row even for a single frame: a CUDA launch may refuse the null pointer of an empty tensor.
    sim_rows = _empty((max(num_frames - 1, 1), num_pos), torch.float32, device)
    norms = _empty((num_frames, num_pos), torch.float32, device)
    run_end = _empty((num_frames, num_pos), torch.long, device)
    table = _empty((num_frames, num_frames), torch.long, device)
    from holitom.merge.temporal import COSINE_EPS

    tiles = _tiles(x)
    triton_temporal.similarity_kernel[(num_frames, triton.cdiv(num_pos, tiles.positions))](
        x, sim_rows, norms, num_frames, num_pos, dim, COSINE_EPS, BLOCK_P=tiles.positions, BLOCK_D=min(tiles.hidden, _block(dim))
    )
    triton_temporal.count_table_kernel[(1,)](
        sim_rows, run_end, table, num_frames, num_pos, float(tau), max_window or 0,
        BLOCK_P=min(tiles.frame_positions, _block(num_pos)), BLOCK_F=_block(num_frames),
    )
    return sim_rows[: num_frames - 1], norms, run_end, table


def temporal_segment(
    features,
    *,
    tau: float = _default(TEMPORAL_SEGMENT_CONTRACT, "tau"),
    max_window: int = _default(TEMPORAL_SEGMENT_CONTRACT, "max_window"),
    plugin_version: str | None = None,
    plugin_namespace: str | None = None,
):
    """``TemporalSegment`` on the device (similarity, table, DP, backtrack, static mask; no host sync).

    Returns ``(window_start (F,) int64, window_end (F,) int64, static_mask (F, P) bool)``
    on the features' device, like :func:`holitom.plugins_trt.ops.temporal_segment`.
    """
    from holitom.merge.temporal import check_features, check_max_window, check_tau

    check_features(features)
    tau = check_tau(tau)
    window = check_max_window(None if int(max_window) <= 0 else int(max_window))
    features = _row_contiguous(features)
    num_frames, num_pos, dim = features.shape
    device = features.device
    start = _empty((num_frames,), torch.long, device)
    end = _empty((num_frames,), torch.long, device)
    static = _empty((num_frames, num_pos), torch.bool, device)
    tiles = _tiles(features)
    triton_temporal.temporal_segment_kernel[(1,)](
        features, num_frames, num_pos, dim, start, end, static, TAU=tau, MAX_WINDOW=window or 0,
        BLOCK_F=_block(num_frames), BLOCK_P=min(tiles.frame_positions, _block(num_pos)), BLOCK_D=min(tiles.hidden, _block(dim)),
    )
    return start, end, static


# --------------------------------------------------------------------------- DensityPeakMerge


def _dpc_slots(
    tokens: torch.Tensor, valid: torch.Tensor, clusters: torch.Tensor, k_nn: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distances, centres and assignment of padded groups: ``(d2 (G, n, n), is_centre (G, n), assignment (G, n))``."""
    tokens = _row_contiguous(tokens)
    valid = _row_contiguous(valid)
    num_groups, n, dim = tokens.shape
    device = tokens.device
    d2 = _empty((num_groups, n, n), torch.float32, device)
    rho = _empty((num_groups, n), torch.float32, device)
    row_max = _empty((num_groups, n), torch.float32, device)
    gamma = _empty((num_groups, n), torch.float32, device)
    is_centre = _empty((num_groups, n), torch.bool, device)
    assignment = _empty((num_groups, n), torch.long, device)
    if num_groups == 0 or n == 0:
        return d2, is_centre, assignment
    tiles = _tiles(tokens)
    tile = tiles.pair
    triton_dpc.distance_kernel[(num_groups, triton.cdiv(n, tile), triton.cdiv(n, tile))](
        tokens, valid, d2, n, dim, BLOCK_I=tile, BLOCK_J=tile, BLOCK_D=min(tiles.pair_hidden, _block(dim))
    )
    block_n = _block(n)
    block_i = max(1, tiles.row_elements // block_n)  # a (BLOCK_I, BLOCK_N) tile of whole distance rows
    rows = (num_groups, triton.cdiv(n, block_i))
    triton_dpc.density_kernel[rows](d2, valid, clusters, rho, row_max, n, int(k_nn), BLOCK_I=block_i, BLOCK_N=block_n)
    triton_dpc.gamma_kernel[rows](d2, valid, rho, row_max, gamma, n, BLOCK_I=block_i, BLOCK_N=block_n)
    triton_dpc.centre_kernel[rows](gamma, valid, clusters, is_centre, n, BLOCK_I=block_i, BLOCK_N=block_n)
    triton_dpc.assign_kernel[rows](d2, valid, clusters, is_centre, assignment, n, BLOCK_I=block_i, BLOCK_N=block_n)
    return d2, is_centre, assignment


def _check_dpc_inputs(tokens, valid, num_clusters, k_nn: int, beta: float) -> None:
    from holitom.merge._checks import check_tensor
    from holitom.merge.dpc import _check_beta

    check_tensor("tokens", tokens, 3)
    check_tensor("valid", valid, 2, floating=False)
    check_tensor("num_clusters", num_clusters, 1, floating=False)
    if valid.dtype != torch.bool or tuple(valid.shape) != tuple(tokens.shape[:2]):
        raise InputError(f"valid must be bool of shape {tuple(tokens.shape[:2])}, got {valid.dtype} {tuple(valid.shape)}.")
    if num_clusters.dtype != torch.long or num_clusters.shape[0] != tokens.shape[0]:
        raise InputError(
            f"num_clusters must be int64 of shape ({tokens.shape[0]},) (one M per group), "
            f"got {num_clusters.dtype} {tuple(num_clusters.shape)}."
        )
    if valid.device != tokens.device or num_clusters.device != tokens.device:
        raise InputError(f"tokens, valid and num_clusters must share one device, got {tokens.device}, {valid.device}, {num_clusters.device}.")
    if isinstance(k_nn, bool) or not isinstance(k_nn, int) or k_nn < 1:
        raise ConfigError(f"k_nn must be an integer >= 1, got {k_nn!r}.")
    _check_beta(beta)


def density_peak_merge(
    tokens,
    valid,
    num_clusters,
    *,
    k_nn: int = _default(DENSITY_PEAK_MERGE_CONTRACT, "k_nn"),
    beta: float = _default(DENSITY_PEAK_MERGE_CONTRACT, "beta"),
    plugin_version: str | None = None,
    plugin_namespace: str | None = None,
):
    """``DensityPeakMerge`` on the device (no host sync; ``num_clusters`` stays on the device).

    Returns ``(merged (G, n, D) float32, is_centre (G, n) bool, assignment (G, n) int64)``,
    like :func:`holitom.plugins_trt.ops.density_peak_merge`. Precondition (not
    checked, it would need a sync): ``0 <= num_clusters[g] <=`` valid slots of group g.
    """
    k_nn = int(k_nn)
    beta = float(beta)
    _check_dpc_inputs(tokens, valid, num_clusters, k_nn, beta)
    tokens = _row_contiguous(tokens)
    num_groups, n, dim = tokens.shape
    merged = _empty((num_groups, n, dim), torch.float32, tokens.device)
    is_centre = _empty((num_groups, n), torch.bool, tokens.device)
    assignment = _empty((num_groups, n), torch.long, tokens.device)
    if num_groups and n:
        block_n = _block(n)
        # The kernel walks rows in chunks of ROW_ELEMENTS // (BLOCK_N * BLOCK_D) (>= 1) slots.
        block_d = min(_tiles(tokens).dpc_hidden, _block(dim, floor=1), DPC_ROW_ELEMENTS.value // block_n)
        triton_dpc.density_peak_merge_kernel[(num_groups,)](
            tokens, valid, num_clusters, num_groups, n, dim, merged, is_centre, assignment,
            K_NN=k_nn, BETA=beta, BLOCK_N=block_n, BLOCK_D=block_d,
        )
    return merged, is_centre, assignment


def dpc_plan(x: torch.Tensor, valid: torch.Tensor, num_clusters: list[int], k_nn: int):
    """The :class:`~holitom.merge.dpc.DPCPlan` of padded groups from the kernels, and the ``(G, n, n)`` distances.

    The step :func:`holitom.merge.dpc._dpc_core` calls on CUDA: ``num_clusters``
    is the host list it already holds (so ``M_max`` needs no sync); the
    kernels' slot form (``is_centre``, ``assignment``) is turned into the
    plan's cluster form with cumulative sums and scatters on the device.
    """
    from holitom.merge.dpc import DPCPlan

    num_groups, n, _ = x.shape
    device = x.device
    m = torch.tensor(list(num_clusters), dtype=torch.long).to(device)  # (G,)
    m_max = max(num_clusters)
    d2, is_centre, slot = _dpc_slots(x, valid, m, k_nn)
    cluster_of_slot = is_centre.long().cumsum(1) - 1  # (G, n) centres are numbered in slot order
    centres = torch.zeros((num_groups, m_max + 1), dtype=torch.long, device=device)
    index = torch.where(is_centre, cluster_of_slot, m_max)  # non-centres go to a dummy column
    centres.scatter_(1, index, torch.arange(n, device=device).expand(num_groups, n))
    centres = centres[:, :m_max]
    centre_valid = torch.arange(m_max, device=device)[None, :] < m[:, None]  # (G, M_max)
    centres = torch.where(centre_valid, centres, 0)
    assign = torch.where(slot >= 0, cluster_of_slot.gather(1, slot.clamp_min(0)), -1)  # (G, n)
    member = (assign >= 0) & ~is_centre
    member_count = torch.zeros((num_groups, m_max + 1), dtype=torch.long, device=device)
    member_count.scatter_add_(1, torch.where(member, assign, m_max), member.long())
    plan = DPCPlan(centres, assign, centre_valid, is_centre, member_count[:, :m_max])
    return plan, d2


# --------------------------------------------------------------------------- inner merge


def inner_assign(hidden_visual: torch.Tensor, keep: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
    """``(L_v - k,)`` int64: the index into ``keep`` of each dropped token's most similar kept token."""
    from holitom.merge.temporal import COSINE_EPS

    h = hidden_visual if hidden_visual.stride(-1) == 1 else hidden_visual.contiguous()
    num_keep, num_dropped = keep.shape[0], dropped.shape[0]
    dim = h.shape[1]
    device = h.device
    assign = _empty((num_dropped,), torch.long, device)
    if num_keep == 0 or num_dropped == 0:
        return assign.zero_()
    norms = _empty((num_keep,), torch.float32, device)
    tiles = _tiles(h)
    triton_inner.kept_norm_kernel[(triton.cdiv(num_keep, 16),)](
        h, keep, norms, num_keep, dim, h.stride(0), COSINE_EPS, BLOCK_K=16, BLOCK_D=min(tiles.hidden, _block(dim))
    )
    block = tiles.inner
    triton_inner.assign_kernel[(triton.cdiv(num_dropped, block),)](
        h, keep, dropped, norms, assign, num_keep, num_dropped, dim, h.stride(0),
        BLOCK_M=block, BLOCK_K=block, BLOCK_D=min(tiles.inner_hidden, _block(dim)),
    )
    return assign


def inner_merge_rows(visual: torch.Tensor, plan, mode: str) -> torch.Tensor:
    """``(k, D)`` float32 merged kept tokens of ``visual`` ``(L_v, D)`` (the span's hidden states).

    Members of each kept token are grouped by a stable sort of the assignment
    (``plan.dropped`` is ascending, so each group stays in index order, the
    order the sequential average folds them in).
    """
    from holitom.merge.config import INNER_MODES

    if mode not in INNER_MODES:
        raise ConfigError(f"inner merge mode must be one of {list(INNER_MODES)}, got {mode!r}.")
    h = visual if visual.stride(-1) == 1 else visual.contiguous()
    num_keep, dim = plan.num_keep, h.shape[1]
    device = h.device
    out = _empty((num_keep, dim), torch.float32, device)
    if num_keep == 0 or dim == 0:
        return out
    by_kept = torch.sort(plan.assign, stable=True)
    members = plan.dropped.index_select(0, by_kept.indices)  # (L_v - k,) grouped by kept token
    if members.numel() == 0:  # never read (every count is 0), but a CUDA launch wants a real pointer
        members = plan.dropped.new_zeros(1)
    counts = torch.zeros(num_keep, dtype=torch.long, device=device).scatter_add_(0, plan.assign, torch.ones_like(plan.assign))
    offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])  # (k + 1,)
    block_d = min(128, _block(dim))
    block_j = _tiles(h).kept
    triton_inner.merge_kernel[(triton.cdiv(num_keep, block_j), triton.cdiv(dim, block_d))](
        h, plan.keep, members, offsets, out, num_keep, dim, h.stride(0), out.stride(0),
        SEQUENTIAL=mode == "sequential", BLOCK_J=block_j, BLOCK_D=block_d,
    )
    return out


def plan_inner_merge(scores, hidden_visual, ratio, *, validate: bool = True):
    """:func:`holitom.merge.inner.plan_inner_merge` with the similarity assignment on the kernels."""
    from holitom.merge import inner
    from holitom.merge._device import use_kernels

    with use_kernels():
        return inner.plan_inner_merge(scores, hidden_visual, ratio, validate=validate)


def apply_inner_merge(hidden, visual_span, plan, mode: str = "sequential"):
    """:func:`holitom.merge.inner.apply_inner_merge` with the (sequential or mean) averaging on the kernels."""
    from holitom.merge import inner
    from holitom.merge._device import use_kernels

    with use_kernels():
        return inner.apply_inner_merge(hidden, visual_span, plan, mode)


# --------------------------------------------------------------------------- vision key scores


@dataclass(frozen=True)
class KeyScoreLaunch:
    """Tiles and product modes of :func:`key_column_sums`; ``scripts/bench_key_scores.py --sweep`` times the choices.

    ``upcast_16bit``: multiply 16-bit tiles as float32 in TF32 (exact too) rather than natively. Off CUDA the
    launcher upcasts anyway (Triton's CPU interpreter multiplies bfloat16 tiles wrongly, triton 3.8), so the
    interpreted tests check the upcast form; the CUDA tests run every mode. ``float32_products``: tl.dot's
    input_precision for float32 inputs ("ieee" or "tf32x3": float32-accurate; plain "tf32" is not).

    ``split_head_dim``: multiply a head size that is not a power of two in two products, the largest power of
    two below it and the rest padded (72 = 64 + 16 columns), instead of one product padded to the next power
    of two (128).

    Defaults from the sweep on an H200 (triton 3.6, 32 frames x 16 heads x 729 patches, 72-wide heads, every
    configuration within the tests' tolerance of float64): bfloat16 0.51 ms native at 64 x 128 tiles, 4 warps,
    3 stages (upcast: 0.71 ms; the first 64 x 64 upcast form 1.14 ms); float32 1.46 ms with tf32x3 products
    (IEEE products: 64-112 ms, no tensor cores). Split heads, a second sweep (bfloat16, native products, one
    run): 0.46 ms against 0.48 ms padded at the default tiles, and faster at each of the six tiles swept
    (0.46-0.60 ms against 0.48-0.91 ms).
    """

    block_q: int = 64
    block_k: int = 128
    num_warps: int = 4
    num_stages: int = 3
    upcast_16bit: bool = False
    float32_products: str = "tf32x3"
    split_head_dim: bool = True


def key_column_sums(
    q: torch.Tensor, k: torch.Tensor, neg_lse2: torch.Tensor, scale_log2: float, launch: KeyScoreLaunch = KeyScoreLaunch()
) -> torch.Tensor:
    """``sum_i exp2(q_i . k_j * scale_log2 + neg_lse2_i)`` per (frame x head) row and key: ``(R, N)`` float32.

    ``q, k (F, H, N, hd)`` (R = F x H) or ``(R, N, hd)``, in one float dtype and in any
    layout whose head axis is contiguous (the attention's transposed views are read in
    place, not copied); ``neg_lse2 (R, N)`` float32, minus each query's log-sum-exp of its
    logits in base 2, so the sum is the probability mass each key receives. Launches on
    torch's current stream; no host sync.
    """
    q4, k4 = (_heads_view(t) for t in (q, k))  # (F, H, N, hd), unit stride on hd
    frames, heads, n, head_dim = q4.shape
    rows = frames * heads
    lsec = _row_contiguous(neg_lse2.float()).view(rows, n)  # (R, N)
    out = _empty((rows, n), torch.float32, q.device)  # (R, N)
    is_float32 = q.dtype == torch.float32
    # head_dim padded to a power of two (SigLIP's 72 -> 128), or split: the largest power of two below it
    # and the rest padded (72 -> 64 + 16).
    block_d = _block(head_dim)
    if launch.split_head_dim and block_d > max(16, head_dim):
        block_d //= 2
    rest = _block(head_dim - block_d) if head_dim > block_d else 16
    grid = (rows, triton.cdiv(n, launch.block_k))
    triton_key_scores.key_column_sums_kernel[grid](
        q4, k4, lsec, out, n, head_dim, heads, *q4.stride()[:3], *k4.stride()[:3], scale_log2,
        BLOCK_Q=launch.block_q, BLOCK_K=launch.block_k, BLOCK_D=block_d, BLOCK_DR=rest, SPLIT=head_dim > block_d,
        UPCAST=not is_float32 and (launch.upcast_16bit or not q.is_cuda),
        PRECISION=launch.float32_products if is_float32 else "tf32",
        num_warps=launch.num_warps, num_stages=launch.num_stages,
    )
    return out


def _heads_view(x: torch.Tensor) -> torch.Tensor:
    """``(F, H, N, hd)`` or ``(R, N, hd)`` as a 4-D view ``(F, H, N, hd)`` whose last axis has unit stride."""
    x4 = x[:, None] if x.dim() == 3 else x  # (R, 1, N, hd): a view
    return x4 if x4.stride(-1) == 1 else x4.contiguous()


# The kernel form of each custom op, keyed like holitom.plugins_trt.ops.REFERENCE_OPS (same signatures).
KERNEL_OPS = {
    TEMPORAL_SEGMENT: temporal_segment,
    DENSITY_PEAK_MERGE: density_peak_merge,
}


__all__ = [
    "KERNEL_OPS",
    "density_peak_merge_kernel",
    "temporal_segment_kernel",
    "apply_inner_merge",
    "density_peak_merge",
    "dpc_plan",
    "inner_assign",
    "inner_merge_rows",
    "KeyScoreLaunch",
    "key_column_sums",
    "plan_inner_merge",
    "temporal_segment",
    "temporal_stage1",
]
