"""Stage I of HoliTom: global temporal segmentation (DESIGN.md section 2).

Pipeline, as pure functions (each usable and testable alone):

1. :func:`frame_similarity` -- ``s[t, p] = cos(X[t, p], X[t+1, p])``, ``(F-1, P)``.
2. :func:`static_count_table` -- ``C[a, e] = (e - a) * n(a, e)``, ``(F, F)`` int64,
   where ``n(a, e)`` counts the positions whose similarity stays ``> tau`` over
   every consecutive pair of frames ``a..e``.
3. :func:`segment_frames` -- the dynamic program over frames and its backtrack.
4. :func:`plan_temporal` -- all of the above plus the static mask: a
   :class:`TemporalPlan`.

How the table is built without an ``(F, F, P)`` tensor: for a start frame ``a``
and position ``p`` let ``run_end[a, p]`` be the last frame ``e`` such that
``[a, e]`` is static at ``p`` (the first ``t >= a`` with ``s[t, p] <= tau``, found
by a reversed cumulative minimum). Then ``n(a, e) = #{p : run_end[a, p] >= e}``, a
suffix sum of a per-row histogram: ``O(F * P + F^2)`` work instead of the
``O(F^2 * P)`` prefix products of DESIGN.md, with identical results.

The DP itself (``O(F^2)`` scalar steps) runs on the host: the table is built on
the features' device and copied to the host ONCE; that copy is the stage's one
deliberate device sync.

Tie rules (the DP optimum is not always unique): a frame closes a single-frame
window unless some longer window gives *strictly* more removed tokens, and among
window lengths with equal totals the shortest wins. This matches the official
implementation's strict ``>`` scan over increasing window sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from holitom.errors import ConfigError, InputError
from holitom.merge._checks import check_tensor, raise_non_finite
from holitom.merge._device import kernels_for

# Norms below this count as this value in the cosine (a zero feature is
# "dissimilar to everything": cosine 0), the same guard torch's cosine_similarity uses.
COSINE_EPS = 1e-8


@dataclass(frozen=True, eq=False)
class TemporalPlan:
    """Result of stage I for one video.

    Attributes:
        windows: ``(num_windows, 2)`` int64 on the CPU, inclusive ``[start, end]``
            frame ranges covering ``0..F-1`` in order (host metadata: the DP ran
            there).
        static: ``(F, P)`` bool on the features' device; True at every frame of a
            multi-frame window for the positions static in that window.
        removed: ``R_total``, the tokens the static averaging removes (DP optimum).
        static_counts: ``n(a, e)`` of each window (0 for single-frame windows).
        similarity: ``(F-1, P)`` float32 consecutive-frame cosine similarity.
        table: ``(F, F)`` int64 CPU copy of ``C[a, e]`` the DP ran on.
    """

    windows: torch.Tensor
    static: torch.Tensor
    removed: int
    static_counts: tuple[int, ...]
    similarity: torch.Tensor
    table: torch.Tensor

    @property
    def num_frames(self) -> int:
        return int(self.static.shape[0])

    @property
    def num_windows(self) -> int:
        return int(self.windows.shape[0])

    def frame_windows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(start, end)`` of the window holding each frame, two ``(F,)`` int64 CPU tensors."""
        lengths = self.windows[:, 1] - self.windows[:, 0] + 1
        return (
            torch.repeat_interleave(self.windows[:, 0], lengths),
            torch.repeat_interleave(self.windows[:, 1], lengths),
        )


# --------------------------------------------------------------------------- checks


def check_tau(tau: float) -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not -1.0 <= float(tau) <= 1.0:
        raise ConfigError(f"tau must be a real number in [-1, 1] (a cosine similarity), got {tau!r}.")
    return float(tau)


def check_max_window(max_window: int | None) -> int | None:
    if max_window is None:
        return None
    if isinstance(max_window, bool) or not isinstance(max_window, int) or max_window < 1:
        raise ConfigError(f"max_window must be an integer >= 1 (frames) or None (unbounded), got {max_window!r}.")
    return int(max_window)


