"""Stages I + II of HoliTom (the outer merge) as one plan and one linear apply step.

:func:`plan_outer_merge` runs the temporal segmentation (:mod:`.temporal`), the
budget rescaling, the per-frame attention top-k, the density-peak clustering of
static (and, with ``contextual_frac > 0``, contextual) tokens (:mod:`.dpc`) and
the output ordering of the layout (:mod:`.layout`). It returns an
:class:`OuterMergePlan`, whose core is a **linear map** from the ``F * P`` input
tokens to the ``N_out`` output rows:

.. code-block:: text

    X_flat = features.reshape(F * P, D)                 # row t * P + p is X[t, p]
    out[r] = sum over edges e with dst_index[e] == r of weight[e] * X_flat[src_index[e]]
    out[newline_index] = newline                        # rows that hold no edge

Every output token is a convex combination of input tokens: a kept dynamic
token is one edge of weight 1; a static position of a window is the time mean
(weight ``1/len`` on each of its frames); a cluster is
``beta * centre + (1 - beta) * mean(members)``, the product of both. Edges are
sorted by ``dst_index`` (then by source), ``offsets[r]`` is the first edge of
row ``r`` (rows without edges, i.e. newlines, have an empty range), so the apply
step is a single ``embedding_bag(mode="sum", per_sample_weights=weight)`` (eager)
or, equivalently, a mix over time per position followed by a mix over positions
per frame, two batched matrix products (:func:`_frame_matmul`, the form the ONNX
graph and so TensorRT run). Both are registered in :data:`APPLY_METHODS` and
tested equal.

One definition: :func:`plan_tensors` and :func:`apply_tensors` compute one
video with tensor ops only, through the two custom ops of
:mod:`.custom_ops` (``TemporalSegment``, ``DensityPeakMerge``), and are what
``torch.onnx.export`` turns into the outer-merge graph
(:class:`holitom.export.wrappers.OuterMerge`); :func:`plan_outer_merge` wraps
them for eager use (input checks, several videos, edges sorted by row, host
metadata).

Budget arithmetic (float64 tensors, exactly DESIGN.md): ``N = F * P``,
``r' = min(r / ((N - R_total) / N), 1)``; per window ``b = ceil(n_dyn * r')``
dynamic tokens per frame, ``dominant = round(b * (1 - D_frac))`` (half to
even), ``contextual = b - dominant``, and ``M = round(n_st * r')`` static
clusters (0 for single-frame windows). Dominant tokens are the top
``dominant`` by attention among the frame's dynamic tokens, the lower position
first among equal attention (stable sort).

DPC batching: the static groups (one per multi-frame window with ``M > 0``)
are packed to one slot count (the largest static count) and clustered in one
batched call, likewise the contextual groups (one per frame); no Python loop
over windows, clusters or tokens. The window means of the static tokens are one
``(W, F) @ (F, P * D)`` matmul.

Host syncs (free on the CPU, a device sync on a GPU, an unbacked size in an
export): the DP's table copy inside ``TemporalSegment``'s reference, the
number of windows with clusters, the packed group width and the output row
count. Vanilla configs (``retain_ratio=None``) skip stage I.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import torch
import torch.nn.functional as F

from holitom.errors import ConfigError, InputError
from holitom.merge._checks import all_finite, check_tensor, raise_non_finite
from holitom.merge.config import MergeConfig
from holitom.merge.custom_ops import density_peak_decisions, exporting, temporal_segment
from holitom.merge.dpc import slot_weights
from holitom.merge.layout import Layout, check_grid, get_layout
from holitom.merge.temporal import TemporalPlan, check_features

LayoutName = Literal["onevision", "llava_video"]


@dataclass(frozen=True, eq=False)
class OuterMergePlan:
    """Plan of the outer merge of one video (see the module docstring for the linear form).

    Attributes:
        num_frames, tokens_per_frame, grid, layout: the input's F, P, ``(rows, cols)`` and layout name.
        temporal: the stage-I plan, None for a vanilla config.
        retain_ratio: the rescaled ``r'``, None for a vanilla config.
        frame_budget: ``(F,)`` dynamic tokens kept in each frame (``b``).
        static_clusters: static clusters ``M`` of each window (0 for single frames).
        src_index: ``(E,)`` int64 flat input index ``t * P + p``.
        dst_index: ``(E,)`` int64 output row, non-decreasing.
        weight: ``(E,)`` float32 coefficients.
        offsets: ``(N_out,)`` int64 first edge of each output row.
        frame_index: ``(N_out,)`` int64 frame each row belongs to (a static
            cluster: its window's first frame; a newline: the frame it closes).
        position_index: ``(N_out,)`` int64 grid position, -1 for newline rows.
        newline_index: ``(N_newline,)`` int64 output rows that hold the newline.
    """

    num_frames: int
    tokens_per_frame: int
    grid: tuple[int, int]
    layout: str
    temporal: TemporalPlan | None
    retain_ratio: float | None
    frame_budget: tuple[int, ...]
    static_clusters: tuple[int, ...]
    src_index: torch.Tensor
    dst_index: torch.Tensor
    weight: torch.Tensor
    offsets: torch.Tensor
    frame_index: torch.Tensor
    position_index: torch.Tensor
    newline_index: torch.Tensor

    @property
    def num_rows(self) -> int:
        """``N_out``: output rows, newlines included."""
        return int(self.frame_index.shape[0])

    @property
    def num_newlines(self) -> int:
        return int(self.newline_index.shape[0])

    @property
    def num_visual_tokens(self) -> int:
        """Output rows that are merged / kept video tokens (not newlines)."""
        return self.num_rows - self.num_newlines

    @property
    def windows(self) -> torch.Tensor:
        """``(num_windows, 2)`` inclusive frame windows (single frames for a vanilla plan)."""
        if self.temporal is not None:
            return self.temporal.windows
        frames = torch.arange(self.num_frames, dtype=torch.long)
        return torch.stack([frames, frames], 1)


@dataclass(frozen=True, eq=False)
class OuterMergeResult:
    """``tokens``: ``(N_out, D)`` merged video tokens with newlines, in the features' dtype."""

    tokens: torch.Tensor
    plan: OuterMergePlan


# --------------------------------------------------------------------------- the plan as tensor code
#
# One video at a time, written with tensor ops only (no host numbers derived
# from the data, no Python loop over windows, tokens or clusters), so that
# ``torch.onnx.export`` turns exactly this code into the outer-merge graph
# (:mod:`holitom.export.merge_graphs`). Sizes that depend on the data (how many
# windows hold static clusters, how many slots a group needs, how many rows come
# out) come from ``nonzero`` / ``.item()``: free on the CPU, a sync on a GPU,
# unbacked sizes in an export. Empty cases (no window with clusters, no valid
# slot) are handled by one padding row or column instead of a branch, because
# an export cannot branch on a size it does not know.


@dataclass(frozen=True, eq=False)
class PlanTensors:
    """What :func:`plan_tensors` computes for one video: the export-visible part of a plan.

    ``src``, ``dst``, ``weight``: ``(E,)`` edges in ascending ``src`` order;
    ``frame_index``, ``position_index``: ``(N_out,)`` (position -1: newline);
    ``budget``: ``(F,)`` dynamic tokens kept per frame; ``clusters``: ``(F,)``
    static clusters of the window starting at each frame (0 elsewhere);
    ``retain_ratio``: ``()`` float64 ``r'``; ``temporal``: the eager stage-I
    plan. The last four are None for a vanilla config, ``temporal`` also in an export.
    """

    src: torch.Tensor
    dst: torch.Tensor
    weight: torch.Tensor
    frame_index: torch.Tensor
    position_index: torch.Tensor
    budget: torch.Tensor | None = None
    clusters: torch.Tensor | None = None
    retain_ratio: torch.Tensor | None = None
    temporal: TemporalPlan | None = None


def _data_size(value: torch.Tensor, upper: int) -> int:
    """A data-dependent size as an int (unbacked when exporting), known to lie in ``0..upper``."""
    size = value.item()
    torch._check(size >= 0)
    torch._check(size <= upper)
    return size


def _rank_of(order: torch.Tensor) -> torch.Tensor:
    """The inverse permutation of each row of ``order`` ``(G, n)``: the rank of each index."""
    ranks = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, ranks)


