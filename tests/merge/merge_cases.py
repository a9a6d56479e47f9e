"""Random test inputs shared by the merge tests (features with planted static regions, attention, configs)."""

from __future__ import annotations

import numpy as np
import torch

import merge_oracle as oracle
from holitom.merge import MergeConfig

# Random cases whose oracle reports a decision margin below this are redrawn (see merge_oracle).
MARGIN = 1e-5


def make_video(rng: np.random.Generator, num_frames: int, num_pos: int, dim: int) -> np.ndarray:
    """Features with planted static regions: each position follows a piecewise-constant "object"
    plus per-frame noise; positions cut (draw a new object) with their own probability, and
    scene cuts redraw every position. Noise levels vary per position so that similarities
    spread around typical taus and n(a, e) varies with the window (non-trivial DP)."""
    cut_prob = rng.choice([0.0, 0.05, 0.2, 0.5, 1.0], size=num_pos)
    noise = rng.uniform(0.02, 0.7, size=num_pos)
    scene_cut = rng.random(num_frames) < 0.15
    current = rng.standard_normal((num_pos, dim))
    x = np.empty((num_frames, num_pos, dim))
    for t in range(num_frames):
        if t > 0:
            redraw = scene_cut[t] | (rng.random(num_pos) < cut_prob)
            current[redraw] = rng.standard_normal((int(redraw.sum()), dim))
        x[t] = current + noise[:, None] * rng.standard_normal((num_pos, dim))
    return x.astype(np.float32)


def make_attention(rng: np.random.Generator, num_frames: int, num_pos: int) -> np.ndarray:
    attention = rng.random((num_frames, num_pos)).astype(np.float32)
    if rng.random() < 0.3:  # coarse values: many exact ties for the top-k tie rule
        attention = (np.round(attention * 4) / 4).astype(np.float32)
    return attention


def random_config(rng: np.random.Generator, num_frames: int) -> MergeConfig:
    r = float(rng.choice([0.1, 0.15, 0.2, 0.25])) if rng.random() < 0.5 else float(rng.uniform(0.03, 1.0))
    return MergeConfig(
        retain_ratio=r,
        tau=float(rng.uniform(0.3, 0.95)),
        beta=float(rng.uniform(0.0, 1.0)),
        contextual_frac=float(rng.choice([0.0, 0.0, 0.25, 0.5, 1.0])),
        k_nn=int(rng.integers(1, 10)),
        max_window=None if rng.random() < 0.6 else int(rng.integers(1, num_frames + 1)),
    )


def run_oracle(x: np.ndarray, attention: np.ndarray, config: MergeConfig, grid, layout: str) -> oracle.OuterResult:
    return oracle.outer_merge(
        x.astype(np.float64),
        attention,
        retain_ratio=config.retain_ratio,
        tau=config.tau,
        beta=config.beta,
        contextual_frac=config.contextual_frac,
        k_nn=config.k_nn,
        max_window=config.max_window,
        grid=grid,
        layout=layout,
    )


# Frames 0..3, positions p0..p3; s[t, p] is the similarity between frames t and t+1 (tau = 0.5):
#   p0: 0.9 0.9 0.9   static over every pair
#   p1: 0.9 0.9 0.1   static over pairs 0, 1
#   p2: 0.1 0.9 0.9   static over pairs 1, 2
#   p3: 0.1 0.1 0.9   static over pair 2
HAND_SIM = torch.tensor(
    [
        [0.9, 0.9, 0.1, 0.1],
        [0.9, 0.9, 0.9, 0.1],
        [0.9, 0.1, 0.9, 0.9],
    ]
)


def hand_features() -> torch.Tensor:
    """Features whose consecutive cosines are exactly 1 (same vector) or 0 (orthogonal) following HAND_SIM."""
    basis = torch.eye(8)
    x = torch.empty(4, 4, 8)
    for p in range(4):
        k = 0
        x[0, p] = basis[2 * p]
        for t in range(3):
            if HAND_SIM[t, p] < 0.5:
                k = 1 - k  # switch between two orthogonal vectors
            x[t + 1, p] = basis[2 * p + k]
    return x
