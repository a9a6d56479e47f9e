"""Density-peak clustering (DPC-KNN) and its merge, batched over padded groups.

DESIGN.md section 2 (stage II), for the valid tokens ``x_1..x_n`` of one group
and ``M`` clusters:

- ``d_ij = ||x_i - x_j||_2 / sqrt(D)``; ``k = min(k_nn, M)``;
- density ``rho_i = exp(-mean of d_ij^2 over the k nearest j)``, i itself included;
- ``delta_i = min d_ij over j denser than i``; the densest token gets the
  group's largest distance;
- centres: the top ``M`` by ``gamma_i = rho_i * delta_i``; every other token
  joins its nearest centre;
- merged token of a centre: ``beta * x_centre + (1 - beta) * mean(members)``,
  where members are the non-centre tokens that joined it, or ``x_centre`` when
  none did.

Deterministic tie rules (replacing the official code's uniform noise < 1e-6):

- density ties: token j counts as denser than i when ``rho_j > rho_i``, or
  ``rho_j == rho_i`` and ``j < i`` (the lower index is denser);
- ``gamma`` ties for the last centre places: the lower index wins;
- equidistant centres: the token joins the centre with the lower index.

Distances come from one batched Gram matrix of the group-centred tokens
(``|a - b|^2 = |a|^2 + |b|^2 - 2 a.b`` with the squared norms read off the
Gram diagonal, so exact duplicates get distance exactly 0), symmetrised
exactly. Centring first keeps float32 cancellation small. All groups are padded
to one slot count ``n`` and processed at once; invalid slots take part in
nothing.

The merge is linear: every merged token is ``sum_i w_i x_i`` over the tokens
assigned to it (:func:`density_peak_weights`), which is how the outer merge
folds it into its single scatter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from holitom.errors import ConfigError, InputError
from holitom.merge._checks import check_finite, check_tensor
from holitom.merge._device import kernels_for


@dataclass(frozen=True, eq=False)
class DPCPlan:
    """Clustering of one group ``(n,)`` or of ``G`` padded groups ``(G, n)``.

    Attributes:
        centres: ``(M,)`` or ``(G, M_max)`` int64 token index of each cluster's
            centre, ascending within a group; padding slots (``c >= M_g``) hold 0.
        assign: ``(n,)`` or ``(G, n)`` int64 cluster of each token (an index into
            ``centres``), -1 for invalid tokens (and for every token of a group
            with ``M = 0``). Centres are assigned to their own cluster.
        centre_valid: ``(M,)`` or ``(G, M_max)`` bool, ``c < M_g``.
        is_centre: ``(n,)`` or ``(G, n)`` bool.
        member_count: ``(M,)`` or ``(G, M_max)`` int64 number of non-centre
            tokens that joined each cluster.
    """

    centres: torch.Tensor
    assign: torch.Tensor
    centre_valid: torch.Tensor
    is_centre: torch.Tensor
    member_count: torch.Tensor

    @property
    def batched(self) -> bool:
        return self.assign.dim() == 2


# --------------------------------------------------------------------------- core (no checks)


def _pairwise_sq_dist(
    x: torch.Tensor, valid: torch.Tensor, *, centre_in_place: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distances ``d_ij^2 = |x_i - x_j|^2 / D`` and the ``(G, D)`` means of the valid tokens.

    Returns ``(G, n, n)`` float32, exactly symmetric, exactly 0 on the diagonal
    of valid tokens and ``+inf`` in every row and column of an invalid slot (so
    padding never looks near). ``centre_in_place`` lets the caller's scratch
    tensor ``x`` be centred in place (saves a ``(G, n, D)`` allocation on the
    outer merge's hot path).
    """
    dim = x.shape[-1]
    weights = valid.to(x.dtype)  # (G, n)
    count = weights.sum(1).clamp_min(1.0)  # (G,)
    mean = torch.bmm(weights[:, None, :], x)[:, 0] / count[:, None]  # (G, D)
    centred = x.sub_(mean[:, None, :]) if centre_in_place else x - mean[:, None, :]  # (G, n, D)
    gram = torch.bmm(centred, centred.transpose(1, 2))  # (G, n, n)
    sq = gram.diagonal(dim1=1, dim2=2).clone()  # (G, n) read off the Gram: duplicates get exactly 0
    d2 = gram.mul_(-2.0).add_(sq[:, :, None]).add_(sq[:, None, :]).clamp_min_(0.0)  # (G, n, n), in place
    # a + b == b + a exactly in IEEE arithmetic, so the average with the transpose is exactly symmetric.
    d2 = torch.add(d2, d2.transpose(1, 2)).mul_(0.5 / dim)
    d2.diagonal(dim1=1, dim2=2).zero_()
    invalid = ~valid
    return d2.masked_fill_(invalid[:, :, None] | invalid[:, None, :], float("inf")), mean


