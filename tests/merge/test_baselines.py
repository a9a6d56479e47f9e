"""Competing reduction methods against literal loop oracles, hand-worked cases, budgets and bad input.

The oracles below are written from the docstrings of holitom/merge/baselines.py
(the spec), one token at a time in plain Python, and share no code with it.
Indices must match exactly; merged values are compared in float32 with
atol = rtol = 1e-6 (the oracle averages in float64, the implementation
accumulates in float32: for |x| <= ~4 and <= 16 terms the gap is ~1e-7).
"""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from holitom.errors import ConfigError, InputError
from holitom.merge.baselines import (
    BASELINES,
    BaselineConfig,
    FastVPlan,
    ReductionPlan,
    apply_fastv,
    apply_reduction,
    frame_budgets,
    plan_attention_topk,
    plan_evs,
    plan_fastv,
    plan_uniform_pool,
    token_budget,
    uniform_pool_grid,
)

ATOL = RTOL = 1e-6
NUM_RANDOM_CASES = 120


# ---------------------------------------------------------------------------
# Oracles (loops only)
# ---------------------------------------------------------------------------


def oracle_budget(num_frames, num_positions, r):
    return max(1, round(r * (num_frames * num_positions)))


def oracle_frame_budgets(num_frames, total):
    return [math.floor((t + 1) * total / num_frames) - math.floor(t * total / num_frames) for t in range(num_frames)]


def oracle_pool_grid(h, w, r):
    target = r * h * w
    best = None
    for h_out in range(1, h + 1):
        w_out = round(target / h_out)
        w_out = max(1, min(w, w_out))
        # cell size in input cells: (h / h_out) tall, (w / w_out) wide
        tall, wide = h / h_out, w / w_out
        elongation = max(tall / wide, wide / tall)
        too_long = max(1.0, elongation / 2)
        key = (round(too_long, 12), abs(h_out * w_out - target), round(elongation, 12), h_out)
        if best is None or key < best[0]:
            best = (key, (h_out, w_out))
    return best[1]


def oracle_uniform_pool(x, r, grid):
    """Tokens (list of float64 vectors), frame ids, positions."""
    num_frames = x.shape[0]
    h, w = grid
    h_out, w_out = oracle_pool_grid(h, w, r)
    tokens, frames, positions = [], [], []
    for t in range(num_frames):
        for i in range(h_out):
            r0, r1 = math.floor(i * h / h_out), math.ceil((i + 1) * h / h_out)
            for j in range(w_out):
                c0, c1 = math.floor(j * w / w_out), math.ceil((j + 1) * w / w_out)
                acc = torch.zeros(x.shape[-1], dtype=torch.float64)
                count = 0
                for rr in range(r0, r1):
                    for cc in range(c0, c1):
                        acc += x[t, rr * w + cc].double()
                        count += 1
                tokens.append(acc / count)
                frames.append(t)
                positions.append(r0 * w + c0)
    return tokens, frames, positions


def oracle_topk(a, r):
    num_frames, num_positions = a.shape
    budgets = oracle_frame_budgets(num_frames, oracle_budget(num_frames, num_positions, r))
    kept = []
    for t in range(num_frames):
        ranked = sorted(range(num_positions), key=lambda p: (-float(a[t, p]), p))
        for p in sorted(ranked[: budgets[t]]):
            kept.append(t * num_positions + p)
    return kept


def oracle_cos(u, v):
    u, v = u.double(), v.double()
    dot = sum(float(u[k]) * float(v[k]) for k in range(len(u)))
    nu = max(math.sqrt(sum(float(e) ** 2 for e in u)), 1e-8)
    nv = max(math.sqrt(sum(float(e) ** 2 for e in v)), 1e-8)
    return dot / (nu * nv)


