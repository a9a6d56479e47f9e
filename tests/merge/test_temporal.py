"""Stage I: similarity, static-count table, DP (hand-worked and against the oracle), static mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from holitom.errors import ConfigError, InputError
from holitom.merge import frame_similarity, plan_temporal, segment_frames, static_count_table
from holitom.merge.temporal import _similarity_and_norms

import merge_oracle as oracle
from merge_cases import HAND_SIM, hand_features, make_video

# HAND_SIM (merge_cases), tau = 0.5: p0 static over every frame pair, p1 over pairs 0-1, p2 over
# pairs 1-2, p3 over pair 2 only.
# C(a, e) = (e - a) * n(a, e):
#   [0,1]: p0 p1    -> 1 * 2 = 2      [1,2]: p0 p1 p2 -> 1 * 3 = 3     [2,3]: p0 p2 p3 -> 1 * 3 = 3
#   [0,2]: p0 p1    -> 2 * 2 = 4      [1,3]: p0 p2    -> 2 * 2 = 4
#   [0,3]: p0       -> 3 * 1 = 3
HAND_TABLE = [
    [0, 2, 4, 3],
    [0, 0, 3, 4],
    [0, 0, 0, 3],
    [0, 0, 0, 0],
]
# DP: dp[-1] = 0, dp[0] = 0
#   dp[1] = max(dp[0] = 0, dp[-1] + C(0,1) = 2)                                 = 2  ([0,1])
#   dp[2] = max(dp[1] = 2, dp[0] + C(1,2) = 3, dp[-1] + C(0,2) = 4)             = 4  ([0,2])
#   dp[3] = max(dp[2] = 4, dp[1] + C(2,3) = 5, dp[0] + C(1,3) = 4, C(0,3) = 3) = 5  ([2,3] after dp[1])
# Backtrack: [2,3], then dp[1] -> [0,1].  R_total = 5. The whole video as one window (3) and the
# greedy-longest-first [0,2] + [3] (4) both lose.


def test_hand_worked_table_and_dp():
    table = static_count_table(HAND_SIM, tau=0.5)
    assert table.dtype == torch.int64
    assert table.tolist() == HAND_TABLE
    assert segment_frames(table).tolist() == [[0, 1], [2, 3]]


def test_hand_worked_dp_with_max_window():
    # W = 2: C(0,2), C(1,3), C(0,3) are not allowed (0 in the table) -> still [0,1] + [2,3] = 5.
    table = static_count_table(HAND_SIM, tau=0.5, max_window=2)
    assert table.tolist() == [[0, 2, 0, 0], [0, 0, 3, 0], [0, 0, 0, 3], [0, 0, 0, 0]]
    assert segment_frames(table, max_window=2).tolist() == [[0, 1], [2, 3]]
    # W = 1: no multi-frame window at all.
    table = static_count_table(HAND_SIM, tau=0.5, max_window=1)
    assert not table.any()
    assert segment_frames(table, max_window=1).tolist() == [[0, 0], [1, 1], [2, 2], [3, 3]]


def test_dp_tie_rules():
    # dp[1] = max(0, C(0,1) = 0): a tie -> frame 1 stays alone.
    # dp[2] = max(dp[1] = 0, dp[0] + C(1,2) = 2, dp[-1] + C(0,2) = 2): tie between w = 2 and w = 3 -> shortest (w = 2).
    table = torch.tensor([[0, 0, 2], [0, 0, 2], [0, 0, 0]])
    assert segment_frames(table).tolist() == [[0, 0], [1, 2]]


def test_hand_worked_plan_temporal():
    plan = plan_temporal(hand_features(), tau=0.5)
    assert plan.windows.tolist() == [[0, 1], [2, 3]]
    assert plan.removed == 5
    assert plan.static_counts == (2, 3)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[0:2, [0, 1]] = True  # window [0,1]: p0, p1
    expected[2:4, [0, 2, 3]] = True  # window [2,3]: p0, p2, p3
    assert torch.equal(plan.static, expected)
    starts, ends = plan.frame_windows()
    assert starts.tolist() == [0, 0, 2, 2] and ends.tolist() == [1, 1, 3, 3]


def test_similarity_matches_oracle_and_is_clamped():
    rng = np.random.default_rng(0)
    x = make_video(rng, 6, 10, 16)
    x[3, 4] = 0.0  # zero token: cosine 0 by the eps guard
    sim = frame_similarity(torch.from_numpy(x))
    ref = torch.tensor(oracle.similarity(x.astype(np.float64)), dtype=torch.float64)
    assert sim.dtype == torch.float32 and sim.shape == (5, 10)
    torch.testing.assert_close(sim.double(), ref, atol=1e-6, rtol=0)
    same = torch.randn(1, 7, 33).repeat(3, 1, 1) * 1e3
    assert frame_similarity(same).max() <= 1.0
    assert frame_similarity(torch.randn(1, 5, 4)).shape == (0, 5)


@pytest.mark.parametrize("frames, positions, dim", [(1, 5, 8), (2, 1, 3), (7, 9, 32), (5, 196, 896)])
def test_similarity_and_norms_match_float64(frames, positions, dim):
    # The strided pair view must pair x[t, p] with x[t+1, p], also for a non-contiguous input.
    base = torch.from_numpy(make_video(np.random.default_rng(frames + dim), frames, 2 * positions, dim))
    for x in (base[:, :positions].contiguous(), base[:, ::2]):
        sim, norms = _similarity_and_norms(x)
        x64 = x.double()
        ref_norms = x64.norm(dim=-1)  # (F, P)
        ref_sim = (x64[:-1] * x64[1:]).sum(-1) / (ref_norms[:-1] * ref_norms[1:])
        assert sim.shape == (frames - 1, positions) and norms.shape == (frames, positions)
        torch.testing.assert_close(sim.double(), ref_sim, atol=1e-6, rtol=0)
        torch.testing.assert_close(norms.double(), ref_norms, atol=0, rtol=1e-6)


def test_table_and_segments_match_oracle_on_random_videos():
    rng = np.random.default_rng(1)
    for _ in range(40):
        num_frames = int(rng.integers(1, 14))
        num_pos = int(rng.integers(1, 12))
        x = make_video(rng, num_frames, num_pos, 8)
        tau = float(rng.uniform(0.3, 0.95))
        max_window = None if rng.random() < 0.5 else int(rng.integers(1, num_frames + 1))
        s = oracle.similarity(x.astype(np.float64))
        if s and min(abs(v - tau) for row in s for v in row) < 1e-5:
            continue
        ref_table = oracle.count_table(s, num_frames, num_pos, tau, max_window)
        ref_windows, ref_removed = oracle.segment(ref_table, num_frames, max_window)
        table = static_count_table(frame_similarity(torch.from_numpy(x)), tau, max_window)
        assert table.tolist() == ref_table
        plan = plan_temporal(torch.from_numpy(x), tau, max_window)
        assert plan.windows.tolist() == [list(w) for w in ref_windows]
        assert plan.removed == ref_removed == sum(ref_table[a][e] for a, e in ref_windows)


def test_long_video_512_frames():
    rng = np.random.default_rng(2)
    x = torch.from_numpy(make_video(rng, 512, 6, 4))
    plan = plan_temporal(x, tau=0.6)
    w = plan.windows
    assert w[0, 0] == 0 and w[-1, 1] == 511 and torch.equal(w[1:, 0], w[:-1, 1] + 1)
    # Removed tokens agree with the table on the chosen windows.
    table = plan.table
    assert plan.removed == int(sum(table[a, e] for a, e in w.tolist()))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_input_is_planned_in_float32(dtype):
    rng = np.random.default_rng(3)
    x = torch.from_numpy(make_video(rng, 6, 8, 16)).to(dtype)
    a, b = plan_temporal(x, 0.7), plan_temporal(x.float(), 0.7)
    assert torch.equal(a.windows, b.windows) and torch.equal(a.static, b.static)


def test_bad_inputs_raise_typed_errors():
    with pytest.raises(InputError, match="rank 3"):
        plan_temporal(torch.randn(4, 5), 0.8)
    with pytest.raises(InputError, match="float32"):
        plan_temporal(torch.ones(2, 3, 4, dtype=torch.int64), 0.8)
    with pytest.raises(InputError, match="F, P, D >= 1"):
        plan_temporal(torch.randn(0, 3, 4), 0.8)
    with pytest.raises(ConfigError, match=r"\[-1, 1\]"):
        plan_temporal(torch.randn(2, 3, 4), 1.5)
    with pytest.raises(ConfigError, match="max_window"):
        plan_temporal(torch.randn(2, 3, 4), 0.8, max_window=0)
    x = torch.randn(3, 4, 5)
    x[1, 2, 3] = float("nan")
    with pytest.raises(InputError, match="NaN or Inf"):
        plan_temporal(x, 0.8)
    x[1, 2, 3] = float("inf")
    with pytest.raises(InputError, match="NaN or Inf"):
        plan_temporal(x, 0.8)
    with pytest.raises(InputError, match="square"):
        segment_frames(torch.zeros(2, 3, dtype=torch.long))
