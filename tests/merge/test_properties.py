"""Property tests (hypothesis) of the outer and inner merges.

Outer merge, for any video, grid, layout and config:
- the visual token count equals the budget formula recomputed here from the
  temporal plan (sum over windows of len * ceil(n_dyn * r') + round(n_st * r')),
  and stays within F + windows/2 of r * N while r' < 1;
- newlines are where the layout says; (frame, position) of every token is valid
  and unique; frames never go backwards;
- every output token is a convex combination of its members (weights >= 0,
  summing to 1), so it lies inside their per-coordinate range; no NaN/Inf.
Inner merge: k = round(L_v (1 - R)) (>= 1), kept indices ascending and valid,
merged rows inside their members' range, no NaN/Inf.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from holitom.merge import MergeConfig, apply_inner_merge, apply_outer_merge, plan_inner_merge, plan_outer_merge

from merge_cases import make_attention, make_video


SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
# Float32 slack on "inside the members' range": values are O(1), sums of <= 10 terms.
RANGE_SLACK = 1e-5


@st.composite
def outer_cases(draw):
    num_frames = draw(st.integers(1, 8))
    rows, cols = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dim = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    config = MergeConfig(
        retain_ratio=draw(st.one_of(st.none(), st.sampled_from([0.1, 0.15, 0.2, 0.25, 1.0]), st.floats(0.01, 1.0))),
        tau=draw(st.sampled_from([-1.0, 0.0, 0.5, 0.8, 0.95, 1.0])),
        beta=draw(st.floats(0.0, 1.0)),
        contextual_frac=draw(st.sampled_from([0.0, 0.3, 1.0])),
        k_nn=draw(st.integers(1, 9)),
        max_window=draw(st.one_of(st.none(), st.integers(1, 8))),
    )
    layout = draw(st.sampled_from(["onevision", "llava_video"]))
    identical = draw(st.booleans())
    return num_frames, (rows, cols), dim, seed, config, layout, identical


def expected_tokens(plan, config: MergeConfig) -> int:
    num_frames, num_pos = plan.num_frames, plan.tokens_per_frame
    if not config.outer_enabled:
        return num_frames * num_pos
    total = num_frames * num_pos
    rp = min(config.retain_ratio / ((total - plan.temporal.removed) / total), 1.0)  # DESIGN.md step 5's expression
    assert plan.retain_ratio == rp
    count = 0
    for (a, e), n_static in zip(plan.windows.tolist(), plan.temporal.static_counts):
        length = e - a + 1
        count += length * math.ceil((num_pos - n_static) * rp)
        if length > 1:
            count += round(n_static * rp)
    return count


@SETTINGS
@given(outer_cases())
def test_outer_merge_properties(case):
    num_frames, grid, dim, seed, config, layout, identical = case
    rng = np.random.default_rng(seed)
    num_pos = grid[0] * grid[1]
    x = make_video(rng, num_frames, num_pos, dim)
    if identical:
        x[:] = x[0]
    x = torch.from_numpy(x)
    attention = torch.from_numpy(make_attention(rng, num_frames, num_pos))
    plan = plan_outer_merge(x, attention, config, grid, layout)
    tokens = apply_outer_merge(x, plan, torch.full((dim,), 7.0))

    # Counts.
    n_tok = plan.num_visual_tokens
    assert n_tok == expected_tokens(plan, config)
    if config.outer_enabled and plan.retain_ratio < 1.0:
        target = config.retain_ratio * num_frames * num_pos
        assert target - 0.5 * len(plan.windows) <= n_tok <= target + num_frames + 0.5 * len(plan.windows)
    frame, position = plan.frame_index.tolist(), plan.position_index.tolist()
    is_token = [p >= 0 for p in position]
    if layout == "onevision":
        assert plan.num_newlines == 1 and position[-1] == -1
    else:
        token_rows = {(f, p // grid[1]) for f, p, t in zip(frame, position, is_token) if t}
        assert plan.num_newlines == len(token_rows)
        for i, (f, p) in enumerate(zip(frame, position)):  # a newline closes its row: the next row starts after it
            if p >= 0 and (i + 1 == len(position) or position[i + 1] < 0 or position[i + 1] // grid[1] != p // grid[1] or frame[i + 1] != f):
                assert position[i + 1] == -1 and frame[i + 1] == f
    assert plan.newline_index.tolist() == [i for i, t in enumerate(is_token) if not t]

    # Positions valid and unique, frames in order.
    pairs = [(f, p) for f, p, t in zip(frame, position, is_token) if t]
    assert len(set(pairs)) == len(pairs) == n_tok
    assert all(0 <= f < num_frames and 0 <= p < num_pos for f, p in pairs)
    assert frame == sorted(frame)
    assert tuple(plan.frame_budget) == tuple(
        sum(1 for f, p in pairs if f == t and not (plan.temporal is not None and bool(plan.temporal.static[t, p])))
        for t in range(num_frames)
    )

    # Convex combinations inside the members' range, no NaN/Inf.
    assert torch.isfinite(tokens).all()
    assert (plan.weight >= 0).all()
    x_flat = x.reshape(-1, dim)
    sums = torch.zeros(plan.num_rows).index_add_(0, plan.dst_index, plan.weight)
    for r in range(plan.num_rows):
        members = plan.src_index[plan.dst_index == r]
        if not is_token[r]:
            assert members.numel() == 0 and (tokens[r] == 7.0).all()
            continue
        assert abs(float(sums[r]) - 1.0) < 1e-5
        lo, hi = x_flat[members].min(0).values, x_flat[members].max(0).values
        assert (tokens[r] >= lo - RANGE_SLACK).all() and (tokens[r] <= hi + RANGE_SLACK).all()


@SETTINGS
@given(
    num_visual=st.integers(0, 60),
    prefix=st.integers(0, 4),
    suffix=st.integers(0, 4),
    dim=st.integers(1, 8),
    ratio=st.floats(0.0, 0.99),
    mode=st.sampled_from(["sequential", "mean"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_inner_merge_properties(num_visual, prefix, suffix, dim, ratio, mode, seed):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(prefix + num_visual + suffix, dim, generator=g)
    scores = torch.rand(num_visual, generator=g)
    span = (prefix, prefix + num_visual)
    plan = plan_inner_merge(scores, hidden[span[0] : span[1]], ratio)
    k = max(round(num_visual * (1 - ratio)), 1) if num_visual else 0
    assert plan.num_keep == k
    assert sorted(plan.keep.tolist() + plan.dropped.tolist()) == list(range(num_visual))
    out, kept = apply_inner_merge(hidden, span, plan, mode)
    assert out.shape == (hidden.shape[0] - (num_visual - k), dim)
    assert kept.tolist() == sorted(set(kept.tolist())) and all(0 <= i < hidden.shape[0] for i in kept.tolist())
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:prefix], hidden[:prefix], atol=0, rtol=0)
    torch.testing.assert_close(out[prefix + k :], hidden[span[1] :], atol=0, rtol=0)
    visual = hidden[span[0] : span[1]]
    for slot, j in enumerate(plan.keep.tolist()):
        members = [j] + plan.dropped[plan.assign == slot].tolist()
        lo, hi = visual[members].min(0).values, visual[members].max(0).values
        assert (out[prefix + slot] >= lo - RANGE_SLACK).all() and (out[prefix + slot] <= hi + RANGE_SLACK).all()
