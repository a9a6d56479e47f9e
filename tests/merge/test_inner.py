"""Stage III (inner merge) and the last-token attention row, against literal oracles.

The oracle runs the official sequential loop (h_j <- (h_j + h_i) / 2 in ascending
order of i) in float64; the library uses the closed form in float32. Indices must
match exactly; hidden states use atol = rtol = 1e-5; random cases whose best and
second-best cosine are within 1e-5 are redrawn.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from holitom.errors import ConfigError, InputError
from holitom.merge import (
    apply_inner_merge,
    inner_keep_count,
    inner_merge_weights,
    last_token_attention,
    plan_inner_merge,
)

import merge_oracle as oracle


ATOL = RTOL = 1e-5


@pytest.mark.parametrize("mode", ["sequential", "mean"])
def test_random_cases_match_oracle(mode):
    rng = np.random.default_rng(0 if mode == "sequential" else 1)
    compared = 0
    while compared < 40:
        num_visual = int(rng.integers(0, 40))
        prefix, suffix = int(rng.integers(0, 5)), int(rng.integers(0, 5))
        dim = int(rng.choice([2, 8, 32]))
        hidden = rng.standard_normal((prefix + num_visual + suffix, dim)).astype(np.float32)
        scores = rng.random(num_visual).astype(np.float32)
        if rng.random() < 0.3:
            scores = (np.round(scores * 3) / 3).astype(np.float32)  # ties in the top-k
        ratio = float(rng.choice([0.0, 0.25, 0.5, 0.75, 0.9]))
        span = (prefix, prefix + num_visual)
        ref = oracle.inner_merge(hidden, span, scores, ratio, mode)
        if ref.margin < 1e-5:
            continue
        compared += 1
        h = torch.from_numpy(hidden)
        plan = plan_inner_merge(torch.from_numpy(scores), h[span[0] : span[1]], ratio)
        assert plan.keep.tolist() == ref.keep
        assert plan.dropped.tolist() == ref.dropped
        assert [ref.keep.index(j) for j in ref.assign] == plan.assign.tolist()
        out, kept_index = apply_inner_merge(h, span, plan, mode)
        assert kept_index.tolist() == ref.kept_index
        torch.testing.assert_close(out.double(), torch.from_numpy(ref.hidden), atol=ATOL, rtol=RTOL)


def test_hand_worked_sequential_and_mean():
    # Visual tokens v0..v4 (1-D hidden, D = 2 so cosines are meaningful), scores keep v1 and v3 (R = 0.6:
    # k = round(5 * 0.4) = 2). Dropped v0, v2, v4 all point along v1 -> all join v1 (members 0 < 2 < 4).
    hidden = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.1], [0.0, 5.0], [4.0, 0.0]])
    scores = torch.tensor([0.1, 0.9, 0.2, 0.8, 0.3])
    plan = plan_inner_merge(scores, hidden, 0.6)
    assert plan.keep.tolist() == [1, 3] and plan.dropped.tolist() == [0, 2, 4] and plan.assign.tolist() == [0, 0, 0]
    # Sequential: h1 <- (h1 + h0)/2 = (1.5, 0); <- (. + h2)/2 = (2.25, 0.05); <- (. + h4)/2 = (3.125, 0.025)
    # Closed form: h1/8 + h0/8 + h2/4 + h4/2 = (0.25 + 0.125 + 0.75 + 2, 0.025) = (3.125, 0.025).
    out, kept = apply_inner_merge(hidden, (0, 5), plan, "sequential")
    torch.testing.assert_close(out, torch.tensor([[3.125, 0.025], [0.0, 5.0]]))
    assert kept.tolist() == [1, 3]
    keep_w, drop_w = inner_merge_weights(plan, "sequential")
    assert keep_w.tolist() == [0.125, 1.0] and drop_w.tolist() == [0.125, 0.25, 0.5]
    # Mean: (2 + 1 + 3 + 4) / 4 = 2.5, (0 + 0 + 0.1 + 0) / 4 = 0.025.
    out, _ = apply_inner_merge(hidden, (0, 5), plan, "mean")
    torch.testing.assert_close(out, torch.tensor([[2.5, 0.025], [0.0, 5.0]]))


def test_keep_count_rounding_and_guards():
    assert inner_keep_count(1000, 0.5) == 500
    assert inner_keep_count(5, 0.5) == 2  # round(2.5) = 2 (half to even, like the official round())
    assert inner_keep_count(7, 0.5) == 4  # round(3.5) = 4
    assert inner_keep_count(1, 0.5) == 1  # round(0.5) = 0 -> at least one token is kept
    assert inner_keep_count(0, 0.5) == 0
    assert inner_keep_count(10, 0.0) == 10


def test_ratio_zero_keeps_everything_and_empty_span():
    h = torch.randn(6, 4)
    plan = plan_inner_merge(torch.rand(4), h[1:5], 0.0)
    out, kept = apply_inner_merge(h, (1, 5), plan)
    assert torch.equal(out, h) and kept.tolist() == list(range(6))
    plan = plan_inner_merge(torch.rand(0), h[2:2], 0.5)
    out, kept = apply_inner_merge(h, (2, 2), plan)
    assert torch.equal(out, h) and kept.tolist() == list(range(6))


def test_long_run_of_members_does_not_overflow():
    # 300 dropped tokens into one kept token: weights 2^-300 underflow to 0 like repeated halving does.
    hidden = torch.ones(301, 3)
    hidden[0] = torch.tensor([1.0, 0.0, 0.0])
    scores = torch.zeros(301)
    scores[0] = 1.0
    plan = plan_inner_merge(scores, hidden, 300 / 301)
    assert plan.num_keep == 1
    out, _ = apply_inner_merge(hidden, (0, 301), plan, "sequential")
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.ones(1, 3))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_batch_dim_input(dtype):
    h = torch.randn(1, 20, 16).to(dtype)
    scores = torch.rand(12)
    plan = plan_inner_merge(scores, h[0, 4:16], 0.5)
    out, kept = apply_inner_merge(h, (4, 16), plan)
    assert out.shape == (1, 14, 16) and out.dtype == dtype
    ref, _ = apply_inner_merge(h[0].float(), (4, 16), plan)
    torch.testing.assert_close(out[0].float(), ref.to(dtype).float())


def test_bad_inputs():
    h = torch.randn(10, 4)
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        plan_inner_merge(torch.rand(10), h, 1.0)
    with pytest.raises(InputError, match="rows"):
        plan_inner_merge(torch.rand(9), h, 0.5)
    bad = h.clone()
    bad[3, 1] = float("inf")
    with pytest.raises(InputError, match="NaN or Inf"):
        plan_inner_merge(torch.rand(10), bad, 0.5)
    plan = plan_inner_merge(torch.rand(10), h, 0.5)
    with pytest.raises(InputError, match="visual_span"):
        apply_inner_merge(h, (1, 11), plan)
    with pytest.raises(InputError, match="visual_span"):
        apply_inner_merge(h, (0, 9), plan)
    with pytest.raises(ConfigError, match="mode"):
        apply_inner_merge(h, (0, 10), plan, "median")
    with pytest.raises(InputError, match="one sequence"):
        apply_inner_merge(torch.randn(2, 10, 4), (0, 10), plan)


# --------------------------------------------------------------------------- last_token_attention


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (8, 2), (6, 1)])
def test_last_token_attention_matches_oracle(heads, kv_heads):
    g = torch.Generator().manual_seed(heads * 10 + kv_heads)
    q = torch.randn(heads, 16, generator=g)
    keys = torch.randn(kv_heads, 30, 16, generator=g) * 2
    span = (5, 25)
    got = last_token_attention(q, keys, span)
    ref = oracle.last_token_attention(q.double().numpy(), keys.double().numpy(), span)
    assert got.dtype == torch.float32 and got.shape == (20,)
    torch.testing.assert_close(got.double(), torch.tensor(ref, dtype=torch.float64), atol=1e-7, rtol=1e-5)
    # The full row (span = whole prompt) is a probability distribution.
    torch.testing.assert_close(last_token_attention(q, keys, (0, 30)).sum(), torch.tensor(1.0))


def test_last_token_attention_bad_inputs():
    q, k = torch.randn(6, 8), torch.randn(4, 10, 8)
    with pytest.raises(InputError, match="multiple"):
        last_token_attention(q, k, (0, 10))
    with pytest.raises(InputError, match="head_dim"):
        last_token_attention(torch.randn(4, 7), k, (0, 10))
    with pytest.raises(InputError, match="visual_span"):
        last_token_attention(torch.randn(4, 8), k, (3, 11))
    with pytest.raises(InputError, match="rank"):
        last_token_attention(torch.randn(4, 8), torch.randn(10, 8), (0, 10))
