"""Outer merge: a hand-worked budget, layouts, dtypes, determinism, the linear form and input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from holitom.errors import ConfigError, InputError
from holitom.merge import (
    APPLY_METHODS,
    MergeConfig,
    apply_outer_merge,
    get_layout,
    get_preset,
    layout_names,
    outer_merge,
    plan_outer_merge,
)

from merge_cases import hand_features, make_attention, make_video


def test_hand_worked_budget():
    # The hand-worked video of merge_cases.hand_features (DP worked out in test_temporal): windows [0,1] (static p0 p1) and [2,3] (static p0 p2 p3), R_total = 5.
    # N = 16, r = 0.5: r' = min(0.5 * 16 / (16 - 5), 1) = 8/11 = 0.72727
    #   [0,1]: n_st = 2, n_dyn = 2: b = ceil(2 * 8/11 = 1.4545) = 2 per frame; M = round(1.4545) = 1
    #   [2,3]: n_st = 3, n_dyn = 1: b = ceil(0.7273) = 1 per frame;             M = round(2.1818) = 2
    # tokens = 2 * 2 + 1 + 2 * 1 + 2 = 9 (+ 1 newline for OneVision)
    x = hand_features()
    attention = torch.arange(16, dtype=torch.float32).view(4, 4)
    config = MergeConfig(retain_ratio=0.5, tau=0.5)
    plan = plan_outer_merge(x, attention, config, (2, 2), "onevision")
    assert plan.retain_ratio == 0.5 * 16 / 11
    assert plan.frame_budget == (2, 2, 1, 1) and plan.static_clusters == (1, 2)
    assert plan.num_visual_tokens == 9 and plan.num_rows == 10
    # OneVision order: window [0,1]: 1 static cluster at frame 0, then frame 0's dynamic p2 p3, frame 1's p2 p3;
    # window [2,3]: 2 static clusters at frame 2, then frame 2's only dynamic token p1 (its attention
    # 9 is the only candidate), frame 3's p1; newline.
    rows = list(zip(plan.frame_index.tolist(), plan.position_index.tolist()))
    static_01 = rows[0]
    assert static_01[0] == 0 and static_01[1] in (0, 1)
    assert rows[1:5] == [(0, 2), (0, 3), (1, 2), (1, 3)]
    assert [f for f, _ in rows[5:7]] == [2, 2] and {p for _, p in rows[5:7]} <= {0, 2, 3}
    assert rows[7:] == [(2, 1), (3, 1), (3, -1)]


@pytest.mark.parametrize("layout,rows", [("onevision", 4 * 6 + 1), ("llava_video", 4 * 2 * 4)])
def test_vanilla_plan_keeps_every_token_in_order(layout, rows):
    x = torch.randn(4, 6, 5)
    newline = torch.full((5,), -3.0)
    result = outer_merge(x, None, get_preset("none"), (2, 3), layout, newline)
    assert result.tokens.shape == (rows, 5)
    plan = result.plan
    assert plan.temporal is None and plan.retain_ratio is None
    tokens = result.tokens[plan.position_index >= 0]
    assert torch.equal(tokens, x.reshape(-1, 5))
    assert (result.tokens[plan.newline_index] == -3.0).all()
    if layout == "llava_video":  # a newline after every row of 3 of every frame
        assert plan.newline_index.tolist() == [4 * i + 3 for i in range(8)]
    else:
        assert plan.newline_index.tolist() == [24]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["onevision", "llava_video"])
def test_low_precision_inputs(dtype, layout):
    rng = np.random.default_rng(0)
    x = torch.from_numpy(make_video(rng, 6, 12, 16)).to(dtype)
    attention = torch.from_numpy(make_attention(rng, 6, 12)).to(dtype)
    config = get_preset("r25").replace(tau=0.6)
    result = outer_merge(x, attention, config, (3, 4), layout, torch.ones(16, dtype=dtype))
    assert result.tokens.dtype == dtype
    ref_plan = plan_outer_merge(x.float(), attention.float(), config, (3, 4), layout)
    assert torch.equal(result.plan.src_index, ref_plan.src_index) and torch.equal(result.plan.dst_index, ref_plan.dst_index)
    # Same plan, same float32 accumulation, rounded once to the output dtype.
    ref = apply_outer_merge(x.float(), ref_plan, torch.ones(16))
    assert torch.equal(result.tokens, ref.to(dtype))


def test_deterministic():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(make_video(rng, 8, 16, 8))
    attention = torch.from_numpy((np.round(make_attention(rng, 8, 16) * 2) / 2).astype(np.float32))  # many ties
    config = MergeConfig(retain_ratio=0.3, tau=0.6, contextual_frac=0.5, k_nn=3)
    a = outer_merge(x, attention, config, (4, 4), "llava_video", torch.zeros(8))
    b = outer_merge(x.clone(), attention.clone(), config, (4, 4), "llava_video", torch.zeros(8))
    assert torch.equal(a.tokens, b.tokens)
    for name in ("src_index", "dst_index", "weight", "offsets", "frame_index", "position_index", "newline_index"):
        assert torch.equal(getattr(a.plan, name), getattr(b.plan, name)), name


def test_linear_form_invariants():
    rng = np.random.default_rng(2)
    x = torch.from_numpy(make_video(rng, 10, 20, 8))
    plan = plan_outer_merge(x, torch.from_numpy(make_attention(rng, 10, 20)), get_preset("r20").replace(tau=0.6), (4, 5), "llava_video")
    dst = plan.dst_index
    assert (dst[1:] >= dst[:-1]).all()  # sorted by output row
    assert plan.offsets.tolist() == torch.searchsorted(dst, torch.arange(plan.num_rows)).tolist()
    assert plan.src_index.unique().numel() == plan.src_index.numel()  # an input token feeds at most one output
    assert set(plan.newline_index.tolist()).isdisjoint(set(dst.tolist()))
    assert sorted(APPLY_METHODS) == ["embedding_bag", "frame_matmul"]
    a = apply_outer_merge(x, plan, torch.zeros(8), method="embedding_bag")
    b = apply_outer_merge(x, plan, torch.zeros(8), method="frame_matmul")
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("method", sorted(APPLY_METHODS))
def test_apply_is_differentiable_in_the_features_and_the_newline(method):
    """What a training step that merges its video needs: gradients equal to those of the plan as a dense matrix."""
    rng = np.random.default_rng(3)
    x = torch.from_numpy(make_video(rng, 8, 16, 8))
    plan = plan_outer_merge(x, torch.from_numpy(make_attention(rng, 8, 16)), get_preset("r25").replace(tau=0.6), (4, 4), "llava_video")
    dense = torch.zeros(plan.num_rows, 8 * 16, dtype=torch.float64)  # (N_out, F*P): the oracle's linear map
    dense[plan.dst_index, plan.src_index] = plan.weight.double()
    upstream = torch.randn(plan.num_rows, 8, generator=torch.Generator().manual_seed(0))  # (N_out, D)
    features, newline = x.clone().requires_grad_(True), torch.zeros(8, requires_grad=True)
    (apply_outer_merge(features, plan, newline, method=method) * upstream).sum().backward()
    torch.testing.assert_close(features.grad.double(), (dense.T @ upstream.double()).view(8, 16, 8), rtol=0, atol=1e-5)
    torch.testing.assert_close(newline.grad, upstream[plan.newline_index].sum(0), rtol=0, atol=1e-5)


def test_layout_registry():
    assert layout_names()[:2] == ["onevision", "llava_video"]
    with pytest.raises(ConfigError, match="onevision"):
        get_layout("qwen")


def test_bad_inputs():
    x, attention = torch.randn(4, 6, 8), torch.rand(4, 6)
    config = get_preset("r25")
    with pytest.raises(InputError, match="grid"):
        plan_outer_merge(x, attention, config, (2, 2), "onevision")
    with pytest.raises(InputError, match="grid"):
        plan_outer_merge(x, attention, config, (2, 3.0), "onevision")
    with pytest.raises(ConfigError, match="layout"):
        plan_outer_merge(x, attention, config, (2, 3), "grid")
    with pytest.raises(ConfigError, match="MergeConfig"):
        plan_outer_merge(x, attention, {"retain_ratio": 0.1}, (2, 3), "onevision")
    with pytest.raises(InputError, match="attention is required"):
        plan_outer_merge(x, None, config, (2, 3), "onevision")
    with pytest.raises(InputError, match=r"shape \(F, P\)"):
        plan_outer_merge(x, attention[:3], config, (2, 3), "onevision")
    with pytest.raises(InputError, match="rank"):
        plan_outer_merge(x[0], attention, config, (2, 3), "onevision")
    with pytest.raises(InputError, match="share P"):
        plan_outer_merge([x, torch.randn(2, 4, 8)], [attention, torch.rand(2, 4)], config, (2, 3), "onevision")
    bad = x.clone()
    bad[2, 1, 0] = float("nan")
    with pytest.raises(InputError, match="features holds NaN"):
        plan_outer_merge(bad, attention, config, (2, 3), "onevision")
    bad_attention = attention.clone()
    bad_attention[0, 0] = float("inf")
    with pytest.raises(InputError, match="attention holds NaN"):
        plan_outer_merge(x, bad_attention, config, (2, 3), "onevision")
    with pytest.raises(InputError, match=r"features\[1\] holds NaN"):
        plan_outer_merge([x, bad], [attention, attention], config, (2, 3), "onevision")
    plan = plan_outer_merge(x, attention, config, (2, 3), "onevision")
    with pytest.raises(InputError, match="do not match the plan"):
        apply_outer_merge(x[:3], plan, torch.zeros(8))
    with pytest.raises(InputError, match="newline"):
        apply_outer_merge(x, plan, torch.zeros(7))
    with pytest.raises(ConfigError, match="apply method"):
        apply_outer_merge(x, plan, torch.zeros(8), method="loop")