def _dpc_core(
    x: torch.Tensor, valid: torch.Tensor, num_clusters: Sequence[int], k_nn: int, *, scratch: bool = False
) -> tuple[DPCPlan, torch.Tensor, torch.Tensor]:
    """Batched DPC-KNN. ``x`` float32 ``(G, n, D)``, ``valid`` ``(G, n)``, host ``num_clusters`` (G ints).

    Returns the plan, the ``(G, n, n)`` squared distances (``+inf`` at padding)
    and the ``(G, D)`` means of the valid tokens (None on the kernel path, which
    does not centre the tokens). Every ``num_clusters[g]`` must
    be <= the group's valid count (checked by callers). ``scratch=True``: ``x``
    may be overwritten (it is left centred: ``x - mean``, which merges to
    ``merged - mean`` since every cluster's weights sum to 1).
    """
    num_groups, n, _ = x.shape
    device = x.device
    m_max = max(num_clusters) if num_groups else 0
    if n == 0 or m_max == 0:
        return _empty_plan(num_groups, n, device), x.new_zeros((num_groups, n, n)), x.new_zeros((num_groups, x.shape[2]))
    kernels = kernels_for(x, "dpc")
    if kernels is not None:  # CUDA: the Triton kernels of DensityPeakMerge
        plan, d2 = kernels.dpc_plan(x, valid, num_clusters, k_nn)
        return plan, d2, None
    m = torch.tensor(list(num_clusters), dtype=torch.long).to(device)  # (G,)
    ks = [max(min(k_nn, mg), 1) for mg in num_clusters]  # k = min(k_nn, M); groups with M = 0 are unused
    k = torch.tensor(ks, dtype=torch.long).to(device)  # (G,)
    k_max = max(ks)

    d2, mean = _pairwise_sq_dist(x, valid, centre_in_place=scratch)  # (G, n, n), (G, D)

    # Density: mean of the k smallest d^2 (self included at 0), via a cumulative sum of the sorted k_max.
    nearest = torch.topk(d2, min(k_max, n), dim=-1, largest=False, sorted=True).values  # (G, n, k_max)
    kth = (k - 1)[:, None, None].expand(num_groups, n, 1)
    mean_knn = nearest.cumsum(-1).gather(-1, kth)[..., 0] / k[:, None].to(x.dtype)  # (G, n)
    rho = torch.where(valid, torch.exp(-mean_knn), -1.0)  # (G, n); padding is never denser

    # delta: distance to the nearest denser token. Denser = earlier in the order of decreasing
    # density with the lower index first among ties (a stable sort), so one rank comparison.
    order = torch.sort(rho, dim=-1, descending=True, stable=True).indices  # (G, n)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n, device=device).expand(num_groups, n))
    denser = rank[:, None, :] < rank[:, :, None]  # (G, n, n) [g, i, j]: j denser than i
    delta2 = d2.masked_fill(~denser, float("inf")).amin(-1)  # (G, n)
    d2_max = d2.masked_fill(torch.isinf(d2), 0.0).flatten(1).amax(-1)  # (G,) largest valid distance
    delta2 = torch.where(torch.isinf(delta2), d2_max[:, None], delta2)  # the densest token
    gamma = torch.where(valid, rho * delta2.sqrt(), -1.0)  # (G, n); invalid below every valid score

    # Top-M by gamma, lower index first among ties (stable sort), then centres in index order.
    order = torch.sort(gamma, dim=-1, descending=True, stable=True).indices[:, :m_max]  # (G, M_max)
    slot = torch.arange(m_max, device=device)
    centre_valid = slot[None, :] < m[:, None]  # (G, M_max)
    centres = torch.where(centre_valid, order, n).sort(dim=-1).values  # valid first, ascending
    centres = torch.where(centre_valid, centres, 0)

    # Assignment: nearest centre; argmin returns the first minimum = the lower-index centre.
    to_centre = d2.gather(2, centres[:, None, :].expand(num_groups, n, m_max))  # (G, n, M_max)
    to_centre.masked_fill_(~centre_valid[:, None, :], float("inf"))
    assign = to_centre.argmin(-1)  # (G, n)
    # Centres join their own cluster (a duplicate of a lower centre would otherwise move).
    # Padding slots are scattered into a dummy column n, then dropped.
    dummy_col = torch.where(centre_valid, centres, n)  # (G, M_max)
    assign = torch.cat([assign, assign.new_zeros((num_groups, 1))], 1)
    assign.scatter_(1, dummy_col, slot[None, :].expand(num_groups, m_max))
    assign = assign[:, :n]
    is_centre = torch.zeros((num_groups, n + 1), dtype=torch.bool, device=device)
    is_centre.scatter_(1, dummy_col, True)
    is_centre = is_centre[:, :n]
    has_cluster = valid & (m[:, None] > 0)
    assign = torch.where(has_cluster, assign, -1)

    member = has_cluster & ~is_centre  # (G, n)
    member_count = torch.zeros((num_groups, m_max + 1), dtype=torch.long, device=device)
    member_count.scatter_add_(1, torch.where(member, assign, m_max), member.long())
    plan = DPCPlan(
        centres=centres,
        assign=assign,
        centre_valid=centre_valid,
        is_centre=is_centre,
        member_count=member_count[:, :m_max],
    )
    return plan, d2, mean


