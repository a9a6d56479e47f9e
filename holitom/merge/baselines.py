"""Competing visual-token reduction methods, planned and applied like the HoliTom stages.

Users compare HoliTom against the reductions they would otherwise pick, so every
outer (pre-LLM) method here takes the same inputs as HoliTom's outer merge and is
held to the same token budget:

- ``features`` ``(F, P, D)``: projected + pooled features of one video.
- ``attention`` ``(F, P)``: attention each token receives in the last kept vision
  layer, pooled like the features (DESIGN.md section 2). Only
  ``attention_topk`` reads it; the others accept ``None`` (and check its shape
  when given, to catch mismatched inputs early).
- ``retain_ratio`` r in (0, 1] and ``grid`` ``(h, w)`` with ``h * w == P``.

Budget (shared by ``attention_topk`` and ``evs``)::

    B = max(1, round(r * F * P))              # round half to even, like round()/torch.round
    b_t = (t + 1) * B // F - t * B // F        # per-frame split, t = 0..F-1

so the total equals B exactly (|B - r * N| <= 0.5 with N = F * P: HoliTom's nominal
r * N within rounding, unless the one-token floor applies) and frames differ by at
most one token. ``uniform_pool`` is the exception: a pooled grid holds
``h' * w'`` tokens per frame, so it returns ``F * h' * w'`` tokens with
``(h', w')`` chosen by :func:`uniform_pool_grid` to be as close to ``r * P`` as a
grid allows (14x14 at r = 0.10: 640 tokens for 32 frames against B = 627).

Every outer plan has one linear form, :class:`ReductionPlan`: output token
``dst_index[e]`` accumulates ``weight[e] * X_flat[src_index[e]]`` over edges ``e``,
with ``X_flat = X.reshape(F * P, D)``. Selection methods have one edge of weight 1
per kept token, pooling has one edge per (output cell, input cell) pair, so one
:func:`apply_reduction` (a float32 ``index_add_``) serves all of them, in the spirit
of ToMe's ``bipartite_soft_matching`` returning a merge applied in one scatter.
Outputs are in frame order, then position order within a frame.

FastV (inner-LLM) drops the least-attended visual tokens at decoder layer K by
the last prompt token's attention; unlike HoliTom's inner merge the dropped
tokens are discarded, not merged (:func:`plan_fastv`, :func:`apply_fastv`).
"""

from __future__ import annotations

import dataclasses

from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import torch

from holitom.errors import ConfigError, InputError
from holitom.merge._checks import all_finite
from holitom.merge.config import known_fields

# ---------------------------------------------------------------------------
# Plans
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReductionPlan:
    """A linear map from the ``F * P`` input tokens of one video to ``num_out`` output tokens.

    Attributes:
        src_index: ``(E,)`` int64, flat input index ``t * P + p`` of each edge.
        dst_index: ``(E,)`` int64, output token each edge adds into, in ``[0, num_out)``.
        weight: ``(E,)`` float32, the edge's coefficient.
        frame_index: ``(N,)`` int64, the frame each output token belongs to.
        position_index: ``(N,)`` int64, the grid position each output token stands
            for (``row * w + col``; for pooled tokens the block's top-left cell).
        num_out: N, a host int so that consumers never sync to learn it.
        input_shape: ``(F, P)`` the plan was built for; :func:`apply_reduction`
            checks features against it without reading device memory.
    """

    src_index: torch.Tensor
    dst_index: torch.Tensor
    weight: torch.Tensor
    frame_index: torch.Tensor
    position_index: torch.Tensor
    num_out: int
    input_shape: tuple[int, int]


@dataclass(frozen=True)
class FastVPlan:
    """FastV's selection at one decoder layer.

    Attributes:
        keep: ``(K_v,)`` int64, kept visual tokens as ascending indices into the visual span.
        num_visual: L_v, the visual span length the plan was built for.
    """

    keep: torch.Tensor
    num_visual: int


class OuterPlanFn(Protocol):
    def __call__(
        self,
        features: torch.Tensor,
        attention: torch.Tensor | None,
        retain_ratio: float,
        grid: tuple[int, int],
    ) -> ReductionPlan: ...