def oracle_evs(x, r):
    """Kept flat indices, plus the ranked list so tests can look at the cut."""
    num_frames, num_positions = x.shape[:2]
    total = oracle_budget(num_frames, num_positions, r)
    scored = []
    for t in range(1, num_frames):
        for p in range(num_positions):
            scored.append((oracle_cos(x[t, p], x[t - 1, p]), t * num_positions + p))
    scored.sort()  # by similarity, then by flat index
    extra = total - num_positions
    kept = list(range(num_positions)) + sorted(idx for _, idx in scored[:extra])
    return sorted(kept), scored, extra


def oracle_fastv(scores, ratio):
    n = len(scores)
    k = round(n * (1 - ratio))
    ranked = sorted(range(n), key=lambda i: (-float(scores[i]), i))
    return sorted(ranked[:k])


def assert_selection(plan: ReductionPlan, expected_flat, num_positions):
    assert plan.num_out == len(expected_flat)
    assert plan.src_index.tolist() == list(expected_flat)
    assert plan.dst_index.tolist() == list(range(len(expected_flat)))
    assert torch.equal(plan.weight, torch.ones(len(expected_flat)))
    assert plan.frame_index.tolist() == [i // num_positions for i in expected_flat]
    assert plan.position_index.tolist() == [i % num_positions for i in expected_flat]


def random_shape(rng):
    h, w = rng.randint(1, 6), rng.randint(1, 6)
    return rng.randint(1, 5), (h, w), rng.randint(1, 6)


def random_ratio(rng):
    return rng.choice([1.0, 0.5, 0.25, 0.1, rng.uniform(0.01, 1.0)])


# ---------------------------------------------------------------------------
# Uniform pooling
# ---------------------------------------------------------------------------


def test_uniform_pool_matches_loop_oracle_and_adaptive_avg_pool():
    rng = random.Random(0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(NUM_RANDOM_CASES):
        num_frames, (h, w), dim = random_shape(rng)
        r = random_ratio(rng)
        x = torch.randn(num_frames, h * w, dim, generator=gen)
        plan = plan_uniform_pool(x, None, r, (h, w))
        out = apply_reduction(x, plan)
        tokens, frames, positions = oracle_uniform_pool(x, r, (h, w))
        assert plan.num_out == len(tokens) == out.shape[0]
        assert plan.frame_index.tolist() == frames
        assert plan.position_index.tolist() == positions
        torch.testing.assert_close(out, torch.stack(tokens).float(), atol=ATOL, rtol=RTOL)
        # Second, independent oracle: torch's own adaptive average pooling.
        h_out, w_out = uniform_pool_grid((h, w), r)
        pooled = F.adaptive_avg_pool2d(x.reshape(num_frames, h, w, dim).permute(0, 3, 1, 2), (h_out, w_out))
        torch.testing.assert_close(out, pooled.permute(0, 2, 3, 1).reshape(-1, dim), atol=ATOL, rtol=RTOL)


def test_uniform_pool_grid_matches_documented_rule_and_pinned_values():
    rng = random.Random(1)
    for _ in range(300):
        h, w, r = rng.randint(1, 30), rng.randint(1, 30), random_ratio(rng)
        assert uniform_pool_grid((h, w), r) == oracle_pool_grid(h, w, r), (h, w, r)
    # LLaVA-OneVision 14x14 and LLaVA-Video 13x13 at the paper's ratios.
    assert [uniform_pool_grid((14, 14), r) for r in (0.10, 0.15, 0.20, 0.25)] == [(4, 5), (5, 6), (5, 8), (7, 7)]
    assert [uniform_pool_grid((13, 13), r) for r in (0.10, 0.15, 0.20, 0.25)] == [(4, 4), (5, 5), (5, 7), (6, 7)]
    # One-row grids can only shrink along the row.
    assert uniform_pool_grid((1, 10), 0.3) == (1, 3)
    assert uniform_pool_grid((9, 4), 1.0) == (9, 4)


def test_uniform_pool_hand_worked_overlapping_bins():
    # 3x3 grid -> 2x2 (r = 4/9): torch's adaptive bins are rows/cols {0,1} and {1,2},
    # overlapping because 2 does not divide 3.
    x = torch.arange(9, dtype=torch.float32).reshape(1, 9, 1)
    plan = plan_uniform_pool(x, None, 4 / 9, (3, 3))
    out = apply_reduction(x, plan)
    assert out.reshape(-1).tolist() == [2.0, 3.0, 5.0, 6.0]  # (0+1+3+4)/4, (1+2+4+5)/4, ...
    assert plan.position_index.tolist() == [0, 1, 3, 4]
    assert plan.frame_index.tolist() == [0, 0, 0, 0]
    assert plan.weight.tolist() == [0.25] * 16


def test_uniform_pool_several_videos_share_one_plan():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, 35, 5, generator=gen)  # (V, F, P, D)
    plan = plan_uniform_pool(x[0], None, 0.3, (5, 7))
    out = apply_reduction(x, plan)
    assert out.shape == (3, plan.num_out, 5)
    for v in range(3):
        torch.testing.assert_close(out[v], apply_reduction(x[v], plan), atol=0, rtol=0)


# ---------------------------------------------------------------------------
# Attention top-k
# ---------------------------------------------------------------------------


def test_attention_topk_matches_loop_oracle_with_many_ties():
    rng = random.Random(3)
    gen = torch.Generator().manual_seed(3)
    for case in range(NUM_RANDOM_CASES):
        num_frames, (h, w), dim = random_shape(rng)
        r = random_ratio(rng)
        x = torch.randn(num_frames, h * w, dim, generator=gen)
        # Half the cases draw scores from 3 levels so ties are everywhere.
        if case % 2:
            a = torch.randint(0, 3, (num_frames, h * w), generator=gen).float()
        else:
            a = torch.rand(num_frames, h * w, generator=gen)
        plan = plan_attention_topk(x, a, r, (h, w))
        expected = oracle_topk(a, r)
        assert_selection(plan, expected, h * w)
        out = apply_reduction(x, plan)
        assert torch.equal(out, x.reshape(-1, dim)[expected])


def test_attention_topk_hand_worked_ties_go_to_lower_position():
    x = torch.zeros(2, 4, 1)
    a = torch.tensor([[0.1, 0.4, 0.4, 0.2], [0.3, 0.3, 0.3, 0.3]])
    # r = 0.25 -> B = 2 -> one token per frame; frame 0 ties 1 vs 2, frame 1 ties everything.
    assert plan_attention_topk(x, a, 0.25, (2, 2)).src_index.tolist() == [1, 4]
    # r = 0.5 -> two per frame: {1, 2} (order by position) and {0, 1}.
    assert plan_attention_topk(x, a, 0.5, (2, 2)).src_index.tolist() == [1, 2, 4, 5]


def test_attention_topk_budget_spread_over_frames():
    # B = round(0.1 * 32 * 196) = 627 = 32 * 19.59: 19 frames get 20 tokens and 13 get 19.
    x = torch.zeros(32, 196, 1)
    a = torch.rand(32, 196, generator=torch.Generator().manual_seed(4))
    plan = plan_attention_topk(x, a, 0.1, (14, 14))
    per_frame = torch.bincount(plan.frame_index, minlength=32)
    assert plan.num_out == 627
    assert per_frame.tolist() == frame_budgets(32, 627).tolist() == oracle_frame_budgets(32, 627)
    assert sorted(set(per_frame.tolist())) == [19, 20] and int((per_frame == 20).sum()) == 19


# ---------------------------------------------------------------------------
# EVS
# ---------------------------------------------------------------------------

NEAR_TIE = 1e-5


def _ambiguous_cut(scored, extra, pair_of):
    """True when a kept and a dropped token from different column pairs are within NEAR_TIE.

    The oracle ranks float64 similarities, the implementation float32 ones; two
    different vector pairs this close may legitimately swap. Exact ties between
    identical vector pairs (copied columns) are NOT ambiguous: both sides compute
    identical numbers for them, and the tie rule decides.
    """
    if extra <= 0 or extra >= len(scored):
        return False
    kept, dropped = scored[:extra], scored[extra:]
    lo, hi = kept[-1][0], dropped[0][0]
    near_kept = [idx for s, idx in kept if s >= hi - NEAR_TIE]
    near_dropped = [idx for s, idx in dropped if s <= lo + NEAR_TIE]
    return any(pair_of(i) != pair_of(j) for i in near_kept for j in near_dropped)


def test_evs_matches_loop_oracle():
    rng = random.Random(5)
    gen = torch.Generator().manual_seed(5)
    checked = redrawn = 0
    while checked < NUM_RANDOM_CASES:
        num_frames, (h, w), dim = random_shape(rng)
        num_frames += 1  # at least two frames, so there is something to rank
        num_positions = h * w
        x = torch.randn(num_frames, num_positions, dim, generator=gen)
        # Some frames barely move, so similarities spread over [-1, 1].
        for t in range(1, num_frames):
            if rng.random() < 0.3:
                x[t] = x[t - 1] + 0.05 * torch.randn(num_positions, dim, generator=gen)
        # Copy whole columns (a position over all frames) to create exact ties.
        for p in range(num_positions):
            if rng.random() < 0.3:
                x[:, p] = x[:, rng.randrange(num_positions)]
        lowest = num_positions / (num_frames * num_positions)
        r = rng.choice([1.0, rng.uniform(lowest + 1e-9, 1.0), rng.uniform(lowest + 1e-9, 1.0)])
        expected, scored, extra = oracle_evs(x, r)

        def pair_of(flat, x=x, num_positions=num_positions):
            # Identical (previous, current) vectors give bit-identical similarities on both sides.
            t, p = divmod(flat, num_positions)
            return (tuple(x[t - 1, p].tolist()), tuple(x[t, p].tolist()))

        if _ambiguous_cut(scored, extra, pair_of):
            redrawn += 1
            continue
        plan = plan_evs(x, None, r, (h, w))
        assert_selection(plan, expected, num_positions)
        assert plan.num_out == token_budget(num_frames, num_positions, r)
        assert torch.equal(apply_reduction(x, plan), x.reshape(-1, dim)[expected])
        checked += 1
    assert redrawn < NUM_RANDOM_CASES // 4  # the redraw guard must stay rare


def test_evs_hand_worked():
    x = torch.tensor(
        [
            [[1.0, 0.0], [0.0, 1.0]],
            [[1.0, 0.0], [1.0, 0.0]],  # pos 0 unchanged (s = 1), pos 1 turned (s = 0)
            [[0.0, 1.0], [1.0, 1.0]],  # pos 0 turned (s = 0), pos 1 half-turned (s = 1/sqrt 2)
        ]
    )
    # r = 4/6 -> B = 4 -> two tokens after frame 0: both s = 0 tokens.
    assert plan_evs(x, None, 4 / 6, (1, 2)).src_index.tolist() == [0, 1, 3, 4]
    # r = 0.5 -> B = 3 -> one token: the s = 0 tie goes to the earlier flat index 3.
    assert plan_evs(x, None, 0.5, (1, 2)).src_index.tolist() == [0, 1, 3]
    # r = 5/6 -> B = 5: adds the 1/sqrt(2) token; the unchanged one goes.
    assert plan_evs(x, None, 5 / 6, (1, 2)).src_index.tolist() == [0, 1, 3, 4, 5]


def test_evs_static_video_keeps_earliest_tokens():
    # One-hot tokens give similarities of exactly 1.0, so the whole ranking is ties.
    x = torch.eye(4).repeat(3, 1, 1)  # (F=3, P=4, D=4), every frame identical
    plan = plan_evs(x, None, 0.5, (2, 2))  # B = 6: frame 0 + two of frame 1
    assert plan.src_index.tolist() == [0, 1, 2, 3, 4, 5]


def test_evs_zero_tokens_count_as_changed():
    x = torch.ones(2, 3, 2)
    x[1, 2] = 0.0  # similarity 0 by the eps rule, not NaN
    plan = plan_evs(x, None, 4 / 6, (1, 3))
    assert plan.src_index.tolist() == [0, 1, 2, 5]


def test_evs_budget_below_one_frame_is_a_config_error():
    x = torch.randn(4, 9, 3)
    with pytest.raises(ConfigError, match=r"B = round\(r \* F \* P\) = 4 .*at least P=9"):
        plan_evs(x, None, 0.1, (3, 3))
    with pytest.raises(ConfigError, match="at least P=9"):
        plan_evs(x[:1], None, 0.9, (3, 3))


# ---------------------------------------------------------------------------
# Shared properties and edge cases
# ---------------------------------------------------------------------------


def _inputs(num_frames, grid, dim, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_frames, grid[0] * grid[1], dim, generator=gen)
    return x, torch.rand(num_frames, grid[0] * grid[1], generator=gen)


@pytest.mark.parametrize("method", sorted(BASELINES))
def test_retain_ratio_one_is_identity(method):
    x, a = _inputs(3, (3, 5), 4, seed=6)
    plan = BASELINES[method](x, a, 1.0, (3, 5))
    assert plan.src_index.tolist() == list(range(45))
    assert plan.position_index.tolist() == list(range(15)) * 3
    assert torch.equal(apply_reduction(x, plan), x.reshape(45, 4))


@pytest.mark.parametrize("method", sorted(BASELINES))
def test_single_frame(method):
    x, a = _inputs(1, (4, 4), 3, seed=7)
    r = 1.0 if method == "evs" else 0.3
    plan = BASELINES[method](x, a, r, (4, 4))
    assert plan.frame_index.tolist() == [0] * plan.num_out
    expected = {"uniform_pool": 4, "attention_topk": 5, "evs": 16}[method]  # (2, 2) grid; round(4.8); all
    assert plan.num_out == expected


def test_budget_formulas():
    rng = random.Random(8)
    for _ in range(200):
        num_frames, (h, w), _ = random_shape(rng)
        num_frames += rng.randint(0, 30)
        num_positions = h * w
        r = random_ratio(rng)
        x, a = _inputs(num_frames, (h, w), 1, seed=rng.randrange(1 << 30))
        budget = token_budget(num_frames, num_positions, r)
        nominal = r * num_frames * num_positions
        assert budget == oracle_budget(num_frames, num_positions, r)
        assert abs(budget - nominal) <= 0.5 or budget == 1
        assert plan_attention_topk(x, a, r, (h, w)).num_out == budget
        assert frame_budgets(num_frames, budget).tolist() == oracle_frame_budgets(num_frames, budget)
        h_out, w_out = uniform_pool_grid((h, w), r)
        assert plan_uniform_pool(x, None, r, (h, w)).num_out == num_frames * h_out * w_out
        if budget >= num_positions:
            assert plan_evs(x, None, r, (h, w)).num_out == budget


def test_paper_setting_budgets():
    # LLaVA-OneVision, 32 frames x 196: HoliTom's nominal r * N.
    assert [token_budget(32, 196, r) for r in (0.10, 0.15, 0.20, 0.25)] == [627, 941, 1254, 1568]
    assert [32 * h * w for h, w in (uniform_pool_grid((14, 14), r) for r in (0.10, 0.15, 0.20, 0.25))] == [640, 960, 1280, 1568]


def test_apply_keeps_dtype_and_accumulates_in_float32():
    x, a = _inputs(2, (4, 4), 8, seed=9)
    xb = x.to(torch.bfloat16)
    for method in sorted(BASELINES):
        plan = BASELINES[method](xb, a, 0.5, (4, 4))
        out = apply_reduction(xb, plan)
        assert out.dtype == torch.bfloat16
        # float32 accumulation, one rounding at the end: equals the float32 result rounded.
        assert torch.equal(out, apply_reduction(xb.float(), plan).to(torch.bfloat16))


def test_every_registered_method_has_an_oracle_test():
    oracle_tested = {"uniform_pool", "attention_topk", "evs"}
    assert set(BASELINES) == oracle_tested


# ---------------------------------------------------------------------------
# FastV
# ---------------------------------------------------------------------------


def test_fastv_matches_loop_oracle():
    rng = random.Random(10)
    gen = torch.Generator().manual_seed(10)
    for case in range(NUM_RANDOM_CASES):
        n = rng.randint(0, 40)
        ratio = rng.choice([0.0, 0.5, 0.75, rng.uniform(0.0, 0.99)])
        scores = torch.randint(0, 4, (n,), generator=gen).float() if case % 2 else torch.rand(n, generator=gen)
        plan = plan_fastv(scores, ratio)
        assert plan.keep.tolist() == oracle_fastv(scores, ratio)
        assert plan.num_visual == n

        prefix, suffix, dim = rng.randint(0, 5), rng.randint(0, 5), 3
        hidden = torch.randn(prefix + n + suffix, dim, generator=gen)
        out, kept_index = apply_fastv(hidden, (prefix, prefix + n), plan)
        expected = list(range(prefix)) + [prefix + i for i in oracle_fastv(scores, ratio)] + list(range(prefix + n, prefix + n + suffix))
        assert kept_index.tolist() == expected
        assert torch.equal(out, hidden[expected])
        out3, kept3 = apply_fastv(hidden[None], (prefix, prefix + n), plan)
        assert out3.shape == (1, len(expected), dim) and torch.equal(out3[0], out) and torch.equal(kept3, kept_index)


def test_fastv_hand_worked():
    scores = torch.tensor([0.1, 0.5, 0.2, 0.5, 0.05, 0.3])
    plan = plan_fastv(scores, 0.5)  # keep 3: the two 0.5s and 0.3
    assert plan.keep.tolist() == [1, 3, 5]
    hidden = torch.arange(10, dtype=torch.float32)[:, None]
    out, kept_index = apply_fastv(hidden, (2, 8), plan)
    assert kept_index.tolist() == [0, 1, 3, 5, 7, 8, 9]
    assert out.reshape(-1).tolist() == [0.0, 1.0, 3.0, 5.0, 7.0, 8.0, 9.0]
    # Ties: equal scores keep the lower index; round(5 * 0.5) = round(2.5) = 2 (half to even).
    assert plan_fastv(torch.ones(5), 0.5).keep.tolist() == [0, 1]
    assert plan_fastv(scores, 0.0).keep.tolist() == list(range(6))


def test_fastv_bad_input():
    with pytest.raises(InputError, match=r"1-D floating tensor \(L_v,\); got shape \(2, 3\)"):
        plan_fastv(torch.rand(2, 3), 0.5)
    with pytest.raises(InputError, match="NaN or infinite"):
        plan_fastv(torch.tensor([0.1, float("nan")]), 0.5)
    for bad in (1.0, -0.1, float("nan"), True):
        with pytest.raises(ConfigError, match=r"must be in \[0, 1\); got"):
            plan_fastv(torch.rand(4), bad)
    plan = plan_fastv(torch.rand(4), 0.5)
    with pytest.raises(InputError, match=r"covers L_v=4 visual tokens but visual_span \(1, 4\) has 3"):
        apply_fastv(torch.rand(8, 2), (1, 4), plan)
    with pytest.raises(InputError, match=r"0 <= start <= end <= S=8; got \(5, 9\)"):
        apply_fastv(torch.rand(8, 2), (5, 9), plan)
    with pytest.raises(InputError, match=r"\(S, D\) or \(1, S, D\).*got \(2, 8, 2\)"):
        apply_fastv(torch.rand(2, 8, 2), (0, 4), plan)


# ---------------------------------------------------------------------------
# Bad input and config
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(BASELINES))
def test_outer_bad_input(method):
    plan_fn = BASELINES[method]
    x, a = _inputs(2, (2, 3), 4, seed=11)
    with pytest.raises(InputError, match=r"3-D floating tensor \(F, P, D\).*got shape \(12, 4\)"):
        plan_fn(x.reshape(12, 4), a, 1.0, (2, 3))
    with pytest.raises(InputError, match=r"3-D floating tensor.*dtype torch.int64"):
        plan_fn(x.long(), a, 1.0, (2, 3))
    with pytest.raises(InputError, match=r"grid 3x3 has 9 cells but features have P=6"):
        plan_fn(x, a, 1.0, (3, 3))
    with pytest.raises(InputError, match=r"grid must be a pair of positive ints"):
        plan_fn(x, a, 1.0, (2.0, 3))
    with pytest.raises(InputError, match=r"attention must be .* \(F, P\) = \(2, 6\).*got shape \(2, 5\)"):
        plan_fn(x, a[:, :5], 1.0, (2, 3))
    bad = x.clone()
    bad[1, 2, 3] = float("nan")
    with pytest.raises(InputError, match="features contains NaN or infinite"):
        plan_fn(bad, a, 1.0, (2, 3))
    bad_a = a.clone()
    bad_a[0, 0] = float("inf")
    with pytest.raises(InputError, match="attention contains NaN or infinite"):
        plan_fn(x, bad_a, 1.0, (2, 3))
    for r in (0.0, -0.5, 1.5, float("nan"), True, "0.1"):
        with pytest.raises(ConfigError, match=r"retain_ratio must be a number in \(0, 1\]; got"):
            plan_fn(x, a, r, (2, 3))


