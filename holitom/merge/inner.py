"""Stage III of HoliTom: the inner-LLM merge at decoder layer K (DESIGN.md section 2).

Plan (:func:`plan_inner_merge`): keep the top ``k = round(L_v * (1 - R))``
visual tokens by the last prompt token's attention (computed by
:func:`holitom.merge.attention.last_token_attention` from layer K-1's queries
and keys, never a full attention matrix); every dropped token is assigned to
the kept token whose hidden state (entering layer K) has the highest cosine
similarity with its own.

Rules:

- ``k`` uses Python ``round`` (half to even, like the official code), with one
  guard: at least one token is kept when ``L_v >= 1`` (``round(0.5) == 0`` would
  otherwise leave the dropped tokens nowhere to go).
- Attention ties: the lower index is kept (stable sort). Similarity ties: the
  dropped token joins the kept token with the lower index.

Apply (:func:`apply_inner_merge`), two modes:

- ``"sequential"`` (official, default): the official code updates
  ``h_j <- (h_j + h_i) / 2`` for each dropped ``i`` in ascending order, so for a
  kept ``j`` with members ``i_1 < ... < i_m`` the result is the closed form
  ``h_j / 2^m + sum_k h_{i_k} / 2^(m - k + 1)`` (later tokens weigh more),
  computed here in one ``index_add`` with those weights.
- ``"mean"``: ``(h_j + sum_k h_{i_k}) / (m + 1)``.

Dropped tokens leave the sequence; the returned ``kept_index`` (indices into the
original sequence) gathers ``position_ids`` so kept tokens keep their original
RoPE positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from holitom.errors import ConfigError, InputError
from holitom.merge._checks import check_finite, check_span, check_tensor
from holitom.merge._device import kernels_for
from holitom.merge.config import INNER_MODES
from holitom.merge.temporal import COSINE_EPS


@dataclass(frozen=True, eq=False)
class InnerMergePlan:
    """Which visual tokens stay and where the others go (indices relative to the visual span).

    Attributes:
        keep: ``(k,)`` int64 ascending.
        dropped: ``(L_v - k,)`` int64 ascending.
        assign: ``(L_v - k,)`` int64 index into ``keep`` for each dropped token.
        num_visual: ``L_v``.
    """

    keep: torch.Tensor
    dropped: torch.Tensor
    assign: torch.Tensor
    num_visual: int

    @property
    def num_keep(self) -> int:
        return int(self.keep.shape[0])


def _keep_count(num_visual: torch.Tensor, ratio: float) -> torch.Tensor:
    """``k = round(L_v * (1 - R))`` (half to even), at least 1 when ``L_v >= 1``; ``()`` float64 in, int64 out."""
    # 1 - R as a float64 tensor: an export would store a Python scalar as float32.
    kept_share = torch.tensor(1.0 - ratio, dtype=torch.float64, device=num_visual.device)
    return torch.maximum(torch.round(num_visual * kept_share), num_visual.clamp(max=1.0)).long()


def inner_keep_count(num_visual: int, ratio: float) -> int:
    """``k`` of :func:`_keep_count` for a host count (token accounting, tests)."""
    return int(_keep_count(torch.tensor(float(num_visual), dtype=torch.float64), ratio))


def _check_ratio(ratio: float) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) < 1.0:
        raise ConfigError(f"the inner merge ratio R must be a real number in [0, 1), got {ratio!r}.")
    return float(ratio)


def plan_tensors(scores: torch.Tensor, hidden_visual: torch.Tensor, ratio: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The plan as tensor code (no host number derived from the data), exported as it is by the inner-merge graph.

    ``scores (L_v,)``, ``hidden_visual (L_v, D)`` -> ``keep (k,)``, ``dropped
    (L_v - k,)`` ascending and ``assign (L_v - k,)`` (an index into ``keep``).
    """
    k = _keep_count(torch.ones_like(scores, dtype=torch.float64).sum(), ratio)  # () from L_v
    order = torch.sort(scores.float(), descending=True, stable=True).indices  # (L_v,) lower index first on ties
    rank = torch.empty_like(order).scatter_(0, order, torch.arange(order.shape[0], device=order.device))  # (L_v,)
    kept = rank < k  # (L_v,)
    keep = torch.nonzero(kept)[:, 0]  # (k,) ascending
    dropped = torch.nonzero(~kept)[:, 0]  # (L_v - k,) ascending
    kernels = kernels_for(hidden_visual, "inner")
    if kernels is not None:  # the Triton assignment kernel (same rule, float32), inside use_kernels()
        return keep, dropped, kernels.inner_assign(hidden_visual, keep, dropped)
    h = hidden_visual.float()
    kept_unit = h.index_select(0, keep)
    kept_unit = kept_unit / torch.linalg.vector_norm(kept_unit, dim=-1, keepdim=True).clamp_min(COSINE_EPS)  # (k, D)
    # Dividing by the dropped token's own norm would not change its argmax, so it is skipped.
    sim = h.index_select(0, dropped) @ kept_unit.T  # (L_v - k, k)
    # A -inf column keeps argmax defined when nothing is kept (then nothing is dropped either).
    sim = torch.cat([sim, sim.new_full((sim.shape[0], 1), float("-inf"))], 1)
    return keep, dropped, sim.argmax(-1)  # first maximum = the lower kept index