def _empty_plan(num_groups: int, n: int, device: torch.device) -> DPCPlan:
    """Plan of groups that all have M = 0: no centres, every token dropped."""
    return DPCPlan(
        centres=torch.zeros((num_groups, 0), dtype=torch.long, device=device),
        assign=torch.full((num_groups, n), -1, dtype=torch.long, device=device),
        centre_valid=torch.zeros((num_groups, 0), dtype=torch.bool, device=device),
        is_centre=torch.zeros((num_groups, n), dtype=torch.bool, device=device),
        member_count=torch.zeros((num_groups, 0), dtype=torch.long, device=device),
    )


def _weights(plan: DPCPlan, beta: float) -> torch.Tensor:
    """Batched ``(G, n)`` float32 coefficient of each token in its cluster's merged token."""
    counts = torch.cat([plan.member_count, plan.member_count.new_zeros((plan.member_count.shape[0], 1))], 1)
    m_max = plan.member_count.shape[1]
    count = counts.gather(1, torch.where(plan.assign >= 0, plan.assign, m_max)).to(torch.float32)  # (G, n)
    centre_w = torch.where(count > 0, beta, 1.0)  # empty cluster keeps x_centre
    member_w = (1.0 - beta) / count.clamp_min(1.0)
    return torch.where(plan.is_centre, centre_w, torch.where(plan.assign >= 0, member_w, 0.0))


def slot_weights(is_centre: torch.Tensor, assignment: torch.Tensor, beta: float) -> torch.Tensor:
    """``(G, n)`` float32 coefficient of each slot in the merged token of the centre it joined.

    ``beta`` for a centre with members, 1 for a centre without, ``(1 - beta) /
    members`` for a member, 0 for a slot in no cluster: DESIGN.md's merged token
    ``beta * x_centre + (1 - beta) * mean(members)`` as a weighted sum.
    """
    groups, slots = assignment.shape
    member = (assignment >= 0) & ~is_centre  # (G, n)
    count = torch.zeros((groups, slots + 1), dtype=torch.float32, device=assignment.device)
    count = count.scatter_add(1, torch.where(member, assignment, slots), member.float())  # (G, n + 1) members per centre slot
    centre_w = torch.where(count[:, :slots] > 0, beta, 1.0)  # (G, n)
    member_w = (1.0 - beta) / count.gather(1, assignment.clamp_min(0)).clamp_min(1.0)  # (G, n)
    return torch.where(is_centre, centre_w, torch.where(member, member_w, 0.0))


def _merge(x: torch.Tensor, plan: DPCPlan, beta: float) -> torch.Tensor:
    """Batched ``(G, M_max, D)`` float32 merged tokens (zeros at padding slots).

    One weighted ``index_add`` over all tokens: O(n * D) work (a one-hot ``bmm``
    would cost O(M * n * D)). Invalid tokens land in a dummy slot per group that
    is dropped, so whatever padding holds never reaches a real slot.
    """
    num_groups, n, dim = x.shape
    m_max = plan.centres.shape[1]
    w = _weights(plan, beta)  # (G, n)
    group = torch.arange(num_groups, device=x.device)[:, None] * (m_max + 1)
    slot = (group + torch.where(plan.assign >= 0, plan.assign, m_max)).reshape(-1)  # (G*n,)
    out = torch.zeros((num_groups * (m_max + 1), dim), dtype=torch.float32, device=x.device)
    out.index_add_(0, slot, (x.float() * w[..., None]).reshape(-1, dim))
    return out.view(num_groups, m_max + 1, dim)[:, :m_max]


# --------------------------------------------------------------------------- public API


def _as_batched(x: torch.Tensor, valid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, bool]:
    check_tensor("x", x, (2, 3))
    batched = x.dim() == 3
    xb = x if batched else x[None]
    if valid is None:
        vb = torch.ones(xb.shape[:2], dtype=torch.bool, device=x.device)
    else:
        check_tensor("valid", valid, (1, 2), floating=False)
        if valid.dtype != torch.bool:
            raise InputError(f"valid must be a bool tensor, got {valid.dtype}.")
        vb = valid if valid.dim() == 2 else valid[None]
        if tuple(vb.shape) != tuple(xb.shape[:2]):
            raise InputError(f"valid must have shape {tuple(x.shape[:-1])} to match x {tuple(x.shape)}, got {tuple(valid.shape)}.")
        vb = vb.to(x.device)
    return xb, vb, batched