def test_attention_topk_requires_attention():
    x, _ = _inputs(2, (2, 3), 4, seed=12)
    with pytest.raises(InputError, match=r"attention \(F, P\) = \(2, 6\) is required; got None"):
        plan_attention_topk(x, None, 0.5, (2, 3))


def test_apply_reduction_bad_input():
    x, a = _inputs(2, (2, 3), 4, seed=13)
    plan = plan_attention_topk(x, a, 0.5, (2, 3))
    with pytest.raises(InputError, match=r"built for \(F, P\) = \(2, 6\) but features have shape \(3, 6, 4\)"):
        apply_reduction(torch.randn(3, 6, 4), plan)
    with pytest.raises(InputError, match=r"floating tensor \(\.\.\., F, P, D\); got shape \(6, 4\)"):
        apply_reduction(x[0], plan)


def test_baseline_config():
    cfg = BaselineConfig("evs", 0.25, fastv_layer_frac=18 / 28)
    assert cfg.fastv_layer(28) == 18 and BaselineConfig("evs", 0.25).fastv_layer(28) is None
    x, a = _inputs(4, (3, 3), 2, seed=14)
    assert torch.equal(cfg.plan(x, a, (3, 3)).src_index, plan_evs(x, a, 0.25, (3, 3)).src_index)
    with pytest.raises(ConfigError, match=r"unknown method 'tome'; allowed values are \['attention_topk', 'evs', 'uniform_pool'\]"):
        BaselineConfig("tome", 0.1)
    for r in (0, 1.01, -1.0, float("nan"), None):
        with pytest.raises(ConfigError, match=r"retain_ratio must be a number in \(0, 1\]; got .*Allowed values: 0 < r <= 1"):
            BaselineConfig("evs", r)
    with pytest.raises(ConfigError, match=r"fastv_layer_frac must be None \(no FastV\) or a number in \(0, 1\)"):
        BaselineConfig("evs", 0.1, fastv_layer_frac=1.0)
    with pytest.raises(ConfigError, match=r"fastv_ratio must be a number in \[0, 1\); got 1"):
        BaselineConfig("evs", 0.1, fastv_ratio=1)
    with pytest.raises(ConfigError, match=r"gives K=0; FastV needs 1 <= K <= 3"):
        BaselineConfig("evs", 0.1, fastv_layer_frac=0.1).fastv_layer(4)
    with pytest.raises(AttributeError):
        cfg.retain_ratio = 0.5  # frozen


def test_fastv_plan_type():
    assert isinstance(plan_fastv(torch.rand(3), 0.5), FastVPlan)