# ---------------------------------------------------------------------------
# Budgets
# ---------------------------------------------------------------------------


def _round_half_even(x: float) -> int:
    # Python's round() and torch.round both round halves to even; using the same
    # rule as the HoliTom stages keeps budgets comparable token for token.
    return int(round(x))


def token_budget(num_frames: int, num_positions: int, retain_ratio: float) -> int:
    """Total tokens B = max(1, round(r * F * P)) kept by ``attention_topk`` and ``evs``.

    At least one token is kept so that every method returns a non-empty sequence.
    """
    _check_ratio(retain_ratio, "token_budget")
    return max(1, _round_half_even(retain_ratio * (num_frames * num_positions)))


def frame_budgets(num_frames: int, total: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Split ``total`` tokens over ``num_frames`` frames as evenly as integers allow.

    ``b_t = (t + 1) * total // F - t * total // F``: the parts sum to ``total``
    exactly and differ by at most one, spread over the video rather than piled
    on its first frames.

    Returns:
        ``(F,)`` int64.
    """
    if num_frames < 1 or total < 0:
        raise InputError(f"frame_budgets needs num_frames >= 1 and total >= 0; got num_frames={num_frames}, total={total}.")
    cum = torch.arange(num_frames + 1, device=device, dtype=torch.int64) * total // num_frames  # (F + 1,)
    return cum[1:] - cum[:-1]  # (F,)


def uniform_pool_grid(grid: tuple[int, int], retain_ratio: float) -> tuple[int, int]:
    """The pooled grid ``(h', w')`` used by :func:`plan_uniform_pool`.

    For every candidate height ``h'`` in ``1..h`` the width is
    ``w' = clamp(round(r * P / h'), 1, w)`` (the best count for that height). The
    pooled cell then spans ``h / h'`` by ``w / w'`` input cells; its elongation is
    ``e = max(c, 1 / c)`` with ``c = (h * w') / (h' * w)``. Among the candidates,
    pick the smallest key ``(max(1, e / 2), |h' * w' - r * P|, e, h')``: cells at
    most twice as long as wide first (further elongation only when nothing else
    exists, e.g. a 1-row grid), then the count closest to ``r * P``, then the
    squarer cell, then the smaller height.

    Examples: 14x14 (LLaVA-OneVision) gives (4, 5), (5, 6), (5, 8), (7, 7) for
    r = 0.10, 0.15, 0.20, 0.25; r = 1 gives (h, w).
    """
    if not (isinstance(grid, (tuple, list)) and len(grid) == 2 and all(isinstance(g, int) and not isinstance(g, bool) and g >= 1 for g in grid)):
        raise InputError(f"uniform_pool_grid: grid must be a pair of positive ints (h, w); got {grid!r}.")
    h, w = grid
    target = _check_ratio(retain_ratio, "uniform_pool_grid") * (h * w)

    def key(h_out: int) -> tuple[Fraction, float, Fraction, int]:
        w_out = min(max(_round_half_even(target / h_out), 1), w)
        c = Fraction(h * w_out, h_out * w)
        elongation = max(c, 1 / c)  # exact rationals so mirrored grids tie exactly
        return (max(Fraction(1), elongation / 2), abs(h_out * w_out - target), elongation, h_out)

    # A host-side search over at most h candidate heights (two ints in, no tensors).
    h_out = min(range(1, h + 1), key=key)
    w_out = min(max(_round_half_even(target / h_out), 1), w)
    return h_out, w_out


# ---------------------------------------------------------------------------
# Input validation (typed errors, never assert: python -O strips asserts)
# ---------------------------------------------------------------------------


def _check_ratio(retain_ratio: object, where: str) -> float:
    if isinstance(retain_ratio, bool) or not isinstance(retain_ratio, (int, float)) or not (0.0 < retain_ratio <= 1.0):
        raise ConfigError(f"{where}: retain_ratio must be a number in (0, 1]; got {retain_ratio!r}. Use e.g. 0.10, 0.15, 0.20 or 0.25 (1.0 keeps every token).")
    return float(retain_ratio)


def _check_finite(x: torch.Tensor, name: str, where: str) -> None:
    # One deliberate device->host sync per input: a NaN/inf would silently poison the
    # ranking (sort places NaN first) or every pooled token it touches.
    if not all_finite(x):
        raise InputError(f"{where}: {name} contains NaN or infinite values; clean the input (e.g. check the vision tower ran in a dtype that does not overflow).")


def _check_outer_inputs(
    features: object,
    attention: object,
    retain_ratio: object,
    grid: object,
    where: str,
    need_attention: bool,
) -> tuple[int, int, int, int, float]:
    """Validate one video's outer inputs; returns (F, P, h, w, r)."""
    if not isinstance(features, torch.Tensor) or features.dim() != 3 or not features.is_floating_point():
        got = f"shape {tuple(features.shape)} dtype {features.dtype}" if isinstance(features, torch.Tensor) else type(features).__name__
        raise InputError(f"{where}: features must be a 3-D floating tensor (F, P, D) for one video; got {got}. Pass one video at a time, e.g. x[v] of a (V, F, P, D) batch.")
    num_frames, num_positions, dim = features.shape
    if num_frames < 1 or num_positions < 1 or dim < 1:
        raise InputError(f"{where}: features must have F >= 1 frames, P >= 1 positions and D >= 1 channels; got shape {tuple(features.shape)}.")
    if not (isinstance(grid, (tuple, list)) and len(grid) == 2 and all(isinstance(g, int) and not isinstance(g, bool) and g >= 1 for g in grid)):
        raise InputError(f"{where}: grid must be a pair of positive ints (h, w); got {grid!r}.")
    h, w = grid
    if h * w != num_positions:
        raise InputError(f"{where}: grid {h}x{w} has {h * w} cells but features have P={num_positions} positions; pass the pooled grid of the features (e.g. (14, 14) for 196 tokens per frame).")
    if attention is None:
        if need_attention:
            raise InputError(f"{where}: this method ranks tokens by vision attention, so attention (F, P) = ({num_frames}, {num_positions}) is required; got None.")
    else:
        if not isinstance(attention, torch.Tensor) or not attention.is_floating_point() or tuple(attention.shape) != (num_frames, num_positions):
            got = f"shape {tuple(attention.shape)} dtype {attention.dtype}" if isinstance(attention, torch.Tensor) else type(attention).__name__
            raise InputError(f"{where}: attention must be a floating tensor of shape (F, P) = ({num_frames}, {num_positions}) matching the features; got {got}.")
        if attention.device != features.device:
            raise InputError(f"{where}: attention is on {attention.device} but features are on {features.device}; move both to one device.")
        _check_finite(attention, "attention", where)
    ratio = _check_ratio(retain_ratio, where)
    _check_finite(features, "features", where)
    return num_frames, num_positions, h, w, ratio


def _selection_plan(keep: torch.Tensor, num_keep: int, input_shape: tuple[int, int]) -> ReductionPlan:
    """A plan that copies the tokens where ``keep`` (F, P) is True, frame- then position-ordered."""
    num_positions = input_shape[1]
    # The count is known on the host, so nonzero_static avoids the sync that nonzero() needs.
    src = torch.nonzero_static(keep.reshape(-1), size=num_keep).reshape(-1)  # (N,) ascending flat t*P+p
    return ReductionPlan(
        src_index=src,
        dst_index=torch.arange(num_keep, device=keep.device),
        weight=torch.ones(num_keep, device=keep.device, dtype=torch.float32),
        frame_index=src // num_positions,
        position_index=src % num_positions,
        num_out=num_keep,
        input_shape=input_shape,
    )


# ---------------------------------------------------------------------------
# Outer methods
# ---------------------------------------------------------------------------


def plan_uniform_pool(
    features: torch.Tensor,
    attention: torch.Tensor | None,
    retain_ratio: float,
    grid: tuple[int, int],
) -> ReductionPlan:
    """Per frame, average-pool the ``(h, w)`` grid to ``(h', w') = uniform_pool_grid(grid, r)``.

    Pooling follows ``torch.nn.functional.adaptive_avg_pool2d``: output row i
    averages input rows ``floor(i * h / h') .. ceil((i + 1) * h / h') - 1`` (and
    likewise for columns), so when h' does not divide h neighbouring blocks
    share a row. Output tokens: frame-major, then row-major over the pooled grid;
    ``position_index`` is the block's top-left input cell. The plan does not
    depend on the feature values (they are only validated).

    Returns:
        A plan with ``F * h' * w'`` outputs.
    """
    num_frames, num_positions, h, w, ratio = _check_outer_inputs(features, attention, retain_ratio, grid, "plan_uniform_pool", need_attention=False)
    h_out, w_out = uniform_pool_grid((h, w), ratio)
    cells = h_out * w_out

    # Data-independent and tiny, so build it on the host (where nonzero() costs no
    # device sync) and copy it over once.
    def bins(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.arange(n_out)
        return i * n_in // n_out, ((i + 1) * n_in + n_out - 1) // n_out  # start, end (exclusive)

    row_start, row_end = bins(h, h_out)  # (h',), (h',)
    col_start, col_end = bins(w, w_out)  # (w',), (w',)
    rows, cols = torch.arange(h), torch.arange(w)
    in_row = (rows >= row_start[:, None]) & (rows < row_end[:, None])  # (h', h)
    in_col = (cols >= col_start[:, None]) & (cols < col_end[:, None])  # (w', w)
    member = in_row[:, None, :, None] & in_col[None, :, None, :]  # (h', w', h, w)
    cell, pos = member.reshape(cells, num_positions).nonzero(as_tuple=True)  # (E1,), (E1,) cell-major
    area = ((row_end - row_start)[:, None] * (col_end - col_start)[None, :]).reshape(cells)  # (h'*w',)
    weight = (1.0 / area.to(torch.float32))[cell]  # (E1,)

    frames = torch.arange(num_frames)
    src = (frames[:, None] * num_positions + pos[None, :]).reshape(-1)  # (F*E1,)
    dst = (frames[:, None] * cells + cell[None, :]).reshape(-1)  # (F*E1,)
    top_left = (row_start[:, None] * w + col_start[None, :]).reshape(cells)  # (h'*w',)
    device = features.device
    return ReductionPlan(
        src_index=src.to(device),
        dst_index=dst.to(device),
        weight=weight.repeat(num_frames).to(device),
        frame_index=frames.repeat_interleave(cells).to(device),
        position_index=top_left.repeat(num_frames).to(device),
        num_out=num_frames * cells,
        input_shape=(num_frames, num_positions),
    )


def plan_attention_topk(
    features: torch.Tensor,
    attention: torch.Tensor | None,
    retain_ratio: float,
    grid: tuple[int, int],
) -> ReductionPlan:
    """Per frame, keep the ``b_t`` most-attended tokens (VisionZip-style dominant tokens).

    ``b_t`` is :func:`frame_budgets` of :func:`token_budget`. Ties in ``a[t, p]``
    go to the lower position. Kept tokens stay in position order.

    Returns:
        A selection plan with exactly ``token_budget(F, P, r)`` outputs.
    """
    num_frames, num_positions, _, _, ratio = _check_outer_inputs(features, attention, retain_ratio, grid, "plan_attention_topk", need_attention=True)
    total = token_budget(num_frames, num_positions, ratio)
    budgets = frame_budgets(num_frames, total, device=attention.device)  # (F,)
    # A stable descending sort keeps equal scores in position order: the
    # deterministic "lower index wins" tie rule that topk does not promise.
    order = torch.sort(attention, dim=1, descending=True, stable=True).indices  # (F, P)
    ranks = torch.arange(num_positions, device=attention.device).expand(num_frames, num_positions)  # (F, P)
    rank = torch.empty_like(order).scatter_(1, order, ranks)  # (F, P) rank of each position
    keep = rank < budgets[:, None]  # (F, P)
    return _selection_plan(keep, total, (num_frames, num_positions))


# Norms below this count as zero, so a zero token has similarity 0 with anything
# (it is "changed" and kept) instead of a 0/0 NaN.
_COS_EPS = 1e-8


def plan_evs(
    features: torch.Tensor,
    attention: torch.Tensor | None,
    retain_ratio: float,
    grid: tuple[int, int],
) -> ReductionPlan:
    """EVS-style temporal pruning: drop the tokens that changed least since the previous frame.

    Frame 0 keeps all P tokens. For t >= 1,
    ``s[t, p] = <X[t,p], X[t-1,p]> / (max(|X[t,p]|, eps) * max(|X[t-1,p]|, eps))``
    (float32, eps = 1e-8) and the ``B - P`` tokens with the LOWEST similarity
    over all frames t >= 1 together are kept (a global ranking: frames with
    more motion keep more tokens); ties keep the lower flat index ``t * P + p``.

    Raises:
        ConfigError: when ``B = token_budget(F, P, r) < P``; EVS always keeps
            frame 0 whole, so it needs ``r >= P / (F * P) = 1 / F`` (roughly).

    Returns:
        A selection plan with exactly ``B`` outputs.
    """
    num_frames, num_positions, _, _, ratio = _check_outer_inputs(features, attention, retain_ratio, grid, "plan_evs", need_attention=False)
    total = token_budget(num_frames, num_positions, ratio)
    if total < num_positions:
        raise ConfigError(
            f"plan_evs: EVS keeps every token of frame 0, so the budget B = round(r * F * P) = {total} "
            f"(r={ratio}, F={num_frames}, P={num_positions}) must be at least P={num_positions}; "
            f"use retain_ratio >= {num_positions / (num_frames * num_positions):.4g} or more frames."
        )
    x = features.to(torch.float32)  # (F, P, D)
    norm = x.norm(dim=-1).clamp_min(_COS_EPS)  # (F, P)
    sim = (x[1:] * x[:-1]).sum(dim=-1) / (norm[1:] * norm[:-1])  # (F-1, P)
    extra = total - num_positions
    # Ascending stable sort over the flat (t-1)*P + p order: least similar first,
    # equal similarities in ascending flat index, so ties keep the earlier token.
    order = torch.sort(sim.reshape(-1), stable=True).indices  # ((F-1)*P,)
    keep_later = torch.zeros_like(order, dtype=torch.bool).scatter_(0, order[:extra], True)  # ((F-1)*P,)
    first = torch.ones(num_positions, dtype=torch.bool, device=x.device)  # (P,)
    keep = torch.cat([first, keep_later]).reshape(num_frames, num_positions)  # (F, P)
    return _selection_plan(keep, total, (num_frames, num_positions))


BASELINES: dict[str, OuterPlanFn] = {
    "uniform_pool": plan_uniform_pool,
    "attention_topk": plan_attention_topk,
    "evs": plan_evs,
}
# The methods of BASELINES whose plan reads the vision attention.
ATTENTION_BASELINES = frozenset({"attention_topk"})


def apply_reduction(features: torch.Tensor, plan: ReductionPlan) -> torch.Tensor:
    """Apply an outer plan: ``out[dst] += weight * X_flat[src]`` in float32, cast back.

    Args:
        features: ``(..., F, P, D)`` floating; leading dims (e.g. several videos
            sharing a data-independent ``uniform_pool`` plan) are kept.
        plan: built for ``(F, P)``.

    Returns:
        ``(..., N, D)`` in the input dtype. Accumulating in float32 keeps pooled
        means accurate for bf16/fp16 features; pure selections are exact. On
        CUDA, ``index_add_`` of floats is atomic, so pooled sums may differ in
        the last bit between runs.
    """
    if not isinstance(features, torch.Tensor) or features.dim() < 3 or not features.is_floating_point():
        got = f"shape {tuple(features.shape)} dtype {features.dtype}" if isinstance(features, torch.Tensor) else type(features).__name__
        raise InputError(f"apply_reduction: features must be a floating tensor (..., F, P, D); got {got}.")
    num_frames, num_positions = plan.input_shape
    if tuple(features.shape[-3:-1]) != (num_frames, num_positions):
        raise InputError(f"apply_reduction: the plan was built for (F, P) = ({num_frames}, {num_positions}) but features have shape {tuple(features.shape)}; plan and apply the same video.")
    if plan.src_index.device != features.device:
        raise InputError(f"apply_reduction: the plan is on {plan.src_index.device} but features are on {features.device}; build the plan from these features.")
    lead = features.shape[:-3]
    dim = features.shape[-1]
    x = features.reshape(-1, num_frames * num_positions, dim).to(torch.float32)  # (V, F*P, D)
    gathered = x[:, plan.src_index] * plan.weight[:, None]  # (V, E, D)
    out = torch.zeros(x.shape[0], plan.num_out, dim, dtype=torch.float32, device=x.device)  # (V, N, D)
    out.index_add_(1, plan.dst_index, gathered)
    return out.to(features.dtype).reshape(*lead, plan.num_out, dim)  # (..., N, D)


# ---------------------------------------------------------------------------
# FastV (inner-LLM, drop without merging)
# ---------------------------------------------------------------------------


def plan_fastv(scores: torch.Tensor, ratio: float) -> FastVPlan:
    """Keep the ``round(L_v * (1 - R))`` most-attended visual tokens.

    Args:
        scores: ``(L_v,)`` the last prompt token's attention over the visual
            span at layer K-1, head-averaged (see ``holitom.merge.attention``).
        ratio: R in [0, 1), the share of visual tokens to drop.

    Returns:
        ``FastVPlan`` whose ``keep`` is ascending; ties go to the lower index.
        The count uses the same half-to-even rounding as HoliTom's inner merge,
        so both keep the same number of tokens at the same R.
    """
    if not isinstance(scores, torch.Tensor) or scores.dim() != 1 or not scores.is_floating_point():
        got = f"shape {tuple(scores.shape)} dtype {scores.dtype}" if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise InputError(f"plan_fastv: scores must be a 1-D floating tensor (L_v,); got {got}.")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not (0.0 <= ratio < 1.0):
        raise ConfigError(f"plan_fastv: ratio (share of visual tokens dropped) must be in [0, 1); got {ratio!r}. FastV's default is 0.5.")
    _check_finite(scores, "scores", "plan_fastv")
    num_visual = scores.shape[0]
    num_keep = _round_half_even(num_visual * (1.0 - ratio))
    order = torch.sort(scores, descending=True, stable=True).indices  # (L_v,)
    keep = torch.sort(order[:num_keep]).values  # (K_v,)
    return FastVPlan(keep=keep, num_visual=num_visual)


def apply_fastv(hidden: torch.Tensor, visual_span: tuple[int, int], plan: FastVPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove the dropped visual tokens from the hidden states entering layer K.

    Args:
        hidden: ``(S, D)`` or ``(1, S, D)`` hidden states of the whole prompt.
        visual_span: ``(start, end)`` half-open range of the visual tokens, ``end - start == plan.num_visual``.
        plan: from :func:`plan_fastv`.

    Returns:
        ``(hidden_out, kept_index)``: ``hidden_out`` is ``(S', D)`` or ``(1, S', D)``
        and ``kept_index`` ``(S',)`` int64 the kept tokens' indices into the
        original sequence, ascending: the RoPE position ids of layers K..L-1
        (gaps stay, as in HoliTom's inner merge).
    """
    if not isinstance(hidden, torch.Tensor) or hidden.dim() not in (2, 3) or (hidden.dim() == 3 and hidden.shape[0] != 1):
        got = tuple(hidden.shape) if isinstance(hidden, torch.Tensor) else type(hidden).__name__
        raise InputError(f"apply_fastv: hidden must be (S, D) or (1, S, D) (one prompt: each prompt drops different tokens); got {got}.")
    seq_len = hidden.shape[-2]
    if not (
        isinstance(visual_span, (tuple, list))
        and len(visual_span) == 2
        and all(isinstance(i, int) and not isinstance(i, bool) for i in visual_span)
        and 0 <= visual_span[0] <= visual_span[1] <= seq_len
    ):
        raise InputError(f"apply_fastv: visual_span must be (start, end) with 0 <= start <= end <= S={seq_len}; got {visual_span!r}.")
    start, end = visual_span
    if end - start != plan.num_visual:
        raise InputError(f"apply_fastv: the plan covers L_v={plan.num_visual} visual tokens but visual_span {visual_span} has {end - start}; plan from the scores of this span.")
    if plan.keep.device != hidden.device:
        raise InputError(f"apply_fastv: the plan is on {plan.keep.device} but hidden is on {hidden.device}.")
    device = hidden.device
    kept_index = torch.cat(
        [
            torch.arange(start, device=device),
            plan.keep + start,
            torch.arange(end, seq_len, device=device),
        ]
    )  # (S',)
    return hidden.index_select(-2, kept_index), kept_index


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BaselineConfig:
    """A competing method to run at the same budget as a HoliTom setting.

    Attributes:
        method: a key of :data:`BASELINES` (the outer reduction).
        retain_ratio: r in (0, 1]; r = 1 makes the outer step an identity, so
            ``BaselineConfig("attention_topk", 1.0, fastv_layer_frac=...)`` is FastV alone.
        fastv_layer_frac: None for no inner step; else K / L in (0, 1), the
            decoder depth where FastV drops tokens (18/28 matches HoliTom's K=18
            on 28-layer decoders; FastV's own default is 2/28). A fraction rather
            than K so one config serves decoders of different depths.
        fastv_ratio: R in [0, 1), share of visual tokens FastV drops.
    """

    method: str
    retain_ratio: float
    fastv_layer_frac: float | None = None
    fastv_ratio: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or self.method not in BASELINES:
            raise ConfigError(f"BaselineConfig: unknown method {self.method!r}; allowed values are {sorted(BASELINES)}.")
        if isinstance(self.retain_ratio, bool) or not isinstance(self.retain_ratio, (int, float)) or not (0.0 < self.retain_ratio <= 1.0):
            raise ConfigError(f"BaselineConfig: retain_ratio must be a number in (0, 1]; got {self.retain_ratio!r}. Allowed values: 0 < r <= 1, e.g. 0.10 or 0.25.")
        frac = self.fastv_layer_frac
        if frac is not None and (isinstance(frac, bool) or not isinstance(frac, (int, float)) or not (0.0 < frac < 1.0)):
            raise ConfigError(f"BaselineConfig: fastv_layer_frac must be None (no FastV) or a number in (0, 1) (K / L); got {frac!r}.")
        ratio = self.fastv_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not (0.0 <= ratio < 1.0):
            raise ConfigError(f"BaselineConfig: fastv_ratio must be a number in [0, 1); got {ratio!r}.")

    def to_dict(self) -> dict:
        """JSON-safe fields, with ``"method"`` naming the competing method; :meth:`from_dict` round-trips it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "BaselineConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ConfigError."""
        return cls(**known_fields(cls, data))

    def plan(self, features: torch.Tensor, attention: torch.Tensor | None, grid: tuple[int, int]) -> ReductionPlan:
        """The outer plan of this config's method (dispatch through :data:`BASELINES`)."""
        return BASELINES[self.method](features, attention, self.retain_ratio, grid)

    def fastv_layer(self, num_layers: int) -> int | None:
        """Decoder layer K = round(frac * L) for FastV, or None when FastV is off.

        Raises:
            ConfigError: when K falls outside 1..L-1 (FastV reads layer K-1's
                attention and needs at least one layer after it).
        """
        if self.fastv_layer_frac is None:
            return None
        layer = _round_half_even(self.fastv_layer_frac * num_layers)
        if not 1 <= layer <= num_layers - 1:
            raise ConfigError(f"BaselineConfig: fastv_layer_frac={self.fastv_layer_frac} on a {num_layers}-layer decoder gives K={layer}; FastV needs 1 <= K <= {num_layers - 1}.")
        return layer


__all__ = [
    "ATTENTION_BASELINES",
    "BASELINES",
    "BaselineConfig",
    "FastVPlan",
    "OuterPlanFn",
    "ReductionPlan",
    "apply_fastv",
    "apply_reduction",
    "frame_budgets",
    "plan_attention_topk",
    "plan_evs",
    "plan_fastv",
    "plan_uniform_pool",
    "token_budget",
    "uniform_pool_grid",
]
