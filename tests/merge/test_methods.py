"""The reduction-method registry: dispatch by config type, competing presets, newline insertion."""

from __future__ import annotations

import pytest
import torch

from holitom.errors import ConfigError
from holitom.merge import MergeConfig, get_preset, preset_names, reduction_for, register_preset
from holitom.merge.baselines import BaselineConfig, apply_reduction, token_budget
from holitom.merge.layout import get_layout, place_tokens
from holitom.merge.methods import BaselineReduction, HoliTomReduction


def _newlines_oracle(tokens, frames, positions, grid, newline):
    """Literal loop: walk the tokens, emit a newline whenever the (frame, grid row) group ends."""
    rows, cols = grid
    out = []
    for i in range(len(tokens)):
        out.append(tokens[i])
        key = (int(frames[i]), int(positions[i]) // cols)
        nxt = (int(frames[i + 1]), int(positions[i + 1]) // cols) if i + 1 < len(tokens) else None
        if key != nxt:
            out.append(newline)
    return torch.stack(out)


@pytest.mark.parametrize("seed", range(40))
def test_grid_newlines_match_a_loop(seed):
    g = torch.Generator().manual_seed(seed)
    frames_n, rows, cols = int(torch.randint(1, 5, (1,), generator=g)), int(torch.randint(1, 6, (1,), generator=g)), int(torch.randint(1, 6, (1,), generator=g))
    keep = torch.rand(frames_n, rows * cols, generator=g) < 0.4
    frame_index, position_index = keep.nonzero(as_tuple=True)  # sorted by (frame, position)
    tokens = torch.randn(len(frame_index), 3, generator=g)
    newline = torch.full((3,), 9.0)
    got = place_tokens(get_layout("llava_video"), tokens, frame_index, position_index, frames_n, (rows, cols), newline)
    if len(tokens):
        assert torch.equal(got, _newlines_oracle(tokens, frame_index, position_index, (rows, cols), newline))
    else:
        assert got.shape == (0, 3)


def test_onevision_gets_one_newline_and_unknown_layout_is_refused():
    tokens = torch.randn(5, 2)
    out = place_tokens(get_layout("onevision"), tokens, torch.zeros(5, dtype=torch.long), torch.arange(5), 1, (2, 3), torch.ones(2))
    assert torch.equal(out[:5], tokens) and torch.equal(out[5], torch.ones(2))
    with pytest.raises(ConfigError, match="unknown token layout 'grid'"):
        get_layout("grid")


def test_dispatch_by_config_type():
    assert isinstance(reduction_for(get_preset("r15")), HoliTomReduction)
    assert isinstance(reduction_for(get_preset("topk-r15")), BaselineReduction)
    with pytest.raises(ConfigError, match="no reduction method is registered for dict"):
        reduction_for({"method": "topk"})
    with pytest.raises(ConfigError, match="must be one of MergeConfig, BaselineConfig, got str"):
        register_preset("bogus", "r15")


def test_competing_presets_exist_at_every_paper_ratio():
    names = set(preset_names())
    for prefix in ("pool", "topk", "evs", "fastv"):
        assert {f"{prefix}-r{p}" for p in (10, 15, 20, 25)} <= names


@pytest.mark.parametrize("name", ["topk-r10", "evs-r25", "topk-r15"])
def test_outer_budget_equals_holitoms_nominal_budget(name):
    g = torch.Generator().manual_seed(0)
    features, attention = torch.randn(6, 16, 8, generator=g), torch.rand(6, 16, generator=g)
    cfg = get_preset(name)
    tokens = reduction_for(cfg).outer(features, attention, (4, 4), "onevision", torch.zeros(8))
    assert tokens.shape[0] == token_budget(6, 16, cfg.retain_ratio) + 1  # + the newline


def test_baseline_outer_equals_plan_and_apply_plus_newline():
    g = torch.Generator().manual_seed(1)
    features, attention = torch.randn(3, 16, 4, generator=g), torch.rand(3, 16, generator=g)
    cfg = BaselineConfig("attention_topk", 0.25)
    want = apply_reduction(features, cfg.plan(features, attention, (4, 4)))
    got = reduction_for(cfg).outer(features, attention, (4, 4), "onevision", torch.zeros(4))
    assert torch.equal(got[:-1], want)


def test_fastv_keeps_r_of_the_visual_tokens_at_layer_k_without_merging():
    cfg = get_preset("fastv-r20")
    red = reduction_for(cfg)
    assert red.inner_layer(28) == 18 and red.inner_layer(4) == 3
    g = torch.Generator().manual_seed(2)
    hidden, scores = torch.randn(30, 4, generator=g), torch.rand(20, generator=g)
    out, kept = red.inner(hidden, scores, (5, 25))
    assert out.shape[0] == 10 + round(20 * 0.2)
    assert torch.equal(out, hidden[kept])  # dropped, not merged
    assert red.without_inner().fastv_layer_frac is None


def test_without_inner_removes_only_the_inner_step():
    cfg = get_preset("r15")
    assert reduction_for(cfg).without_inner() == cfg.replace(inner=None)
    assert isinstance(reduction_for(cfg).without_inner(), MergeConfig)
