"""Kernel test cases and checks shared by the interpreted (CPU) and the CUDA kernel tests.

Each ``check_*`` runs one case through a kernels module on ``device`` and the
torch reference on the CPU, and compares: indices, masks and windows must be
identical; merged values agree within atol = rtol = 1e-5 (float32 outputs; both
accumulate in float32) or one rounding step (ulp) of a 16-bit output dtype.

Random cases are redrawn when a float64 evaluation shows a decision within
``MARGIN`` of a tie (the kernels and the reference round differently in the
last bits, so such a case may legitimately go either way); exact ties
(duplicated tokens, identical frames, k = 1) are kept: both sides must apply the
contracts' tie rules to them. Hidden sizes stay small because the interpreter
runs each kernel op in numpy.
"""

from __future__ import annotations

import math

import numpy as np
import torch

import merge_oracle as oracle
from holitom.merge import apply_inner_merge, plan_inner_merge
from holitom.plugins_trt.ops import density_peak_merge, temporal_segment
from merge_cases import MARGIN, make_video


def case_id(case: tuple) -> str:
    """A readable pytest id for a case tuple."""
    return "-".join(str(v).replace("torch.", "").replace(" ", "") for v in case)


def assert_values_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype = torch.float32) -> None:
    """Float32 results within 1e-5; results stored in a 16-bit dtype within one rounding step (ulp) of it."""
    tol = {torch.float32: 1e-5, torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}[dtype]
    torch.testing.assert_close(actual.float(), expected.float(), atol=tol, rtol=tol)


# --------------------------------------------------------------------------- TemporalSegment


def near_static_video(rng: np.random.Generator, num_frames: int, num_pos: int, dim: int) -> np.ndarray:
    """Every position barely moves (cosine ~ 1 - 1e-6 between frames): one window over all frames."""
    base = rng.standard_normal((num_pos, dim))
    return (base[None] + 1e-3 * rng.standard_normal((num_frames, num_pos, dim))).astype(np.float32)


def repeated_frames_video(rng: np.random.Generator, num_frames: int, num_pos: int, dim: int) -> np.ndarray:
    """Planted static regions, frames repeated exactly (cosine 1), and a few all-zero tokens (cosine 0)."""
    x = make_video(rng, num_frames, num_pos, dim)
    for t in range(1, num_frames, 2):
        x[t] = x[t - 1]
    x[:, rng.choice(num_pos, 5, replace=False)] = 0.0
    return x


def similarity_margin(x: np.ndarray, tau: float) -> float:
    """Smallest |cos - tau| over consecutive frames, in float64 (inf for a single frame)."""
    if x.shape[0] < 2:
        return math.inf
    x = x.astype(np.float64)
    norms = np.maximum(np.linalg.norm(x, axis=-1), oracle.EPS)
    cos = np.clip((x[:-1] * x[1:]).sum(-1) / (norms[:-1] * norms[1:]), -1.0, 1.0)
    return float(np.abs(cos - tau).min())


TEMPORAL_CASES = [
    # (frames, positions, hidden, video, tau, max_window, dtype)
    (1, 196, 8, "planted", 0.8, 0, torch.float32),
    (3, 169, 24, "planted", 0.65, 0, torch.float32),
    (3, 196, 72, "planted", 0.75, 2, torch.float32),  # hidden above the plugin's BLOCK_D = 64: two chunks
    (7, 196, 16, "planted", 0.8, 0, torch.float32),
    (9, 169, 8, "planted", 0.5, 3, torch.float32),
    (5, 196, 40, "near_static", 0.8, 0, torch.float32),
    (6, 169, 8, "near_static", 0.9, 4, torch.float32),
    (8, 196, 8, "repeated", 0.8, 0, torch.float32),
    (7, 169, 16, "planted", 0.7, 0, torch.bfloat16),
    (5, 196, 8, "planted", 0.8, 0, torch.float16),
    (64, 12, 4, "repeated", 0.8, 0, torch.float32),  # the plugin's frame limit (its BLOCK_F = 64)
    (64, 9, 4, "near_static", 0.9, 5, torch.float32),
]
VIDEOS = {"planted": make_video, "near_static": near_static_video, "repeated": repeated_frames_video}