def plan_density_peaks(
    x: torch.Tensor,
    num_clusters: int | Sequence[int] | torch.Tensor,
    k_nn: int,
    valid: torch.Tensor | None = None,
) -> DPCPlan:
    """Cluster tokens into density peaks (DPC-KNN, DESIGN.md section 2).

    Args:
        x: ``(n, D)`` tokens, or ``(G, n, D)`` padded groups; any float dtype
            (computed in float32).
        num_clusters: M (one int for all groups, or one per group); each must
            lie in ``0..(valid tokens of the group)``.
        k_nn: neighbours for the density, ``>= 1`` (capped at M per group).
        valid: ``(n,)`` or ``(G, n)`` bool, True at real tokens (default: all).

    Returns:
        A :class:`DPCPlan` shaped like the input (unbatched for ``(n, D)``).
        Validation reads the valid counts and checks finiteness: a device sync
        on CUDA (the outer merge uses the unchecked core instead).
    """
    xb, vb, batched = _as_batched(x, valid)
    if isinstance(k_nn, bool) or not isinstance(k_nn, int) or k_nn < 1:
        raise ConfigError(f"k_nn must be an integer >= 1, got {k_nn!r}.")
    num_groups = xb.shape[0]
    if isinstance(num_clusters, torch.Tensor):
        num_clusters = num_clusters.reshape(-1).tolist()
    if isinstance(num_clusters, int) and not isinstance(num_clusters, bool):
        num_clusters = [num_clusters] * num_groups
    clusters = list(num_clusters)
    if len(clusters) != num_groups or any(isinstance(c, bool) or not isinstance(c, int) for c in clusters):
        raise ConfigError(f"num_clusters must be an int or {num_groups} ints (one per group), got {num_clusters!r}.")
    counts = vb.sum(1).tolist()
    for g, (mg, ng) in enumerate(zip(clusters, counts)):
        if not 0 <= mg <= ng:
            raise ConfigError(f"num_clusters[{g}] = {mg} is outside 0..{ng} (the group's valid token count).")
    check_finite("x", torch.where(vb[..., None], xb, 0))
    plan, _, _ = _dpc_core(xb.float(), vb, clusters, k_nn)
    if batched:
        return plan
    return DPCPlan(*(t[0] for t in (plan.centres, plan.assign, plan.centre_valid, plan.is_centre, plan.member_count)))


def _check_beta(beta: float) -> float:
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= float(beta) <= 1.0:
        raise ConfigError(f"beta must be a real number in [0, 1], got {beta!r}.")
    return float(beta)


def density_peak_weights(plan: DPCPlan, beta: float) -> torch.Tensor:
    """Coefficient of each token in its cluster's merged token, shaped like ``plan.assign``.

    ``beta`` for a centre with members, ``1`` for a centre without,
    ``(1 - beta) / member_count`` for a member, ``0`` for invalid tokens; so
    ``merged[c] = sum over tokens i with assign[i] == c of w_i * x_i``.
    """
    beta = _check_beta(beta)
    if plan.batched:
        return _weights(plan, beta)
    return _weights(_batched_plan(plan), beta)[0]


def _batched_plan(plan: DPCPlan) -> DPCPlan:
    return DPCPlan(*(t[None] for t in (plan.centres, plan.assign, plan.centre_valid, plan.is_centre, plan.member_count)))


def apply_density_peaks(x: torch.Tensor, plan: DPCPlan, beta: float) -> torch.Tensor:
    """Merged tokens ``beta * x_centre + (1 - beta) * mean(members)`` (``x_centre`` if no member).

    Args:
        x: the tokens the plan was made from, ``(n, D)`` or ``(G, n, D)``.
        plan: from :func:`plan_density_peaks`.
        beta: centre weight in ``[0, 1]``.

    Returns:
        ``(M, D)`` or ``(G, M_max, D)`` float32, in centre (token index) order;
        padding slots are zeros.
    """
    beta = _check_beta(beta)
    check_tensor("x", x, (2, 3))
    if (x.dim() == 3) != plan.batched or tuple(x.shape[:-1]) != tuple(plan.assign.shape):
        raise InputError(f"x of shape {tuple(x.shape)} does not match the plan's tokens {tuple(plan.assign.shape)}.")
    if plan.batched:
        return _merge(x, plan, beta)
    return _merge(x[None], _batched_plan(plan), beta)[0]


__all__ = ["DPCPlan", "apply_density_peaks", "density_peak_weights", "plan_density_peaks", "slot_weights"]
