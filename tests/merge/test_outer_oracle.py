"""Stages I + II (plan_outer_merge / apply_outer_merge) against the literal oracle of DESIGN.md section 2.

Comparison rules, stated once:

- windows, R_total, r', the static mask, and the (frame, position) of every
  output row (newlines included) must be IDENTICAL;
- merged tokens: ``torch.testing.assert_close`` with ``atol = rtol = 1e-5`` in
  float32 (the oracle computes in float64; the library accumulates in float32,
  features are O(1) and every token is a convex combination, so the float32
  error is ~1e-6);
- a random case whose oracle reports a decision margin below ``MARGIN`` (a
  similarity within 1e-5 of tau, two relevant densities within 1e-5 relative,
  ...) is redrawn, never compared loosely (see merge_oracle's docstring).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from holitom.merge import MergeConfig, apply_outer_merge, outer_merge, plan_outer_merge

import merge_oracle as oracle
from merge_cases import MARGIN, make_attention, make_video, random_config, run_oracle

ATOL = RTOL = 1e-5
NUM_RANDOM_CASES = 200


def assert_matches(plan, tokens: torch.Tensor, ref: oracle.OuterResult, newline: torch.Tensor, config: MergeConfig) -> None:
    if config.outer_enabled:
        assert plan.windows.tolist() == [list(w) for w in ref.windows]
        assert plan.temporal.removed == ref.removed
        assert plan.retain_ratio == ref.retain_ratio
        assert plan.temporal.static.cpu().tolist() == ref.static
    rows = list(zip(plan.frame_index.tolist(), plan.position_index.tolist()))
    assert rows == ref.rows
    expected = torch.stack(
        [newline.double() if v is None else torch.from_numpy(np.asarray(v, dtype=np.float64)) for v in ref.tokens]
    ).float()
    torch.testing.assert_close(tokens.float().cpu(), expected, atol=ATOL, rtol=RTOL)


def check_case(x, attention, config, grid, layout, *, require_margin: bool = True) -> bool:
    """Compare one case; returns False (not compared) when the oracle reports a near-tie."""
    ref = run_oracle(x, attention, config, grid, layout)
    if require_margin and ref.margin < MARGIN:
        return False
    xt, at = torch.from_numpy(x), torch.from_numpy(attention)
    newline = torch.linspace(-1.0, 1.0, x.shape[2])
    result = outer_merge(xt, at, config, grid, layout, newline)
    assert_matches(result.plan, result.tokens, ref, newline, config)
    # The plan's linear form through the exported kernel (outer_merge used embedding_bag).
    assert_matches(result.plan, apply_outer_merge(xt, result.plan, newline, method="frame_matmul"), ref, newline, config)
    return True


def test_random_cases_match_oracle():
    rng = np.random.default_rng(20240601)
    compared = attempts = 0
    multi_window_cases = dp_nontrivial = 0
    while compared < NUM_RANDOM_CASES:
        attempts += 1
        assert attempts <= 2 * NUM_RANDOM_CASES, f"too many near-tie redraws ({attempts} attempts for {compared} cases)"
        num_frames = int(rng.integers(1, 11))
        rows, cols = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        dim = int(rng.choice([4, 8, 16]))
        x = make_video(rng, num_frames, rows * cols, dim)
        attention = make_attention(rng, num_frames, rows * cols)
        config = random_config(rng, num_frames)
        layout = "onevision" if rng.random() < 0.5 else "llava_video"
        if check_case(x, attention, config, (rows, cols), layout):
            compared += 1
            ref_windows = oracle.segment(
                oracle.count_table(oracle.similarity(x.astype(np.float64)), num_frames, rows * cols, config.tau, config.max_window),
                num_frames,
                config.max_window,
            )[0]
            multi = [w for w in ref_windows if w[1] > w[0]]
            multi_window_cases += bool(multi)
            # Non-trivial: several windows, at least one of them multi-frame.
            dp_nontrivial += bool(multi) and len(ref_windows) > 1
    # The generator must exercise the DP, not only single frames or one big window.
    assert multi_window_cases >= NUM_RANDOM_CASES // 3
    assert dp_nontrivial >= NUM_RANDOM_CASES // 5


@pytest.mark.parametrize("layout", ["onevision", "llava_video"])
def test_vanilla_matches_oracle(layout):
    rng = np.random.default_rng(7)
    x = make_video(rng, 4, 6, 8)
    attention = make_attention(rng, 4, 6)
    assert check_case(x, attention, MergeConfig(), (2, 3), layout)


# --------------------------------------------------------------------------- edge cases


def _edge(x, attention, layout="llava_video", grid=None, **cfg):
    num_pos = x.shape[1]
    grid = grid or (1, num_pos)
    config = MergeConfig(**{"retain_ratio": 0.25, "tau": 0.8, **cfg})
    assert check_case(x, attention, config, grid, layout, require_margin=False)
    return plan_outer_merge(torch.from_numpy(x), torch.from_numpy(attention), config, grid, layout)


@pytest.mark.parametrize("layout", ["onevision", "llava_video"])
def test_single_frame(layout):
    rng = np.random.default_rng(1)
    x, attention = make_video(rng, 1, 12, 8), make_attention(rng, 1, 12)
    plan = _edge(x, attention, layout, grid=(3, 4))
    assert plan.windows.tolist() == [[0, 0]]
    assert plan.temporal.removed == 0
    assert plan.num_visual_tokens == 3  # ceil(12 * 0.25)


@pytest.mark.parametrize("layout", ["onevision", "llava_video"])
def test_all_frames_identical_is_one_static_window_without_dynamic_tokens(layout):
    rng = np.random.default_rng(2)
    frame = rng.standard_normal((10, 8)).astype(np.float32)
    x = np.repeat(frame[None], 5, axis=0)
    attention = make_attention(rng, 5, 10)
    plan = _edge(x, attention, layout, grid=(2, 5))
    assert plan.windows.tolist() == [[0, 4]]
    assert plan.temporal.removed == 4 * 10
    # r' = min(0.25 * 50 / 10, 1) = 1: every static position is its own cluster, no dynamic token anywhere.
    assert plan.retain_ratio == 1.0
    assert plan.frame_budget == (0, 0, 0, 0, 0)
    assert plan.num_visual_tokens == 10
    assert plan.frame_index[plan.position_index >= 0].unique().tolist() == [0]


def test_pure_noise_has_nothing_static():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 9, 64)).astype(np.float32)
    attention = make_attention(rng, 6, 9)
    plan = _edge(x, attention, grid=(3, 3), tau=0.8)
    assert plan.windows.tolist() == [[t, t] for t in range(6)]
    assert not plan.temporal.static.any()
    assert plan.retain_ratio == 0.25
    assert plan.num_visual_tokens == 6 * 3  # ceil(9 * 0.25) per frame


def test_tau_one_makes_nothing_static_even_for_identical_frames():
    rng = np.random.default_rng(4)
    x = np.repeat(rng.standard_normal((1, 8, 16)).astype(np.float32), 4, axis=0)
    plan = _edge(x, make_attention(rng, 4, 8), grid=(2, 4), tau=1.0)
    assert plan.windows.tolist() == [[t, t] for t in range(4)]
    assert plan.temporal.removed == 0


def test_retain_ratio_one_keeps_every_position_once():
    rng = np.random.default_rng(5)
    x = make_video(rng, 8, 12, 8)
    plan = _edge(x, make_attention(rng, 8, 12), grid=(3, 4), retain_ratio=1.0, tau=0.5)
    assert plan.retain_ratio == 1.0
    assert plan.num_visual_tokens == 8 * 12 - plan.temporal.removed


def test_zero_and_one_static_clusters():
    # Two identical frames, one static position among dynamic noise: n_st = 1, r' small -> M = round(<0.5) = 0.
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 8, 32)).astype(np.float32)
    x[1, 0] = x[0, 0]
    plan = _edge(x, make_attention(rng, 2, 8), grid=(2, 4), retain_ratio=0.2, tau=0.9)
    assert plan.windows.tolist() == [[0, 1]]
    assert plan.static_clusters == (0,)  # round(1 * 0.2 * 16 / 15) = round(0.213) = 0
    # Three static positions, r' = 0.25 * 16 / 13 = 0.3077 -> M = round(0.923) = 1.
    x[1, 1:3] = x[0, 1:3]
    plan = _edge(x, make_attention(rng, 2, 8), grid=(2, 4), retain_ratio=0.25, tau=0.9)
    assert plan.static_clusters == (1,)


def test_k_nn_larger_than_token_count():
    rng = np.random.default_rng(8)
    x = make_video(rng, 5, 6, 8)
    _edge(x, make_attention(rng, 5, 6), grid=(2, 3), k_nn=100, contextual_frac=0.5, retain_ratio=0.6, tau=0.5)


@pytest.mark.parametrize("layout", ["onevision", "llava_video"])
def test_duplicated_tokens_and_attention_ties(layout):
    # Exact duplicates at several positions (DPC density / gamma / distance ties) and equal attention.
    rng = np.random.default_rng(9)
    base = rng.standard_normal((3, 8)).astype(np.float32)
    frame = base[[0, 0, 1, 1, 1, 2, 0, 2, 1, 2, 0, 0]]  # (12, 8), each vector repeated
    x = np.repeat(frame[None], 4, axis=0)
    x[2:, 6:] = rng.standard_normal((2, 6, 8)).astype(np.float32)  # second half of the grid moves later
    attention = np.full((4, 12), 0.5, dtype=np.float32)
    for cfg in (dict(retain_ratio=0.4), dict(retain_ratio=0.7, contextual_frac=0.5, k_nn=2), dict(retain_ratio=1.0)):
        _edge(x, attention, layout, grid=(3, 4), tau=0.9, **cfg)


def test_frame_without_dynamic_tokens_and_max_window():
    rng = np.random.default_rng(10)
    frame = rng.standard_normal((6, 8)).astype(np.float32)
    x = np.repeat(frame[None], 6, axis=0)
    plan = _edge(x, make_attention(rng, 6, 6), grid=(2, 3), max_window=4, retain_ratio=0.1)
    # Windows of at most 4 frames: [0,3] + [4,5] removes 3*6 + 1*6 = 24 tokens (same as [0,1]+[2,5], a tie:
    # frame 5 closes the shortest best window, 2 frames).
    assert plan.windows.tolist() == [[0, 3], [4, 5]]
    assert plan.frame_budget == (0,) * 6


def test_several_videos_in_one_call_match_oracle():
    rng = np.random.default_rng(11)
    config = MergeConfig(retain_ratio=0.3, tau=0.7, contextual_frac=0.5, k_nn=3)
    while True:
        videos = [make_video(rng, f, 12, 8) for f in (3, 6, 1)]
        attentions = [make_attention(rng, v.shape[0], 12) for v in videos]
        refs = [run_oracle(v, a, config, (3, 4), "llava_video") for v, a in zip(videos, attentions)]
        if min(r.margin for r in refs) >= MARGIN:
            break
    newline = torch.ones(8)
    plans = plan_outer_merge([torch.from_numpy(v) for v in videos], [torch.from_numpy(a) for a in attentions], config, (3, 4), "llava_video")
    assert isinstance(plans, list) and len(plans) == 3
    tokens = apply_outer_merge([torch.from_numpy(v) for v in videos], plans, newline)
    for plan, tok, ref in zip(plans, tokens, refs):
        assert_matches(plan, tok, ref, newline, config)
    results = outer_merge([torch.from_numpy(v) for v in videos], [torch.from_numpy(a) for a in attentions], config, (3, 4), "llava_video", newline)
    for result, ref in zip(results, refs):
        assert_matches(result.plan, result.tokens, ref, newline, config)
    # (V, F, P, D) input: same frames for each video.
    stacked = torch.from_numpy(np.stack([videos[1], videos[1]]))
    att = torch.from_numpy(np.stack([attentions[1], attentions[1]]))
    for plan in plan_outer_merge(stacked, att, config, (3, 4), "llava_video"):
        assert_matches(plan, apply_outer_merge(stacked[0], plan, newline), refs[1], newline, config)
