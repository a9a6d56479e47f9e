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
step is a single ``embedding_bag(mode="sum", per_sample_weights=weight)`` or,
equivalently, ``zeros(N_out, D).index_add_(0, dst_index, weight[:, None] *
X_flat[src_index])`` -- the form the ONNX graph and the TensorRT plugins
implement. Both are registered in :data:`APPLY_METHODS` and tested equal.

Host syncs are deliberate and batched over all videos of a call: one copy of
the DP tables (which also carries the finiteness flags of the features and the
attention), and, for the ``llava_video`` layout only, one copy of the output row
counts (how many grid rows keep a token is data-dependent). Vanilla configs
(``retain_ratio=None``) skip stage I and need no sync.

Budget arithmetic (host, float64, exactly DESIGN.md): ``N = F * P``,
``r' = min(r * N / (N - R_total), 1)``; per window ``b = ceil(n_dyn * r')``
dynamic tokens per frame, ``dominant = round(b * (1 - D_frac))`` (Python
round: half to even), ``contextual = b - dominant``, and
``M = round(n_st * r')`` static clusters (0 for single-frame windows). Dominant
tokens are the top ``dominant`` by attention among the frame's dynamic tokens,
the lower position first among equal attention (stable sort).

DPC batching: the static groups of every multi-frame window of every video
are padded to one slot count (the largest static count) and clustered in one
batched call, likewise the contextual groups of every frame; no Python loop
over windows, clusters or tokens. Chosen over a loop per window because the
work is one batched Gram matrix (``bmm``) plus a few ``(G, n, n)`` element-wise
ops either way, and a loop would multiply the per-op overhead (and the kernel
launches on a GPU) by the number of windows; the price is the padding up to
the largest group. The window means of static tokens are one
``embedding_bag`` per video.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from holitom.errors import ConfigError, InputError
from holitom.merge._checks import check_tensor, raise_non_finite
from holitom.merge.config import MergeConfig
from holitom.merge.dpc import DPCPlan, _dpc_core, _weights
from holitom.merge.layout import Layout, SlotGrid, check_grid, get_layout
from holitom.merge.temporal import TemporalPlan, _finish_temporal, _stage1_device, check_features

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


# --------------------------------------------------------------------------- small vectorised helpers


def _true_indices(mask: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the True entries of a flat bool ``mask``, ascending, when their number is known on the host.

    Unlike ``nonzero()`` this needs no device sync: positions come from a
    cumulative sum and are scattered; False entries go to a dummy slot.
    """
    target = torch.where(mask, mask.long().cumsum(0) - 1, count)  # (n,)
    out = torch.empty(count + 1, dtype=torch.long, device=mask.device)
    out.scatter_(0, target, torch.arange(mask.shape[0], device=mask.device))
    return out[:count]


def _scatter_flags(size: int, index: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``(size,)`` bool, True at ``index[keep]`` (dropped entries go to a dummy slot)."""
    flags = torch.zeros(size + 1, dtype=torch.bool, device=index.device)
    flags[torch.where(keep, index, size)] = True
    return flags[:size]


def _compact_positions(rows: torch.Tensor, width: int) -> torch.Tensor:
    """``(G, width)`` the positions where each ``(G, P)`` bool row is True, ascending, padded after."""
    order = torch.sort((~rows).to(torch.uint8), dim=1, stable=True).indices  # True first, ascending
    return order[:, :width]


# --------------------------------------------------------------------------- planning internals


@dataclass
class _Groups:
    """Padded DPC groups (static windows or contextual frames) across all videos."""

    video: np.ndarray  # (G,) video of each group
    frame: np.ndarray  # (G,) first frame (static) or the frame (contextual)
    length: np.ndarray  # (G,) frames averaged (1 for contextual)
    count: np.ndarray  # (G,) valid tokens
    clusters: list[int]  # (G,) M
    positions: torch.Tensor | None = None  # (G, n) grid position of each slot
    tokens: torch.Tensor | None = None  # (G, n, D) float32 scratch copies of the tokens to cluster (centred in place)
    plan: DPCPlan | None = None
    weights: torch.Tensor | None = None  # (G, n) float32 coefficient of each slot in its cluster

    @property
    def width(self) -> int:
        return int(self.count.max()) if len(self.count) else 0

    def of_video(self, v: int) -> np.ndarray:
        return np.nonzero(self.video == v)[0]


@dataclass
class _Video:
    """Per-video planning state."""

    x: torch.Tensor  # (F, P, D) float32
    attention: torch.Tensor | None  # (F, P)
    temporal: TemporalPlan | None = None
    retain_ratio: float | None = None
    dominant_per_frame: np.ndarray | None = None
    budget_per_frame: np.ndarray | None = None
    static_clusters: np.ndarray | None = None
    dominant: torch.Tensor | None = None  # (F, P) bool
    static_src: torch.Tensor | None = None  # (E_s,) flat input index of each static (window, position, frame) entry
    static_slot: torch.Tensor | None = None  # (E_s,) global (group, slot) row in the static groups
    static_scale: torch.Tensor | None = None  # (E_s,) 1 / window length

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape)  # type: ignore[return-value]


def _host_budgets(video: _Video, config: MergeConfig) -> None:
    """Stage I step 5 and the stage II budgets, on the host in float64 (numpy), vectorised over windows."""
    num_frames, num_pos, _ = video.shape
    temporal = video.temporal
    windows = temporal.windows.numpy()
    lengths = windows[:, 1] - windows[:, 0] + 1
    n_static = np.asarray(temporal.static_counts, dtype=np.int64)
    total = num_frames * num_pos
    # DESIGN.md: r' = min(r * N / (N - R_total), 1); N - R_total >= P > 0 always.
    rp = min(config.retain_ratio * total / (total - temporal.removed), 1.0)
    n_dynamic = num_pos - n_static
    budget = np.ceil(n_dynamic * rp).astype(np.int64)
    dominant = np.round(budget * (1.0 - config.contextual_frac)).astype(np.int64)
    clusters = np.where(lengths > 1, np.round(n_static * rp), 0).astype(np.int64)
    video.retain_ratio = rp
    video.budget_per_frame = np.repeat(budget, lengths)
    video.dominant_per_frame = np.repeat(dominant, lengths)
    video.static_clusters = clusters


def _select_dominant(video: _Video) -> None:
    """Top-``dominant`` dynamic tokens of each frame by attention; lower position first among ties."""
    num_frames, num_pos, _ = video.shape
    device = video.x.device
    key = video.attention.float().masked_fill(video.temporal.static, float("-inf"))  # (F, P)
    order = torch.sort(key, dim=1, descending=True, stable=True).indices  # (F, P)
    quota = torch.from_numpy(video.dominant_per_frame).to(device)  # (F,)
    chosen = torch.arange(num_pos, device=device)[None, :] < quota[:, None]  # (F, P) by rank
    video.dominant = torch.zeros((num_frames, num_pos), dtype=torch.bool, device=device).scatter_(1, order, chosen)


def _no_groups() -> _Groups:
    empty = np.zeros(0, dtype=np.int64)
    return _Groups(empty, empty, empty, empty, [])


def _make_groups(parts: list[np.ndarray]) -> _Groups | None:
    """Stack per-video ``(G_v, 5)`` rows (video, frame, length, count, clusters); None if there are none."""
    table = np.concatenate([p.reshape(-1, 5).astype(np.int64) for p in parts]) if parts else np.zeros((0, 5), np.int64)
    if len(table) == 0:
        return None
    return _Groups(table[:, 0], table[:, 1], table[:, 2], table[:, 3], [int(m) for m in table[:, 4]])


def _static_groups(videos: list[_Video]) -> _Groups:
    """Every multi-frame window with static clusters (M > 0), across videos, with its window-mean tokens."""
    parts = []
    for v, video in enumerate(videos):
        windows = video.temporal.windows.numpy()
        sel = np.nonzero(video.static_clusters > 0)[0]  # windows of >= 2 frames with M > 0
        n_static = np.asarray(video.temporal.static_counts, dtype=np.int64)[sel]
        length = windows[sel, 1] - windows[sel, 0] + 1
        parts.append(np.stack([np.full(len(sel), v), windows[sel, 0], length, n_static, video.static_clusters[sel]], 1))
    groups = _make_groups(parts)
    if groups is None:
        return _no_groups()
    width = groups.width
    means, positions = [], []
    slot_base = 0
    for v, video in enumerate(videos):  # one embedding_bag per video (each has its own feature table)
        ids = groups.of_video(v)
        if len(ids) == 0:
            continue
        num_frames, num_pos, dim = video.shape
        device = video.x.device
        first = torch.from_numpy(groups.frame[ids]).to(device)  # (G_v,)
        length = torch.from_numpy(groups.length[ids]).to(device)  # (G_v,)
        count = torch.from_numpy(groups.count[ids]).to(device)  # (G_v,)
        pos = _compact_positions(video.temporal.static.index_select(0, first), width)  # (G_v, n)
        max_len = int(groups.length[ids].max())
        slot = torch.arange(width, device=device)
        step = torch.arange(max_len, device=device)
        # Entries (group, slot, frame offset) of real static tokens, in bag order (group, slot).
        real = (slot[None, :, None] < count[:, None, None]) & (step[None, None, :] < length[:, None, None])
        num_entries = int((groups.count[ids] * groups.length[ids]).sum())
        flat = _true_indices(real.reshape(-1), num_entries)  # (E_s,)
        g = flat // (width * max_len)
        j = (flat // max_len) % width
        u = flat % max_len
        src = (first[g] + u) * num_pos + pos[g, j]  # (E_s,) flat input index
        scale = 1.0 / length[g].to(torch.float32)
        bag_size = torch.where(slot[None, :] < count[:, None], length[:, None], 0).reshape(-1)  # (G_v * n,)
        offsets = bag_size.cumsum(0) - bag_size
        mean = F.embedding_bag(src, video.x.reshape(-1, dim), offsets, mode="sum", per_sample_weights=scale)
        means.append(mean.view(len(ids), width, dim))  # (G_v, n, D) window means, zeros at padding
        positions.append(pos)
        video.static_src = src
        video.static_slot = (g + slot_base) * width + j
        video.static_scale = scale
        slot_base += len(ids)
    groups.positions = torch.cat(positions) if len(positions) > 1 else positions[0]
    groups.tokens = torch.cat(means) if len(means) > 1 else means[0]  # (G, n, D)
    return groups


def _contextual_groups(videos: list[_Video]) -> _Groups:
    """Every frame with contextual clusters (D_frac > 0): its dynamic tokens left after the top-k."""
    parts = []
    for v, video in enumerate(videos):
        ctx = video.budget_per_frame - video.dominant_per_frame
        lengths = (video.temporal.windows[:, 1] - video.temporal.windows[:, 0] + 1).numpy()
        n_static = np.repeat(np.asarray(video.temporal.static_counts, dtype=np.int64), lengths)
        rest = video.shape[1] - n_static - video.dominant_per_frame  # dynamic tokens left after the top-k
        sel = np.nonzero(ctx > 0)[0]
        parts.append(np.stack([np.full(len(sel), v), sel, np.ones(len(sel), dtype=np.int64), rest[sel], ctx[sel]], 1))
    groups = _make_groups(parts)
    if groups is None:
        return _no_groups()
    width = groups.width
    tokens, positions = [], []
    for v, video in enumerate(videos):
        ids = groups.of_video(v)
        if len(ids) == 0:
            continue
        num_frames, num_pos, dim = video.shape
        frame = torch.from_numpy(groups.frame[ids]).to(video.x.device)
        rest = ~video.temporal.static.index_select(0, frame) & ~video.dominant.index_select(0, frame)  # (G_v, P)
        pos = _compact_positions(rest, width)  # (G_v, n)
        tokens.append(video.x.reshape(-1, dim).index_select(0, (frame[:, None] * num_pos + pos).reshape(-1)).view(len(ids), width, dim))
        positions.append(pos)
    groups.positions = torch.cat(positions) if len(positions) > 1 else positions[0]
    groups.tokens = torch.cat(tokens) if len(tokens) > 1 else tokens[0]  # (G, n, D)
    return groups


def _cluster(groups: _Groups, config: MergeConfig) -> None:
    if len(groups.clusters) == 0:
        return
    device = groups.positions.device
    valid = torch.arange(groups.width, device=device)[None, :] < torch.from_numpy(groups.count).to(device)[:, None]
    # groups.tokens is this module's own scratch (embedding_bag / index_select output): centre it in place.
    groups.plan, _, _ = _dpc_core(groups.tokens, valid, groups.clusters, config.k_nn, scratch=True)
    groups.weights = _weights(groups.plan, config.beta)


def _centre_positions(groups: _Groups) -> torch.Tensor:
    """``(G, M_max)`` grid position of each cluster centre."""
    return groups.positions.gather(1, groups.plan.centres)


def _placements(video: _Video, v: int, static: _Groups, contextual: _Groups) -> tuple[torch.Tensor, torch.Tensor]:
    """``(F, P)`` masks: where a merged static token / a dynamic token is placed."""
    num_frames, num_pos, _ = video.shape
    size = num_frames * num_pos
    device = video.x.device
    static_at = torch.zeros(size, dtype=torch.bool, device=device)
    dynamic_at = video.dominant.reshape(-1).clone()
    for groups, target in ((static, static_at), (contextual, dynamic_at)):
        ids = groups.of_video(v)
        if len(ids) == 0:
            continue
        sel = torch.from_numpy(ids).to(device)
        frame = torch.from_numpy(groups.frame[ids]).to(device)
        flat = frame[:, None] * num_pos + _centre_positions(groups).index_select(0, sel)  # (G_v, M_max)
        target |= _scatter_flags(size, flat.reshape(-1), groups.plan.centre_valid.index_select(0, sel).reshape(-1))
    return static_at.view(num_frames, num_pos), dynamic_at.view(num_frames, num_pos)


Edges = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (src, dst, weight)


def _dynamic_edges(video: _Video, v: int, contextual: _Groups, row_flat: torch.Tensor) -> Edges:
    """Edges of the kept dominant tokens (weight 1) and of the contextual clusters."""
    num_pos = video.shape[1]
    device = video.x.device
    n_dominant = int(video.dominant_per_frame.sum())
    src = [_true_indices(video.dominant.reshape(-1), n_dominant)]
    dst = [row_flat[src[0]]]
    weight = [torch.ones(n_dominant, dtype=torch.float32, device=device)]
    ids = contextual.of_video(v)
    if len(ids):
        width = contextual.width
        sel = torch.from_numpy(ids).to(device)
        count = torch.from_numpy(contextual.count[ids]).to(device)
        real = torch.arange(width, device=device)[None, :] < count[:, None]  # (G_v, n)
        flat = _true_indices(real.reshape(-1), int(contextual.count[ids].sum()))
        g = sel[flat // width]
        j = flat % width
        frame = torch.from_numpy(contextual.frame).to(device)[g]
        centre = _centre_positions(contextual)[g, contextual.plan.assign[g, j]]
        src.append(frame * num_pos + contextual.positions[g, j])
        dst.append(row_flat[frame * num_pos + centre])
        weight.append(contextual.weights[g, j])
    return torch.cat(src), torch.cat(dst), torch.cat(weight)


def _static_edges(video: _Video, static: _Groups, row_flat: torch.Tensor) -> Edges:
    """Edges of the static clusters: every frame of every static position, weight w_cluster / window length."""
    num_pos = video.shape[1]
    width = static.width
    g = video.static_slot // width
    j = video.static_slot % width
    cluster = static.plan.assign[g, j]  # (E_s,) always >= 0: windows with M = 0 form no group
    centre = _centre_positions(static)[g, cluster]
    first = torch.from_numpy(static.frame).to(video.x.device)[g]
    return video.static_src, row_flat[first * num_pos + centre], static.weights[g, j] * video.static_scale


def _sorted_by_row(edges: Edges, num_rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Edges sorted by output row (sources stay ascending within a row) and each row's first edge."""
    src, dst, weight = edges
    order = torch.sort(dst, stable=True).indices
    src, dst, weight = src[order], dst[order], weight[order]
    return src, dst, weight, torch.searchsorted(dst, torch.arange(num_rows, device=dst.device))


def _finish_plans(
    videos: list[_Video],
    layout: Layout,
    grid: tuple[int, int],
    static: _Groups,
    contextual: _Groups,
) -> list[OuterMergePlan]:
    slot_grids: list[SlotGrid] = []
    for v, video in enumerate(videos):
        if video.temporal is None:
            full = torch.ones(video.shape[:2], dtype=torch.bool, device=video.x.device)
            slot_grids.append(layout.slots(torch.zeros_like(full), full, grid))
        else:
            slot_grids.append(layout.slots(*_placements(video, v, static, contextual), grid))
    num_tokens = [int(video.budget_per_frame.sum() + video.static_clusters.sum()) for video in videos]
    rows = [layout.fixed_rows(n, video.shape[0], grid, video.temporal is None) for n, video in zip(num_tokens, videos)]
    unknown = [v for v, r in enumerate(rows) if r is None]
    if unknown:  # deliberate sync: the grid layout's newline count depends on which rows kept a token
        counts = torch.stack([slot_grids[v].occupied.sum() for v in unknown]).cpu().tolist()
        for v, c in zip(unknown, counts):
            rows[v] = int(c)

    plans = []
    for v, (video, slots, num_rows) in enumerate(zip(videos, slot_grids, rows)):
        num_frames, num_pos, _ = video.shape
        device = video.x.device
        row_of_slot = slots.occupied.long().cumsum(0) - 1  # (S,)
        row_flat = row_of_slot[slots.token_slot].reshape(-1)  # (F*P,) output row of a token placed at (t, p)
        out_slots = _true_indices(slots.occupied, num_rows)  # (N_out,)
        position = slots.slot_position[out_slots]
        newline_index = _true_indices(position < 0, num_rows - num_tokens[v])
        if video.temporal is None:
            dynamic = (
                torch.arange(num_frames * num_pos, device=device),
                row_flat,
                torch.ones(num_frames * num_pos, dtype=torch.float32, device=device),
            )
        else:
            dynamic = _dynamic_edges(video, v, contextual, row_flat)
        edges = dynamic
        if video.static_src is not None:
            edges = tuple(torch.cat(pair) for pair in zip(dynamic, _static_edges(video, static, row_flat)))
        src, dst, weight, offsets = _sorted_by_row(edges, num_rows)
        plans.append(
            OuterMergePlan(
                num_frames=num_frames,
                tokens_per_frame=num_pos,
                grid=grid,
                layout=layout.name,
                temporal=video.temporal,
                retain_ratio=video.retain_ratio,
                frame_budget=tuple(int(b) for b in video.budget_per_frame),
                static_clusters=tuple(int(m) for m in video.static_clusters),
                src_index=src,
                dst_index=dst,
                weight=weight,
                offsets=offsets,
                frame_index=slots.slot_frame[out_slots],
                position_index=position,
                newline_index=newline_index,
            )
        )
    return plans


def _plan_videos(videos: list[_Video], config: MergeConfig, grid: tuple[int, int], layout: Layout) -> list[OuterMergePlan]:
    if not config.outer_enabled:
        for video in videos:
            num_frames, num_pos, _ = video.shape
            video.budget_per_frame = np.full(num_frames, num_pos, dtype=np.int64)
            video.dominant_per_frame = video.budget_per_frame
            video.static_clusters = np.zeros(num_frames, dtype=np.int64)
        return _finish_plans(videos, layout, grid, _no_groups(), _no_groups())

    # Stage I on the device for every video, then ONE host copy of all DP tables + finiteness flags.
    stage1 = [_stage1_device(video.x, config.tau, config.max_window) for video in videos]
    payload = []
    for video, dev in zip(videos, stage1):
        payload += [dev.table.reshape(-1), dev.finite.long().view(1), torch.isfinite(video.attention).all().long().view(1)]
    host = torch.cat(payload).cpu().numpy()  # the deliberate sync
    offset = 0
    for v, (video, dev) in enumerate(zip(videos, stage1)):
        num_frames = video.shape[0]
        table = host[offset : offset + num_frames * num_frames].reshape(num_frames, num_frames)
        features_ok, attention_ok = host[offset + num_frames * num_frames : offset + num_frames * num_frames + 2]
        offset += num_frames * num_frames + 2
        suffix = f"[{v}]" if len(videos) > 1 else ""
        if not features_ok:
            raise_non_finite(f"features{suffix}")
        if not attention_ok:
            raise_non_finite(f"attention{suffix}")
        video.temporal = _finish_temporal(dev, table, config.max_window)
        _host_budgets(video, config)
        _select_dominant(video)

    static = _static_groups(videos)
    _cluster(static, config)
    contextual = _contextual_groups(videos) if config.contextual_frac > 0 else _no_groups()
    _cluster(contextual, config)
    return _finish_plans(videos, layout, grid, static, contextual)


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
    with torch.no_grad():
        videos = [_Video(x=x.float(), attention=a) for x, a in zip(feats, attns)]
        plans = _plan_videos(videos, config, grid, layout_obj)
    return plans if batched else plans[0]


# --------------------------------------------------------------------------- apply


def _apply_embedding_bag(x_flat: torch.Tensor, plan: OuterMergePlan) -> torch.Tensor:
    # Weighted sum of each row's edges without materialising an (E, D) temporary.
    return F.embedding_bag(plan.src_index, x_flat, plan.offsets, mode="sum", per_sample_weights=plan.weight)


def _apply_index_add(x_flat: torch.Tensor, plan: OuterMergePlan) -> torch.Tensor:
    # The export-shaped form: Gather -> Mul -> ScatterElements(reduction="add").
    out = x_flat.new_zeros((plan.num_rows, x_flat.shape[1]))
    return out.index_add_(0, plan.dst_index, x_flat.index_select(0, plan.src_index) * plan.weight[:, None])


APPLY_METHODS: dict[str, Callable[[torch.Tensor, OuterMergePlan], torch.Tensor]] = {
    "embedding_bag": _apply_embedding_bag,
    "index_add": _apply_index_add,
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
    with torch.no_grad():
        out = kernel(x_flat, plan)  # (N_out, D) float32
        out.index_copy_(0, plan.newline_index, newline.to(out).expand(plan.num_newlines, dim))
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
