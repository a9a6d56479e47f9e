"""2x2 spatial pooling of the per-frame patch grid, shared by features and attention scores.

HoliTom pools the vision attention "exactly like the features", so both go through
the same function here.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F


def bilinear_pool(grid: torch.Tensor) -> torch.Tensor:
    """LLaVA-OneVision: bilinear resize of a ``(F, C, g, g)`` grid to ``ceil(g/2)`` per side.

    Matches transformers' ``LlavaOnevisionModel.apply_pooling`` (``interpolate`` with
    ``mode="bilinear"`` and the default ``align_corners=False``, no antialias).
    """
    g_h, g_w = grid.shape[-2:]
    return F.interpolate(grid, size=(math.ceil(g_h / 2), math.ceil(g_w / 2)), mode="bilinear", align_corners=False)


def avg_pool(grid: torch.Tensor) -> torch.Tensor:
    """LLaVA-Video: 2x2 average pooling with stride 2 (floor: 27 -> 13), as the official ``get_2dPool``."""
    return F.avg_pool2d(grid, kernel_size=2, stride=2)


# Registry keyed by VariantSpec.pooling.
POOLERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "bilinear": bilinear_pool,
    "avg": avg_pool,
}


def pool_tokens(tokens: torch.Tensor, grid_side: int, pooling: str) -> torch.Tensor:
    """Pool per-frame token sequences on their square grid.

    Args:
        tokens: ``(F, N, C)`` with ``N = grid_side**2`` in row-major patch order.
        grid_side: patches per side (27 at 384 px).
        pooling: a key of :data:`POOLERS`.
    Returns:
        ``(F, P, C)`` in row-major order of the pooled grid.
    """
    frames, _, channels = tokens.shape
    # contiguous NCHW like transformers, so interpolate picks the same kernel (same rounding).
    grid = tokens.reshape(frames, grid_side, grid_side, channels).permute(0, 3, 1, 2).contiguous()  # (F, C, g, g)
    pooled = POOLERS[pooling](grid)  # (F, C, h, w)
    return pooled.permute(0, 2, 3, 1).reshape(frames, -1, channels)  # (F, P, C)


__all__ = ["POOLERS", "bilinear_pool", "avg_pool", "pool_tokens"]