def plan_inner_merge(
    scores: torch.Tensor, hidden_visual: torch.Tensor, ratio: float, *, validate: bool = True
) -> InnerMergePlan:
    """Plan the inner merge.

    Args:
        scores: ``(L_v,)`` attention of the last prompt token over the visual span.
        hidden_visual: ``(L_v, D)`` hidden states of the visual tokens entering layer K.
        ratio: R in ``[0, 1)``.
        validate: check finiteness (one device sync on CUDA); shapes are always checked.

    Returns:
        An :class:`InnerMergePlan` on the inputs' device.
    """
    check_tensor("scores", scores, 1)
    check_tensor("hidden_visual", hidden_visual, 2)
    ratio = _check_ratio(ratio)
    num_visual = scores.shape[0]
    if hidden_visual.shape[0] != num_visual:
        raise InputError(
            f"scores cover {num_visual} visual tokens but hidden_visual has {hidden_visual.shape[0]} rows; "
            "slice both with the same visual span."
        )
    if scores.device != hidden_visual.device:
        raise InputError(f"scores are on {scores.device} but hidden_visual is on {hidden_visual.device}.")
    if validate:
        check_finite("scores", scores)
        check_finite("hidden_visual", hidden_visual)
    with torch.no_grad():
        keep, dropped, assign = plan_tensors(scores, hidden_visual, ratio)
    return InnerMergePlan(keep=keep, dropped=dropped, assign=assign, num_visual=num_visual)