# --------------------------------------------------------------------------- DensityPeakMerge


def clustered_tokens(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """Tokens around a few centres with per-cluster spread (non-trivial densities)."""
    centres = rng.standard_normal((max(n // 12, 2), dim)) * 2
    label = rng.integers(0, len(centres), n)
    return (centres[label] + rng.uniform(0.1, 1.0, (n, 1)) * rng.standard_normal((n, dim))).astype(np.float32)


def duplicated_tokens(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """n tokens drawn from a pool of n // 4 distinct vectors: exact density, gamma and distance ties."""
    pool = rng.standard_normal((max(n // 4, 2), dim)).astype(np.float32)
    return pool[rng.integers(0, len(pool), n)]


DPC_CASES = [
    # (slots, hidden, valid counts per group, k_nn, tokens, dtype)
    (196, 8, (196, 120, 9), 7, "clustered", torch.float32),
    (169, 16, (169, 169), 7, "clustered", torch.float32),
    (169, 24, (60, 1, 33), 3, "clustered", torch.float32),
    (196, 8, (196, 77), 7, "duplicated", torch.float32),
    (40, 16, (40, 25, 0), 1, "clustered", torch.float32),  # k = 1: every density ties
    (64, 16, (64, 50), 100, "clustered", torch.float32),  # k_nn above every count: k = M
    (96, 16, (96, 70), 7, "clustered", torch.bfloat16),
    (96, 8, (96, 31), 5, "duplicated", torch.float16),
    (256, 4, (256, 40), 7, "duplicated", torch.float32),  # the plugin's slot limit (its BLOCK_N = 256)
]


def dpc_case(rng, slots, dim, counts, k_nn, kind, dtype):
    """Padded groups (valid slots scattered, garbage in the padding) and M per group (0 and count included)."""
    make = clustered_tokens if kind == "clustered" else duplicated_tokens
    while True:
        tokens = rng.standard_normal((len(counts), slots, dim)).astype(np.float32) * 1e3  # padding garbage
        valid = np.zeros((len(counts), slots), dtype=bool)
        clusters = []
        margin = math.inf
        for g, count in enumerate(counts):
            where = np.sort(rng.choice(slots, count, replace=False))
            valid[g, where] = True
            tokens[g, where] = make(rng, count, dim)
            m = int(rng.choice([0, 1, count, int(rng.integers(0, count + 1))])) if count else 0
            clusters.append(m)
            if kind == "clustered" and 0 < m and count <= 128:  # the loop oracle is O(n^2 D) Python
                seen = torch.from_numpy(tokens[g, where]).to(dtype).double().numpy()
                margin = min(margin, oracle.dpc(list(seen), m, k_nn, 0.6).margin)
        if margin >= MARGIN:
            return (
                torch.from_numpy(tokens).to(dtype),
                torch.from_numpy(valid),
                torch.tensor(clusters, dtype=torch.long),
            )


# --------------------------------------------------------------------------- inner merge


def inner_case(rng, seq: int, span: tuple[int, int], dim: int, duplicates: bool, dtype: torch.dtype):
    """Hidden states and scores; with ``duplicates``, visual rows repeat exactly (cosine ties)."""
    start, end = span
    while True:
        hidden = rng.standard_normal((seq, dim)).astype(np.float32)
        if duplicates:
            pool = hidden[start : start + max((end - start) // 5, 1)].copy()
            hidden[start:end] = pool[rng.integers(0, len(pool), end - start)]
        scores = rng.random(end - start).astype(np.float32)
        visual = torch.from_numpy(hidden[start:end]).to(dtype).double().numpy()
        unit = visual / np.maximum(np.linalg.norm(visual, axis=1, keepdims=True), oracle.EPS)
        cos = unit @ unit.T
        top2 = -np.sort(-cos, axis=1)[:, :2] if cos.shape[1] > 1 else np.ones((len(cos), 2))
        gap = top2[:, 0] - top2[:, 1]
        # Only rows of exact ties (gap 0) or clear winners; the kept/dropped split itself is exact.
        if ((gap == 0) | (gap >= MARGIN)).all():
            return torch.from_numpy(hidden).to(dtype), torch.from_numpy(scores)


INNER_CASES = [
    # (sequence, visual span, hidden, ratio, duplicates, dtype)
    (1040, (20, 1020), 16, 0.5, False, torch.float32),
    (51, (3, 40), 24, 0.3, False, torch.float32),
    (300, (0, 300), 8, 0.5, True, torch.float32),
    (10, (4, 5), 8, 0.5, False, torch.float32),  # one visual token: kept, nothing dropped
    (200, (10, 190), 16, 0.75, False, torch.bfloat16),
]


# --------------------------------------------------------------------------- checks


def temporal_case(frames, positions, dim, video, tau, dtype) -> torch.Tensor:
    """The features of a case, redrawn while a similarity sits within MARGIN of tau (repeated frames keep their exact ties)."""
    rng = np.random.default_rng(frames * 1000 + positions + dim)
    while True:
        x = torch.from_numpy(VIDEOS[video](rng, frames, positions, dim)).to(dtype)
        if video == "repeated" or similarity_margin(x.float().numpy(), tau) >= MARGIN:
            return x


def run_temporal(kernels, case, device: str):
    """A case's kernel launches on ``device``: ``(features, the kernels' outputs)``.

    The checks below and the compile test (which records these launches) share it.
    """
    frames, positions, dim, video, tau, max_window, dtype = case
    x = temporal_case(frames, positions, dim, video, tau, dtype)
    return x, kernels.temporal_segment(x.to(device), tau=tau, max_window=max_window)


def run_dpc(kernels, case, device: str):
    """A case's kernel launches on ``device``: ``((tokens, valid, clusters), beta, the kernels' outputs)``."""
    slots, dim, counts, k_nn, kind, dtype = case
    rng = np.random.default_rng(slots * 100 + dim + len(counts))
    tokens, valid, clusters = dpc_case(rng, slots, dim, counts, k_nn, kind, dtype)
    beta = float(rng.uniform(0.2, 0.9))
    got = kernels.density_peak_merge(tokens.to(device), valid.to(device), clusters.to(device), k_nn=k_nn, beta=beta)
    return (tokens, valid, clusters), beta, got


def run_inner(kernels, case, device: str):
    """A case's kernel launches on ``device``: ``(hidden, scores, the kernels' plan, {mode: the kernels' apply outputs})``."""
    seq, span, dim, ratio, duplicates, dtype = case
    rng = np.random.default_rng(seq + dim)
    hidden, scores = inner_case(rng, seq, span, dim, duplicates, dtype)
    plan = kernels.plan_inner_merge(scores.to(device), hidden[span[0] : span[1]].to(device), ratio)
    applied = {mode: kernels.apply_inner_merge(hidden.to(device), span, plan, mode) for mode in ("sequential", "mean")}
    return hidden, scores, plan, applied


def check_temporal(kernels, case, device: str) -> None:
    frames, positions, dim, video, tau, max_window, dtype = case
    x, got = run_temporal(kernels, case, device)
    got = [t.cpu() for t in got]
    want = temporal_segment(x, tau=tau, max_window=max_window)
    for name, g, w in zip(("window_start", "window_end", "static_mask"), got, want):
        assert g.dtype == w.dtype and torch.equal(g, w), name
    if video == "near_static":  # every window has >= 2 frames and everything in it is static
        assert got[2].all() and (got[1] > got[0]).all()
        assert max_window or got[0].eq(0).all()  # unbounded: one window over all frames


def check_dpc(kernels, case, device: str) -> None:
    k_nn = case[3]
    (tokens, valid, clusters), beta, got = run_dpc(kernels, case, device)
    merged, is_centre, assignment = (t.cpu() for t in got)
    want_merged, want_centre, want_assignment = density_peak_merge(tokens, valid, clusters, k_nn=k_nn, beta=beta)
    assert torch.equal(is_centre, want_centre)
    assert torch.equal(assignment, want_assignment)
    assert merged.dtype == torch.float32
    assert_values_close(merged, want_merged)
    assert int(is_centre.sum()) == int(clusters.sum())


def check_inner(kernels, case, device: str) -> None:
    seq, span, dim, ratio, duplicates, dtype = case
    hidden, scores, plan, applied = run_inner(kernels, case, device)
    visual = hidden[span[0] : span[1]]
    want = plan_inner_merge(scores, visual, ratio)
    for name in ("keep", "dropped", "assign"):
        assert torch.equal(getattr(plan, name).cpu(), getattr(want, name)), name
    if duplicates:  # exact ties: no lower kept token holds the same vector as the one joined
        kept = visual[want.keep]
        same = (kept[:, None, :] == kept[None, :, :]).all(-1)  # (k, k) identical kept vectors
        first_same = same.long().argmax(1)  # lowest kept index with the same vector
        assert torch.equal(first_same[want.assign], want.assign)
        assert (first_same != torch.arange(len(kept))).any()  # the case does hold duplicated kept tokens
    for mode, (out, kept_index) in applied.items():
        want_out, want_index = apply_inner_merge(hidden, span, want, mode)
        assert torch.equal(kept_index.cpu(), want_index)
        assert out.dtype == hidden.dtype
        assert_values_close(out.cpu(), want_out, dtype)


# --------------------------------------------------------------------------- vision key scores


KEY_SCORE_CASES = [
    # (rows = frames x heads, patches N, head_dim, dtype)
    (1, 1, 8, torch.float32),
    (6, 27, 72, torch.float32),  # SigLIP's 72-wide heads (padded to 128 in the kernel)
    (4, 97, 12, torch.bfloat16),  # odd N over two key and query blocks
    (2, 130, 16, torch.float16),
    (3, 65, 72, torch.bfloat16),
]
# Cases read in the attention's layout: (case, heads), rows = frames x heads.
KEY_SCORE_LAYOUT_CASES = [((6, 27, 72, torch.float32), 3), ((4, 97, 12, torch.bfloat16), 2), ((6, 65, 72, torch.float16), 6)]


def run_key_scores(kernels, case, device: str, launch=None, heads: int = 0):
    """A case's kernel launch on ``device``: ``(float64 logits of the rounded inputs, the kernel's column sums)``.

    Each query's log-sum-exp is the exact (float64) one, so the check isolates the kernel's sums.
    ``heads``: pass q and k as the attention's ``(F, H, N, hd)`` views of ``(F, N, H, hd)``
    storage (as the vision tower has them), not as contiguous ``(R, N, hd)``.
    """
    rows, n, head_dim, dtype = case
    g = torch.Generator().manual_seed(rows * 1000 + n + head_dim)
    q, k = (2 * torch.randn(rows, n, head_dim, generator=g).to(dtype) for _ in range(2))  # (R, N, hd)
    scale = head_dim**-0.5
    logits = q.double() @ k.double().transpose(-1, -2) * scale  # (R, N, N)
    log2_e = 1 / math.log(2)
    neg_lse2 = -logits.logsumexp(dim=-1) * log2_e  # (R, N)
    extra = () if launch is None else (launch,)  # a KeyScoreLaunch (tiles, product modes) or the default
    qd, kd = q.to(device), k.to(device)
    if heads:
        qd, kd = (t.view(rows // heads, heads, n, head_dim).transpose(1, 2).contiguous().transpose(1, 2) for t in (qd, kd))  # (F, H, N, hd)
        assert not qd.is_contiguous()
    return logits, kernels.key_column_sums(qd, kd, neg_lse2.float().to(device), scale * log2_e, *extra)


def check_key_scores(kernels, case, device: str, launch=None, heads: int = 0) -> None:
    """Column sums of softmax(q k^T * scale), each key's probability summed over the queries, against float64."""
    rows, n, _, _ = case
    logits, got = run_key_scores(kernels, case, device, launch, heads)
    want = logits.softmax(dim=-1).sum(dim=1)  # (R, N)
    assert got.dtype == torch.float32 and got.shape == (rows, n)
    # float32 accumulation of exact (or IEEE float32) products: float32 round-off over N terms.
    torch.testing.assert_close(got.cpu().double(), want, atol=1e-6, rtol=2e-5)
