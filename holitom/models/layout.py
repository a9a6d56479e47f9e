"""Token layout of an UNMERGED video (all tokens, newlines included), as transformers / LLaVA-Video lay it out.

The HoliTom merge library places newlines itself for merged videos; this module is
for the vanilla path (no merge), parity tests and counting placeholder tokens.
"""

from __future__ import annotations

from typing import Callable

import torch

from holitom.errors import InputError


def _newline_once(features: torch.Tensor, newline: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    # LLaVA-OneVision video: all frames' tokens in frame-major order, then one newline.
    tokens = features.reshape(-1, features.shape[-1])  # (F*P, D)
    return torch.cat((tokens, newline[None].to(tokens.dtype)), dim=0)  # (F*P + 1, D)


def _newline_per_row(features: torch.Tensor, newline: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    # LLaVA-Video ("grid" newline): each pooled row of each frame is followed by a newline.
    frames, _, d = features.shape
    h, w = grid
    rows = features.reshape(frames, h, w, d)  # (F, h, w, D)
    nl = newline.to(features.dtype).expand(frames, h, 1, d)  # (F, h, 1, D)
    return torch.cat((rows, nl), dim=2).reshape(frames * h * (w + 1), d)  # (F*h*(w+1), D)


# Registry keyed by VariantSpec.newline.
NEWLINE_LAYOUTS: dict[str, Callable[[torch.Tensor, torch.Tensor, tuple[int, int]], torch.Tensor]] = {
    "once": _newline_once,
    "per_row": _newline_per_row,
}


def unmerged_video_tokens(
    features: torch.Tensor, newline: torch.Tensor, grid: tuple[int, int], newline_mode: str
) -> torch.Tensor:
    """Lay out all video tokens with newlines.

    Args:
        features: ``(F, P, D)`` pooled features, ``P = h * w``.
        newline: ``(D,)`` the model's ``image_newline``.
        grid: ``(h, w)`` pooled grid.
        newline_mode: ``"once"`` (OneVision) or ``"per_row"`` (LLaVA-Video).
    Returns:
        ``(N, D)`` the tokens that replace the video placeholder.
    """
    if features.dim() != 3 or features.shape[1] != grid[0] * grid[1]:
        raise InputError(f"features must be (F, {grid[0] * grid[1]}, D) for grid {grid}, got {tuple(features.shape)}.")
    if newline.shape != features.shape[-1:]:
        raise InputError(f"newline must be ({features.shape[-1]},), got {tuple(newline.shape)}.")
    return NEWLINE_LAYOUTS[newline_mode](features, newline, grid)


__all__ = ["NEWLINE_LAYOUTS", "unmerged_video_tokens"]