# --------------------------------------------------------------------------- step 1


def _similarity_and_norms(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarity of consecutive frames plus the token norms (for the finiteness check).

    ``x`` is float32 ``(F, P, D)``. Memory-bound, so each token is read from
    memory once for both its norm and its dot product with the next frame: one
    batched matmul ``x[t, p] (1, D) @ [x[t, p]; x[t+1, p]]^T (D, 2)``, whose
    right operand is a strided view of ``x`` (no copy) whose first column is
    still in cache from the left operand. Measured on 2 CPU cores at F=32,
    P=196, D=3584 (scripts/bench_merge.py): 4.8 ms, against 6.9 ms for a
    matmul of dots plus ``vector_norm`` and 29 ms for ``linalg.vecdot`` (a
    multiply into a temporary, then a sum). Keep the ``.mT`` of a ``(2, D)``
    view: written as ``x[1:].unsqueeze(-1)`` the product misses the GEMM kernel
    and is as slow as vecdot.
    """
    x = x.contiguous()
    num_frames, num_pos, dim = x.shape
    pairs = max(num_frames - 1, 0)
    rows = x.unsqueeze(-2)[:pairs]  # (F-1, P, 1, D)
    # [t, p, 0] is x[t, p], [t, p, 1] is x[t+1, p]: frame stride P*D, position stride D.
    both = x.as_strided((pairs, num_pos, 2, dim), (num_pos * dim, dim, num_pos * dim, 1), x.storage_offset())
    products = torch.matmul(rows, both.mT)[:, :, 0]  # (F-1, P, 2): |x_t|^2, x_t . x_{t+1}
    dots = products[..., 1]  # (F-1, P)
    last = torch.linalg.vector_norm(x[num_frames - 1 :], dim=-1)  # (1, P); the first frame's when F = 1
    norms = torch.cat([products[..., 0].sqrt(), last])  # (F, P)
    safe = norms.clamp_min(COSINE_EPS)
    sim = dots / (safe[:-1] * safe[1:])
    # Rounding can push |cos| a hair past 1; clamping keeps "tau = 1 => nothing static" exact.
    return sim.clamp_(-1.0, 1.0), norms


def frame_similarity(features: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each position between consecutive frames.

    ``s[t, p] = <X[t,p], X[t+1,p]> / (max(|X[t,p]|, eps) * max(|X[t+1,p]|, eps))``
    with ``eps = 1e-8``, accumulated in float32 and clamped to ``[-1, 1]``.

    Args:
        features: ``(F, P, D)`` float32 / float16 / bfloat16.

    Returns:
        ``(F-1, P)`` float32 (``(0, P)`` for a single frame).
    """
    check_tensor("features", features, 3)
    sim, _ = _similarity_and_norms(features.float())
    return sim


# --------------------------------------------------------------------------- step 2


def _run_end(similarity: torch.Tensor, tau: float) -> torch.Tensor:
    """``(F, P)`` int64: the last frame e such that window [a, e] is static at p, for each start a."""
    num_pairs, num_pos = similarity.shape
    num_frames = num_pairs + 1
    frames = torch.arange(num_pairs, device=similarity.device)[:, None]  # (F-1, 1)
    # A "break" at t means frames t and t+1 differ; no break after a means static to the end.
    breaks = torch.where(similarity > tau, num_frames - 1, frames)  # (F-1, P)
    first_break = breaks.flip(0).cummin(0).values.flip(0)  # (F-1, P) first break at or after a
    last = torch.full((1, num_pos), num_frames - 1, dtype=torch.long, device=similarity.device)
    return torch.cat([first_break, last], dim=0)  # (F, P)


def _count_table(run_end: torch.Tensor, max_window: int | None) -> torch.Tensor:
    num_frames, num_pos = run_end.shape
    device = run_end.device
    starts = torch.arange(num_frames, device=device)
    # hist[a, v] = #{p : run_end[a, p] == v}; scatter_add (not bincount) keeps CUDA sync-free.
    flat = (starts[:, None] * num_frames + run_end).reshape(-1)  # (F*P,)
    hist = torch.zeros(num_frames * num_frames, dtype=torch.long, device=device)
    hist.scatter_add_(0, flat, torch.ones_like(flat))
    hist = hist.view(num_frames, num_frames)  # (F, F)
    static_n = hist.flip(1).cumsum(1).flip(1)  # (F, F) n(a, e) = #{p : run_end[a, p] >= e}
    length = starts[None, :] - starts[:, None]  # (F, F) e - a
    usable = length >= 0
    if max_window is not None:
        usable &= length + 1 <= max_window
    return torch.where(usable, length * static_n, 0)  # (F, F)


def static_count_table(similarity: torch.Tensor, tau: float, max_window: int | None = None) -> torch.Tensor:
    """The removed-token table ``C[a, e] = (e - a) * n(a, e)`` for every window ``[a, e]``.

    Args:
        similarity: ``(F-1, P)`` from :func:`frame_similarity`.
        tau: static iff similarity ``> tau`` between every pair of consecutive frames.
        max_window: windows longer than this many frames get 0 (never chosen).

    Returns:
        ``(F, F)`` int64 on ``similarity``'s device; 0 below the diagonal, on the
        diagonal (``C(a, a) = 0``) and beyond ``max_window``.
    """
    check_tensor("similarity", similarity, 2)
    tau = check_tau(tau)
    max_window = check_max_window(max_window)
    return _count_table(_run_end(similarity.float(), tau), max_window)


# --------------------------------------------------------------------------- step 3


def _segment(table: np.ndarray, max_window: int | None) -> tuple[list[tuple[int, int]], int]:
    """DP over frames on a host int64 table; returns the windows and ``R_total = dp[F-1]``."""
    num_frames = table.shape[0]
    limit = num_frames if max_window is None else max_window
    best = np.zeros(num_frames + 1, dtype=np.int64)  # best[i + 1] = dp[i]; best[0] = dp[-1] = 0
    choice = np.ones(num_frames, dtype=np.int64)  # window length that ends at frame i
    # Frame-level loop on the host (O(F) iterations, each vectorised over window lengths).
    for i in range(num_frames):
        best[i + 1] = best[i]  # frame i alone
        widest = min(i + 1, limit)
        if widest >= 2:
            starts = i - np.arange(2, widest + 1) + 1  # window [start, i] for w = 2..widest
            totals = best[starts] + table[starts, i]
            w_idx = int(np.argmax(totals))  # first maximum = shortest window among ties
            if totals[w_idx] > best[i + 1]:  # strictly better than the single frame
                best[i + 1] = totals[w_idx]
                choice[i] = w_idx + 2
    windows = []
    end = num_frames - 1
    while end >= 0:
        start = end - int(choice[end]) + 1
        windows.append((start, end))
        end = start - 1
    windows.reverse()
    return windows, int(best[num_frames])


def segment_frames(table: torch.Tensor, max_window: int | None = None) -> torch.Tensor:
    """Partition frames into contiguous windows maximising the removed tokens.

    ``dp[-1] = 0``; ``dp[i] = max(dp[i-1], max_{w=2..min(i+1, W)} dp[i-w] + C(i-w+1, i))``
    followed by a backtrack (ties: see the module docstring). Copies ``table`` to
    the host once (a device sync when it lives on a GPU).

    Args:
        table: ``(F, F)`` integer table from :func:`static_count_table`.
        max_window: W, the longest window in frames (None = F).

    Returns:
        ``(num_windows, 2)`` int64 CPU tensor of inclusive ``[start, end]``.
    """
    check_tensor("table", table, 2, floating=False)
    if table.shape[0] != table.shape[1] or table.shape[0] < 1:
        raise InputError(f"table must be square (F, F) with F >= 1, got shape {tuple(table.shape)}.")
    windows, _ = _segment(table.cpu().numpy().astype(np.int64), check_max_window(max_window))
    return torch.tensor(windows, dtype=torch.long).view(-1, 2)


# --------------------------------------------------------------------------- step 4


def check_features(features: object, name: str = "features") -> torch.Tensor:
    check_tensor(name, features, 3)
    num_frames, num_pos, dim = features.shape
    if num_frames < 1 or num_pos < 1 or dim < 1:
        raise InputError(f"{name} must be (F, P, D) with F, P, D >= 1, got shape {tuple(features.shape)}.")
    return features


@dataclass
class _Stage1Device:
    """Device-side stage-I intermediates of one video (before the host DP)."""

    similarity: torch.Tensor  # (F-1, P) float32
    run_end: torch.Tensor  # (F, P) int64
    table: torch.Tensor  # (F, F) int64
    finite: torch.Tensor  # () bool, all token norms finite


def _stage1_device(x: torch.Tensor, tau: float, max_window: int | None) -> _Stage1Device:
    kernels = kernels_for(x, "temporal")
    if kernels is not None:  # CUDA: the Triton kernels of TemporalSegment build the same tensors
        sim, norms, run_end, table = kernels.temporal_stage1(x, tau, max_window)
        return _Stage1Device(sim, run_end, table, torch.isfinite(norms).all())
    sim, norms = _similarity_and_norms(x)
    run_end = _run_end(sim, tau)
    return _Stage1Device(sim, run_end, _count_table(run_end, max_window), torch.isfinite(norms).all())


def _finish_temporal(dev: _Stage1Device, table: np.ndarray, max_window: int | None) -> TemporalPlan:
    """Host DP + static mask, given the host copy of ``dev.table``."""
    windows, removed = _segment(table, max_window)
    win = np.asarray(windows, dtype=np.int64).reshape(-1, 2)
    lengths = win[:, 1] - win[:, 0]  # e - a
    counts = np.where(lengths > 0, table[win[:, 0], win[:, 1]] // np.maximum(lengths, 1), 0)
    start_of = np.repeat(win[:, 0], lengths + 1)  # (F,)
    end_of = np.repeat(win[:, 1], lengths + 1)  # (F,)
    device = dev.run_end.device
    start_t = torch.from_numpy(start_of).to(device)
    end_t = torch.from_numpy(end_of).to(device)
    # Position p is static in [a, e] iff run_end[a, p] >= e; only windows of >= 2 frames have statics.
    static = (dev.run_end.index_select(0, start_t) >= end_t[:, None]) & (end_t > start_t)[:, None]  # (F, P)
    return TemporalPlan(
        windows=torch.from_numpy(win),
        static=static,
        removed=removed,
        static_counts=tuple(int(c) for c in counts),
        similarity=dev.similarity,
        table=torch.from_numpy(table),
    )


def plan_temporal(features: torch.Tensor, tau: float, max_window: int | None = None) -> TemporalPlan:
    """Stage I for one video: similarity, table, DP, static mask.

    Args:
        features: ``(F, P, D)`` float32 / float16 / bfloat16 (accumulated in float32).
        tau: cosine threshold in ``[-1, 1]``.
        max_window: longest window in frames, None = unbounded.

    Returns:
        A :class:`TemporalPlan`. One device sync (the table copy, which also
        carries the finiteness flag of the features).
    """
    check_features(features)
    tau = check_tau(tau)
    max_window = check_max_window(max_window)
    dev = _stage1_device(features.float(), tau, max_window)
    num_frames = features.shape[0]
    host = torch.cat([dev.table.reshape(-1), dev.finite.long().view(1)]).cpu().numpy()  # the one sync
    if not host[-1]:
        raise_non_finite("features")
    return _finish_temporal(dev, host[:-1].reshape(num_frames, num_frames), max_window)


__all__ = [
    "COSINE_EPS",
    "TemporalPlan",
    "frame_similarity",
    "plan_temporal",
    "segment_frames",
    "static_count_table",
]