def inner_merge_weights(plan: InnerMergePlan, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(k,)`` weight of each kept token and ``(L_v - k,)`` weight of each dropped token in its merged token."""
    if mode not in INNER_MODES:
        raise ConfigError(f"inner merge mode must be one of {list(INNER_MODES)}, got {mode!r}.")
    device = plan.keep.device
    members = torch.zeros(plan.num_keep, dtype=torch.long, device=device)
    members.scatter_add_(0, plan.assign, torch.ones_like(plan.assign))  # (k,) m_j
    if mode == "mean":
        keep_w = 1.0 / (members + 1).to(torch.float32)
        return keep_w, keep_w[plan.assign]
    # Rank of each dropped token among its cluster's members, ascending by index
    # (plan.dropped is ascending, so a stable sort by cluster keeps that order);
    # a cluster's members start after those of the clusters before it.
    by_cluster = torch.sort(plan.assign, stable=True)
    first = (members.cumsum(0) - members)[by_cluster.values]  # first sorted place of each one's cluster
    rank_sorted = torch.arange(plan.assign.shape[0], device=device) - first
    rank = torch.empty_like(rank_sorted).scatter_(0, by_cluster.indices, rank_sorted)  # 0-based k - 1
    m = members[plan.assign]
    # exp2 of a large negative exponent underflows to 0 exactly as repeated halving does.
    drop_w = torch.exp2(-(m - rank).to(torch.float32))  # 1 / 2^(m - k + 1)
    keep_w = torch.exp2(-members.to(torch.float32))  # 1 / 2^m
    return keep_w, drop_w


def apply_tensors(seq: torch.Tensor, start, end, plan: InnerMergePlan, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The apply step as tensor code (no checks), exported as it is: ``seq (S, D)`` -> ``(S', D)``, ``kept_index (S',)``.

    ``start``, ``end``: the visual span, ints (unbacked sizes in an export).
    """
    kernels = kernels_for(seq, "inner")
    if kernels is not None:  # the Triton kernel folds each kept token's members in order, inside use_kernels()
        merged = kernels.inner_merge_rows(seq[start:end], plan, mode)  # (k, D) float32
    else:
        keep_w, drop_w = inner_merge_weights(plan, mode)
        visual = seq[start:end].float()  # (L_v, D)
        merged = visual.index_select(0, plan.keep) * keep_w[:, None]  # (k, D)
        merged = merged.index_add(0, plan.assign, visual.index_select(0, plan.dropped) * drop_w[:, None])
    out = torch.cat([seq[:start], merged.to(seq.dtype), seq[end:]], 0)  # (S', D)
    device = seq.device
    kept_index = torch.cat(
        [torch.arange(start, device=device), plan.keep.to(device) + start, torch.arange(end, seq.shape[0], device=device)]
    )  # (S',)
    return out, kept_index


def apply_inner_merge(
    hidden: torch.Tensor,
    visual_span: tuple[int, int],
    plan: InnerMergePlan,
    mode: str = "sequential",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge the dropped visual tokens into their kept tokens and drop them from the sequence.

    Args:
        hidden: ``(S, D)`` or ``(1, S, D)`` hidden states entering layer K.
        visual_span: ``(start, end)`` half-open range of the visual tokens, ``end - start == L_v``.
        plan: from :func:`plan_inner_merge`.
        mode: ``"sequential"`` (official) or ``"mean"``.

    Returns:
        ``hidden_out`` ``(S', D)`` (or ``(1, S', D)``) in ``hidden``'s dtype, merged in
        float32, with ``S' = S - (L_v - k)``; and ``kept_index`` ``(S',)`` int64
        indices into the original sequence (for ``position_ids``).
    """
    check_tensor("hidden", hidden, (2, 3))
    if hidden.dim() == 3 and hidden.shape[0] != 1:
        raise InputError(f"hidden must be (S, D) or (1, S, D) (one sequence), got shape {tuple(hidden.shape)}.")
    if not isinstance(plan, InnerMergePlan):
        raise InputError(f"plan must be an InnerMergePlan, got {type(plan).__name__}.")
    seq = hidden[0] if hidden.dim() == 3 else hidden  # (S, D)
    start, end = check_span("visual_span", visual_span, seq.shape[0])
    if end - start != plan.num_visual:
        raise InputError(
            f"visual_span {tuple(visual_span)} covers {end - start} tokens but the plan was made for "
            f"{plan.num_visual} visual tokens; pass the span the scores were sliced with."
        )
    with torch.no_grad():
        out, kept_index = apply_tensors(seq, start, end, plan, mode)
    return (out[None] if hidden.dim() == 3 else out), kept_index


__all__ = ["InnerMergePlan", "apply_inner_merge", "apply_tensors", "plan_tensors", "inner_keep_count", "inner_merge_weights", "plan_inner_merge"]