def _cluster_groups(
    tokens: torch.Tensor, valid: torch.Tensor, clusters: torch.Tensor, config: MergeConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPC of ``G`` groups of ``P`` positions: ``tokens (G, P, D)``, ``valid (G, P)``, ``clusters (G,)``.

    The valid positions are packed (ascending) into ``n = max valid count``
    slots before the op, which shrinks its O(G n^2 D) work (to (0.6)^2 of it
    when 60% of the positions are valid) and keeps every index-based tie rule.

    Returns, per ``(G, P)`` position: the position of the centre it joined (-1:
    none), its weight in that centre's merged token, and whether it is a centre.
    """
    groups, positions, dim = tokens.shape
    device = tokens.device
    counts = valid.sum(1)  # (G,)
    width = _data_size(torch.cat([counts, counts.new_zeros(1)]).max(), positions)  # n (0 when G = 0)
    order = torch.sort((~valid).long(), dim=1, stable=True).indices  # (G, P) valid positions first, ascending
    packed_pos = order[:, :width]  # (G, n)
    # Rows of the flattened (G*P, D) tokens: a row gather (ONNX Gather) copies whole rows, where
    # gather over an expanded (G, n, D) index reads one index per element (3x slower on CPU).
    rows = (packed_pos + torch.arange(groups, device=device)[:, None] * positions).reshape(-1)  # (G*n,)
    packed = tokens.reshape(groups * positions, dim).index_select(0, rows).view(groups, width, dim)  # (G, n, D) a fresh copy
    packed_valid = torch.arange(width, device=device)[None, :] < counts[:, None]  # (G, n)
    is_centre, assignment = density_peak_decisions(packed, packed_valid, clusters, config.k_nn, config.beta)
    weight = slot_weights(is_centre, assignment, config.beta)  # (G, n)
    centre_pos = torch.where(assignment >= 0, packed_pos.gather(1, assignment.clamp_min(0)), -1)  # (G, n)
    # Unpack to positions through one padding slot (n), which also serves groups of zero width.
    pad = torch.full((groups, 1), -1, dtype=torch.long, device=device)
    slot = torch.where(valid, _rank_of(order), width)  # (G, P) the slot of each valid position, else the pad
    centre_pos = torch.cat([centre_pos, pad], 1).gather(1, slot)  # (G, P)
    weight = torch.cat([weight, pad.float() * 0.0], 1).gather(1, slot)  # (G, P)
    is_centre = torch.cat([is_centre, pad >= 0], 1).gather(1, slot)  # (G, P)
    return centre_pos, weight, is_centre


def _window_means(x: torch.Tensor, start: torch.Tensor, length: torch.Tensor, firsts: torch.Tensor) -> torch.Tensor:
    """``(W, P, D)``: the mean of ``x (F, P, D)`` over the frames of each window that starts at ``firsts (W,)``.

    ``start``, ``length``: ``(F,)`` each frame's window start and its frame count (float).
    """
    num_frames, num_pos, dim = x.shape
    window_length = length.index_select(0, firsts).to(x.dtype)[:, None, None]  # (W, 1, 1)
    if x.device.type == "cpu" and not exporting():
        # Eager on CPU: a sum over each window's frame slice reads x once. A (W, F) @ (F, P*D)
        # matmul with W, F this small costs three times as much there (one thread, P*D = 196 * 3584).
        # Each sum goes straight into its row and the division is in place: a fresh 11 MB buffer
        # per step costs page faults that are a third of the time.
        sums = x.new_empty((firsts.shape[0], num_pos, dim))  # (W, P, D)
        for row, (first, frames) in enumerate(zip(firsts.tolist(), window_length.flatten().tolist())):
            torch.sum(x[first : first + int(frames)], 0, out=sums[row])
        return sums.div_(window_length)
    # A graph cannot loop over a data-dependent count of windows: one MatMul.
    member = (start[None, :] == firsts[:, None]).to(x.dtype)  # (W, F)
    sums = (member @ x.reshape(num_frames, num_pos * dim)).view(-1, num_pos, dim)  # (W, P, D)
    return sums / window_length


def plan_tensors(
    x: torch.Tensor, attention: torch.Tensor | None, config: MergeConfig, grid: tuple[int, int], layout: Layout
) -> PlanTensors:
    """Stages I + II of one video (``x (F, P, D)`` float32, ``attention (F, P)``) as the edges of the linear map.

    Budget arithmetic in float64, exactly as DESIGN.md words it: ``N = F * P``,
    ``r' = min(r / ((N - R_total) / N), 1)`` (the official expression),
    ``b = ceil(n_dyn * r')`` per frame, ``dominant = round(b * (1 - D_frac))``
    (half to even), ``M = round(n_st * r')`` per multi-frame window.
    """
    num_frames, num_pos, _ = x.shape
    device = x.device
    frames = torch.arange(num_frames, device=device)  # (F,)
    if not config.outer_enabled:
        every = torch.ones((num_frames, num_pos), dtype=torch.bool, device=device)
        return _edges(layout, grid, torch.zeros_like(every), every)

    start, end, static, temporal = temporal_segment(x, config.tau, config.max_window)  # (F,), (F,), (F, P)
    is_start = start == frames  # (F,)
    n_static = static.sum(1)  # (F,) static positions of each frame's window
    removed = torch.where(is_start, 0, n_static).sum()  # () R_total: frames after a window's first drop its statics
    total = torch.ones_like(n_static, dtype=torch.float64).sum() * num_pos  # () N = F * P
    # Host numbers enter as float64 tensors: an export would store a Python scalar as float32, and
    # `float / tensor` computes `float * reciprocal(tensor)`, off in the last bit.
    ratio = torch.tensor(config.retain_ratio, dtype=torch.float64, device=device)
    retain = torch.clamp(ratio / ((total - removed) / total), max=1.0)  # () r'
    budget = torch.ceil((num_pos - n_static).double() * retain).long()  # (F,) b
    dominant_share = torch.tensor(1.0 - config.contextual_frac, dtype=torch.float64, device=device)
    dominant = torch.round(budget.double() * dominant_share).long()  # (F,)
    clusters = torch.where(is_start & (end > start), torch.round(n_static.double() * retain).long(), 0)  # (F,) M

    # Dominant tokens: the top `dominant` dynamic tokens of each frame by attention, the lower p first among ties.
    score = attention.float().masked_fill(static, float("-inf"))  # (F, P) static positions rank last
    rank = _rank_of(torch.sort(score, dim=1, descending=True, stable=True).indices)  # (F, P)
    keep_dominant = ~static & (rank < dominant[:, None])  # (F, P)

    # Contextual clusters (D_frac > 0, a config value: the graph holds them or not): the
    # dynamic tokens of each frame left after the top-k, clustered per frame.
    context = None
    dynamic_at = keep_dominant
    if config.contextual_frac > 0.0:
        context = _cluster_groups(x, ~static & ~keep_dominant, budget - dominant, config)
        dynamic_at = keep_dominant | context[2]

    # Static clusters: one group per window with M > 0, its static positions' window means.
    firsts = torch.nonzero(clusters > 0)[:, 0]  # (W,) first frames of those windows
    num_groups = firsts.shape[0]
    length = (end - start + 1).float()  # (F,) frames in each frame's window
    means = _window_means(x, start, length, firsts)  # (W, P, D)
    centre, weight, is_centre = _cluster_groups(means, static.index_select(0, firsts), clusters.index_select(0, firsts), config)
    static_at = torch.zeros_like(static).index_copy(0, firsts, is_centre)  # (F, P) centres sit at the window's first frame
    # Each frame reads its window's group row; frames of windows without clusters read a padding row (no centre).
    group_row = torch.full_like(frames, num_groups).index_copy(0, firsts, torch.arange(num_groups, device=device))  # (F,)
    row = group_row.index_select(0, start)  # (F,)
    centre = torch.cat([centre, centre.new_full((1, num_pos), -1)]).index_select(0, row)  # (F, P)
    weight = torch.cat([weight, weight.new_zeros((1, num_pos))]).index_select(0, row) / length[:, None]  # (F, P)
    edges = _edges(layout, grid, static_at, dynamic_at, keep_dominant, context, (start, centre, weight))
    return PlanTensors(
        edges.src, edges.dst, edges.weight, edges.frame_index, edges.position_index, budget, clusters, retain, temporal
    )


def _edges(
    layout: Layout,
    grid: tuple[int, int],
    static_at: torch.Tensor,
    dynamic_at: torch.Tensor,
    keep_dominant: torch.Tensor | None = None,
    context: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    static: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> PlanTensors:
    """Order the placed tokens by the layout; every input token becomes at most one edge.

    ``static_at`` / ``dynamic_at``: ``(F, P)`` where a merged static token / a
    dynamic token sits. ``keep_dominant``: tokens copied as they are (default:
    ``dynamic_at``). ``context``: per ``(F, P)`` the contextual centre position
    in the same frame and the weight; ``static``: each frame's window start and
    per ``(F, P)`` the static centre position and the weight (already / length).
    """
    keep_dominant = dynamic_at if keep_dominant is None else keep_dominant
    slots = layout.slots(static_at, dynamic_at, grid)
    row_of_slot = slots.occupied.long().cumsum(0) - 1  # (S,) output row of each occupied slot
    out_slots = torch.nonzero(slots.occupied)[:, 0]  # (N_out,)
    token_row = row_of_slot[slots.token_slot]  # (F, P) the row of a token placed at (t, p)

    dst = torch.where(keep_dominant, token_row, -1)  # (F, P)
    weight = keep_dominant.float()  # (F, P)
    if context is not None:  # a contextual token joins its centre's row in its own frame
        centre, w, _ = context
        dst = torch.where(centre >= 0, token_row.gather(1, centre.clamp_min(0)), dst)
        weight = torch.where(centre >= 0, w, weight)
    if static is not None:  # a static token joins its cluster's row at its window's first frame
        start, centre, w = static
        first_rows = token_row.index_select(0, start)  # (F, P)
        dst = torch.where(centre >= 0, first_rows.gather(1, centre.clamp_min(0)), dst)
        weight = torch.where(centre >= 0, w, weight)
    dst = dst.reshape(-1)  # (F*P,)
    src = torch.nonzero(dst >= 0)[:, 0]  # (E,) ascending
    return PlanTensors(
        src=src,
        dst=dst.index_select(0, src),
        weight=weight.reshape(-1).index_select(0, src),
        frame_index=slots.slot_frame.index_select(0, out_slots),
        position_index=slots.slot_position.index_select(0, out_slots),
    )


def _frame_matmul(
    x_flat: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, weight: torch.Tensor, frame_index: torch.Tensor, num_frames: int
) -> torch.Tensor:
    """``(N_out, D)``: the edges' linear map as two batched matrix products (the exported apply).

    An edge reads ``x[ts, ps]`` into a row of frame ``td`` (its ``frame_index``). A plan's edges
    that reach frame ``td`` from position ``ps`` all go to one row (a static position of a window
    joins one cluster, a dynamic token is its own edge), so the map factors into a mix over time
    per position, ``z[td, ps] = sum_ts share * x[ts, ps]`` (a window mean, or the token itself),
    and a mix over positions per frame, ``out[td, row] = sum_ps w[td, row, ps] * z[td, ps]``, with
    each frame's rows packed into ``R`` slots (the most rows any frame has). Exported, these are two
    MatMuls and scatters of one number per edge (``scatter_add``), where a row scatter (``index_add`` over
    ``(E, D)``) is a ScatterElements that onnxruntime's CPU kernel walks element by element:
    7.4 of the default model's 19 ms merge graph at 32 frames; the apply alone at D = 896, 62 ms (15 ms this way).
    Eager, ``embedding_bag`` is faster (:data:`APPLY_METHODS`). Newline rows hold no edge: 0.
    """
    positions, dim = x_flat.shape[0] // num_frames, x_flat.shape[1]
    rows = frame_index.shape[0]
    source_frame, source_pos = src // positions, src % positions  # (E,)
    target_frame = frame_index.index_select(0, dst)  # (E,)
    in_frame = (frame_index[:, None] == torch.arange(num_frames, device=dst.device)[None, :]).long()  # (N_out, F)
    slot = (in_frame.cumsum(0) * in_frame).sum(1) - 1  # (N_out,) a row's rank among its frame's rows
    height = _data_size(torch.cat([slot, slot.new_zeros(1)]).max(), rows) + 1  # R

    pair = target_frame * positions + source_pos  # (E,) the (target frame, source position) an edge goes through
    pair_weight = weight.new_zeros(num_frames * positions).scatter_add(0, pair, weight).index_select(0, pair)  # (E,)
    share = torch.where(pair_weight != 0, weight / pair_weight, 0.0)  # (E,) the edge's part of its pair's time mix
    time_at = (source_pos * num_frames + target_frame) * num_frames + source_frame  # (E,) into (P, F, F)
    time_mix = weight.new_zeros(positions * num_frames * num_frames).scatter_add(0, time_at, share)
    x = x_flat.reshape(num_frames, positions, dim)  # (F, P, D)
    z = torch.matmul(time_mix.view(positions, num_frames, num_frames), x.transpose(0, 1))  # (P, F, D)

    pos_at = (target_frame * height + slot.index_select(0, dst)) * positions + source_pos  # (E,) into (F, R, P)
    pos_mix = weight.new_zeros(num_frames * height * positions).scatter_add(0, pos_at, weight)  # each pair's summed weight
    out = torch.matmul(pos_mix.view(num_frames, height, positions), z.transpose(0, 1))  # (F, R, D)
    return out.reshape(num_frames * height, dim).index_select(0, frame_index * height + slot)  # (N_out, D)


def apply_tensors(x_flat: torch.Tensor, plan: PlanTensors, newline: torch.Tensor) -> torch.Tensor:
    """``(N_out, D)`` float32: the edges' linear map, then the newline rows (the exported apply)."""
    if plan.budget is None:
        # Vanilla: each token is its own row with weight 1, so the map is a gather with the same values
        # (0 + 1 * x == x): onnxruntime's vanilla graph went from 22.5 to 2.0 ms (default model, 32 frames, 2 threads).
        source = torch.zeros_like(plan.frame_index).index_copy(0, plan.dst, plan.src)  # (N_out,) 0 at newline rows
        out = x_flat.index_select(0, source)  # (N_out, D)
    else:
        out = _frame_matmul(x_flat, plan.src, plan.dst, plan.weight, plan.frame_index, plan.budget.shape[0])
    return torch.where((plan.position_index < 0)[:, None], newline.to(out.dtype)[None, :], out)


# --------------------------------------------------------------------------- input handling


def _split_inputs(features, attention, need_attention: bool) -> tuple[list[torch.Tensor], list[torch.Tensor | None], bool]:
    """Normalise (F,P,D) / (V,F,P,D) / list inputs to per-video lists; returns whether the call was batched."""
    if isinstance(features, (list, tuple)):
        feats = list(features)
        batched = True
        if attention is None:
            attns = [None] * len(feats)
        elif isinstance(attention, (list, tuple)):
            attns = list(attention)
        else:
            check_tensor("attention", attention, 3)
            attns = list(attention.unbind(0))
        if len(attns) != len(feats):
            raise InputError(f"got {len(feats)} feature tensors but {len(attns)} attention tensors.")
    else:
        check_tensor("features", features, (3, 4))
        batched = features.dim() == 4
        feats = list(features.unbind(0)) if batched else [features]
        if attention is None:
            attns = [None] * len(feats)
        else:
            check_tensor("attention", attention, 3 if batched else 2)
            attns = list(attention.unbind(0)) if batched else [attention]
            if len(attns) != len(feats):
                raise InputError(f"attention holds {len(attns)} videos but features hold {len(feats)}.")
    if not feats:
        raise InputError("features must hold at least one video.")
    for v, (x, a) in enumerate(zip(feats, attns)):
        name = f"features[{v}]" if batched else "features"
        check_features(x, name)
        if a is None:
            if need_attention:
                raise InputError(f"attention is required for an outer merge (the dominant tokens are its top-k), got None for {name}.")
            continue
        check_tensor(f"attention[{v}]" if batched else "attention", a, 2)
        if tuple(a.shape) != tuple(x.shape[:2]):
            raise InputError(f"attention must have shape (F, P) = {tuple(x.shape[:2])} to match {name}, got {tuple(a.shape)}.")
        if a.device != x.device:
            raise InputError(f"attention is on {a.device} but {name} is on {x.device}; move both to one device.")
    return feats, attns, batched


def plan_outer_merge(
    features: torch.Tensor | Sequence[torch.Tensor],
    attention: torch.Tensor | Sequence[torch.Tensor] | None,
    config: MergeConfig,
    grid: tuple[int, int],
    layout: LayoutName | str,
) -> OuterMergePlan | list[OuterMergePlan]:
    """Plan stages I + II (DESIGN.md section 2) for one or several videos.

    Args:
        features: ``(F, P, D)``, ``(V, F, P, D)`` or a list of ``(F_v, P, D)``;
            float32 / float16 / bfloat16 (computed in float32).
        attention: ``(F, P)`` vision attention per token (``(V, F, P)`` or a list
            for several videos); may be None for a vanilla config.
        config: the :class:`MergeConfig` (``retain_ratio=None`` = vanilla: every
            token in order with the layout's newlines).
        grid: ``(rows, cols)`` of the pooled grid, ``rows * cols == P``.
        layout: ``"onevision"`` or ``"llava_video"`` (:mod:`.layout` registry).

    Returns:
        One :class:`OuterMergePlan` for a single ``(F, P, D)`` video, else a list.
    """
    if not isinstance(config, MergeConfig):
        raise ConfigError(f"config must be a MergeConfig (see holitom.merge.get_preset), got {type(config).__name__}.")
    layout_obj = get_layout(layout)
    feats, attns, batched = _split_inputs(features, attention, config.outer_enabled)
    shapes = {tuple(x.shape[1:]) for x in feats}
    if len({s[0] for s in shapes}) != 1:
        raise InputError(f"all videos must share P (tokens per frame); got shapes {sorted(shapes)}.")
    grid = check_grid(grid, feats[0].shape[1])
    plans = []
    for v, (x, a) in enumerate(zip(feats, attns)):  # one video at a time: the exported graph's unit
        suffix = f"[{v}]" if batched else ""
        if a is not None and config.outer_enabled and not all_finite(a):
            raise_non_finite(f"attention{suffix}")
        with torch.no_grad():
            try:
                tensors = plan_tensors(x.float(), a, config, grid, layout_obj)
            except InputError as exc:  # the stage-I reference names "features"; say which video
                raise InputError(str(exc).replace("features", f"features{suffix}", 1)) from None
        plans.append(_eager_plan(tensors, x.shape, grid, layout_obj))
    return plans if batched else plans[0]


def _eager_plan(tensors: PlanTensors, shape: torch.Size, grid: tuple[int, int], layout: Layout) -> OuterMergePlan:
    """The :class:`OuterMergePlan` of :func:`plan_tensors`' output: edges sorted by row, host metadata."""
    num_frames, num_pos, _ = shape
    order = torch.sort(tensors.dst, stable=True).indices  # by output row; sources stay ascending within a row
    dst = tensors.dst[order]
    num_rows = int(tensors.frame_index.shape[0])
    temporal = tensors.temporal
    if temporal is None:  # vanilla: every token, single-frame windows
        budget, clusters, retain = (num_pos,) * num_frames, (0,) * num_frames, None
    else:
        budget = tuple(tensors.budget.tolist())
        clusters = tuple(tensors.clusters[temporal.windows[:, 0].to(tensors.clusters.device)].tolist())
        retain = float(tensors.retain_ratio)
    return OuterMergePlan(
        num_frames=num_frames,
        tokens_per_frame=num_pos,
        grid=grid,
        layout=layout.name,
        temporal=temporal,
        retain_ratio=retain,
        frame_budget=budget,
        static_clusters=clusters,
        src_index=tensors.src[order],
        dst_index=dst,
        weight=tensors.weight[order],
        offsets=torch.searchsorted(dst, torch.arange(num_rows, device=dst.device)),
        frame_index=tensors.frame_index,
        position_index=tensors.position_index,
        newline_index=torch.nonzero(tensors.position_index < 0)[:, 0],
    )


# --------------------------------------------------------------------------- apply


def _apply_embedding_bag(x_flat: torch.Tensor, plan: OuterMergePlan) -> torch.Tensor:
    # Weighted sum of each row's edges without materialising an (E, D) temporary.
    return F.embedding_bag(plan.src_index, x_flat, plan.offsets, mode="sum", per_sample_weights=plan.weight)


def _apply_frame_matmul(x_flat: torch.Tensor, plan: OuterMergePlan) -> torch.Tensor:
    # The exported form (what apply_tensors runs).
    return _frame_matmul(x_flat, plan.src_index, plan.dst_index, plan.weight, plan.frame_index, plan.num_frames)


APPLY_METHODS: dict[str, Callable[[torch.Tensor, OuterMergePlan], torch.Tensor]] = {
    "embedding_bag": _apply_embedding_bag,
    "frame_matmul": _apply_frame_matmul,
}


def _check_apply_inputs(features: torch.Tensor, plan: OuterMergePlan, newline: torch.Tensor) -> int:
    check_tensor("features", features, 3)
    if not isinstance(plan, OuterMergePlan):
        raise InputError(f"plan must be an OuterMergePlan, got {type(plan).__name__}.")
    if tuple(features.shape[:2]) != (plan.num_frames, plan.tokens_per_frame):
        raise InputError(
            f"features of shape {tuple(features.shape)} do not match the plan, made for "
            f"(F, P) = ({plan.num_frames}, {plan.tokens_per_frame})."
        )
    dim = features.shape[2]
    check_tensor("newline", newline, 1)
    if newline.shape[0] != dim:
        raise InputError(f"newline must have shape (D,) = ({dim},), got {tuple(newline.shape)}.")
    return dim


def _apply_one(features: torch.Tensor, plan: OuterMergePlan, newline: torch.Tensor, method: str) -> torch.Tensor:
    dim = _check_apply_inputs(features, plan, newline)
    try:
        kernel = APPLY_METHODS[method]
    except KeyError:
        raise ConfigError(f"unknown apply method {method!r}; known methods: {sorted(APPLY_METHODS)}.") from None
    x_flat = features.reshape(-1, dim).float()  # (F*P, D); a view for contiguous float32 input
    out = kernel(x_flat, plan)  # (N_out, D) float32; differentiable in the features (a training step may merge)
    out = out.index_copy(0, plan.newline_index, newline.to(out).expand(plan.num_newlines, dim))
    return out.to(features.dtype)


def apply_outer_merge(
    features: torch.Tensor | Sequence[torch.Tensor],
    plan: OuterMergePlan | Sequence[OuterMergePlan],
    newline: torch.Tensor,
    *,
    method: str = "embedding_bag",
) -> torch.Tensor | list[torch.Tensor]:
    """Apply an outer-merge plan: one weighted scatter in float32, then the newline rows.

    Args:
        features: ``(F, P, D)`` (or ``(V, F, P, D)`` / a list, with a list of plans).
        plan: from :func:`plan_outer_merge`.
        newline: ``(D,)`` the model's ``image_newline`` embedding.
        method: a key of :data:`APPLY_METHODS` (same result, different kernels).

    Returns:
        ``(N_out, D)`` tokens in the features' dtype (a list for several videos).
    """
    if isinstance(plan, OuterMergePlan):
        return _apply_one(features, plan, newline, method)
    plans = list(plan)
    feats = list(features) if isinstance(features, (list, tuple)) else list(features.unbind(0))
    if len(feats) != len(plans):
        raise InputError(f"got {len(feats)} videos but {len(plans)} plans.")
    return [_apply_one(x, p, newline, method) for x, p in zip(feats, plans)]


def outer_merge(
    features: torch.Tensor | Sequence[torch.Tensor],
    attention: torch.Tensor | Sequence[torch.Tensor] | None,
    config: MergeConfig,
    grid: tuple[int, int],
    layout: LayoutName | str,
    newline: torch.Tensor,
) -> OuterMergeResult | list[OuterMergeResult]:
    """Plan and apply the outer merge (stages I + II): what the runtime calls.

    Same arguments as :func:`plan_outer_merge` plus the ``(D,)`` newline
    embedding; exactly ``apply_outer_merge(features, plan_outer_merge(...),
    newline)``. Returns an :class:`OuterMergeResult` (a list for several videos).
    """
    plans = plan_outer_merge(features, attention, config, grid, layout)
    if isinstance(plans, OuterMergePlan):
        return OuterMergeResult(apply_outer_merge(features, plans, newline), plans)
    return [OuterMergeResult(t, p) for t, p in zip(apply_outer_merge(features, plans, newline), plans)]


__all__ = [
    "APPLY_METHODS",
    "OuterMergePlan",
    "OuterMergeResult",
    "apply_outer_merge",
    "outer_merge",
    "plan_outer_merge",
]
