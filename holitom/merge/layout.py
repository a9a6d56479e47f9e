"""Output token order and newline placement of each model family (DESIGN.md section 2).

A layout maps "which grid cells of which frames hold an output token" to an
ordered sequence of output rows, newline rows included. Every layout is a
*slot grid*: a fixed, data-independent enumeration of all places a row could
occupy, in output order. A plan marks the occupied slots; the output row of a
slot is the number of occupied slots before it (one cumulative sum), so the
ordering is vectorised and the same for every backend.

Registered layouts (:func:`get_layout`, :func:`register_layout`):

- ``"onevision"`` (LLaVA-OneVision, one newline token): for each frame t, the
  static tokens placed at t (the merged static tokens of the window starting
  at t) in position order, then t's dynamic tokens in position order; one
  newline row after all video tokens.
- ``"llava_video"`` (LLaVA-Video, grid newline): for each frame, every token
  placed at that frame (static ones live at their window's first frame) in
  position order, with a newline row after each grid row that holds a token.

Since windows are contiguous frame ranges, "frame by frame" is "window after
window" as DESIGN.md words it.

This registry is the one definition of a model family's newline layout: the
HoliTom plan (:mod:`.outer`, and so the exported outer-merge graph), the
competing methods and the unmerged video (:func:`place_tokens`) all read it;
``holitom.models.config.VARIANTS`` names each family's layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from holitom.errors import ConfigError, InputError


@dataclass(frozen=True, eq=False)
class SlotGrid:
    """All candidate output rows of one video, in output order.

    Attributes:
        occupied: ``(S,)`` bool, the slots that become output rows.
        token_slot: ``(F, P)`` int64, the slot of a token placed at ``(t, p)``
            (meaningful where a token is placed).
        slot_frame: ``(S,)`` int64 frame of each slot (a newline's frame is the
            frame it closes).
        slot_position: ``(S,)`` int64 grid position, -1 for newline slots.
    """

    occupied: torch.Tensor
    token_slot: torch.Tensor
    slot_frame: torch.Tensor
    slot_position: torch.Tensor


SlotFn = Callable[[torch.Tensor, torch.Tensor, tuple[int, int]], SlotGrid]


@dataclass(frozen=True)
class Layout:
    """A registered token layout: a name and its slot-grid builder.

    ``slots(static_at, dynamic_at, grid)`` gets two ``(F, P)`` bool masks (a
    merged static token / a dynamic token is placed at ``(t, p)``; never both)
    and the ``(rows, cols)`` grid. ``unmerged_rows(F, grid)``: the rows of a
    video that keeps every token (what transformers expands the placeholder to).
    """

    name: str
    slots: SlotFn
    unmerged_rows: Callable[[int, tuple[int, int]], int]
    description: str


def _onevision_slots(static_at: torch.Tensor, dynamic_at: torch.Tensor, grid: tuple[int, int]) -> SlotGrid:
    num_frames, num_pos = static_at.shape
    device = static_at.device
    # Slot (t, kind, p) = (2t + kind) * P + p with kind 0 = static, 1 = dynamic; last slot = the newline.
    occupied = torch.cat([torch.stack([static_at, dynamic_at], 1).reshape(-1), static_at.new_ones(1)])  # (2FP+1,)
    frames = torch.arange(num_frames, device=device)[:, None]  # (F, 1)
    pos = torch.arange(num_pos, device=device)[None, :]  # (1, P)
    token_slot = (2 * frames + dynamic_at.long()) * num_pos + pos  # (F, P)
    slots = torch.arange(2 * num_frames * num_pos, device=device)
    slot_frame = torch.cat([slots // (2 * num_pos), slots.new_full((1,), num_frames - 1)])
    slot_position = torch.cat([slots % num_pos, slots.new_full((1,), -1)])
    return SlotGrid(occupied, token_slot, slot_frame, slot_position)


def _grid_slots(static_at: torch.Tensor, dynamic_at: torch.Tensor, grid: tuple[int, int]) -> SlotGrid:
    num_frames, num_pos = static_at.shape
    rows, cols = grid
    device = static_at.device
    placed = (static_at | dynamic_at).view(num_frames, rows, cols)  # (F, rows, cols)
    # Slot (t, r, c) = (t * rows + r) * (cols + 1) + c; column `cols` is the row's newline.
    occupied = torch.cat([placed, placed.any(-1, keepdim=True)], -1).reshape(-1)  # (F*rows*(cols+1),)
    pos = torch.arange(num_pos, device=device)
    cell = (pos // cols) * (cols + 1) + pos % cols  # (P,)
    token_slot = torch.arange(num_frames, device=device)[:, None] * (rows * (cols + 1)) + cell[None, :]  # (F, P)
    slots = torch.arange(num_frames * rows * (cols + 1), device=device)
    col = slots % (cols + 1)
    row = (slots // (cols + 1)) % rows
    slot_position = torch.where(col == cols, -1, row * cols + col)
    return SlotGrid(occupied, token_slot, slots // (rows * (cols + 1)), slot_position)


_LAYOUTS: dict[str, Layout] = {}


def register_layout(layout: Layout, *, overwrite: bool = False) -> None:
    """Register a layout under ``layout.name``."""
    if layout.name in _LAYOUTS and not overwrite:
        raise ConfigError(f"layout '{layout.name}' is already registered; pass overwrite=True to replace it.")
    _LAYOUTS[layout.name] = layout


def get_layout(name: str) -> Layout:
    """The registered layout ``name``; ConfigError listing the known names otherwise."""
    try:
        return _LAYOUTS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown token layout {name!r}; known layouts: {layout_names()}.") from None


def layout_names() -> list[str]:
    return list(_LAYOUTS)


def check_grid(grid: object, num_pos: int) -> tuple[int, int]:
    """``grid`` must be ``(rows, cols)`` positive ints with ``rows * cols == P``."""
    if (
        not isinstance(grid, (tuple, list))
        or len(grid) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in grid)
    ):
        raise InputError(f"grid must be a (rows, cols) pair of positive ints, got {grid!r}.")
    rows, cols = int(grid[0]), int(grid[1])
    if rows * cols != num_pos:
        raise InputError(
            f"grid {rows}x{cols} holds {rows * cols} positions but the features have P = {num_pos} tokens per frame; "
            "pass the pooled grid, e.g. (14, 14) for LLaVA-OneVision or (13, 13) for LLaVA-Video."
        )
    return rows, cols


def place_tokens(
    layout: Layout,
    tokens: torch.Tensor,
    frame_index: torch.Tensor,
    position_index: torch.Tensor,
    num_frames: int,
    grid: tuple[int, int],
    newline: torch.Tensor,
) -> torch.Tensor:
    """Lay out kept tokens with ``layout``'s newline rows.

    Args:
        tokens: ``(N, D)`` sorted by (frame, position).
        frame_index, position_index: ``(N,)`` where each token sits.
        num_frames: F.
        grid: ``(rows, cols)`` of the pooled grid.
        newline: ``(D,)`` the model's newline embedding.

    Returns:
        ``(N_out, D)`` in ``tokens``' dtype: the tokens in the layout's order, newlines included.
    """
    num_pos = grid[0] * grid[1]
    placed = torch.zeros(num_frames * num_pos, dtype=torch.bool, device=tokens.device)
    placed[frame_index * num_pos + position_index] = True
    placed = placed.view(num_frames, num_pos)  # (F, P)
    slots = layout.slots(torch.zeros_like(placed), placed, grid)
    row_of_slot = slots.occupied.long().cumsum(0) - 1  # (S,)
    out = newline.to(tokens.dtype).expand(int(slots.occupied.sum()), tokens.shape[1]).clone()  # (N_out, D)
    out[row_of_slot[slots.token_slot[frame_index, position_index]]] = tokens
    return out


register_layout(
    Layout(
        "onevision",
        _onevision_slots,
        lambda frames, grid: frames * grid[0] * grid[1] + 1,
        "LLaVA-OneVision: one newline after all video tokens.",
    )
)
register_layout(
    Layout(
        "llava_video",
        _grid_slots,
        lambda frames, grid: frames * grid[0] * (grid[1] + 1),
        "LLaVA-Video: a newline after each non-empty grid row of each frame.",
    )
)

__all__ = ["Layout", "SlotGrid", "check_grid", "get_layout", "layout_names", "place_tokens", "register_layout"]
