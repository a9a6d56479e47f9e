"""Density-peak clustering: a hand-worked case, the oracle, ties, padding/batching, weights and errors.

Indices must match the oracle exactly; merged values use atol = rtol = 1e-5 (float32
library vs float64 oracle); random cases with a decision margin below 1e-5 are redrawn.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from holitom.errors import ConfigError, InputError
from holitom.merge import apply_density_peaks, density_peak_weights, plan_density_peaks
from holitom.merge.dpc import _dpc_core

import merge_oracle as oracle


ATOL = RTOL = 1e-5


def test_hand_worked_clustering():
    # Five 1-D tokens (D = 1, so d_ij = |x_i - x_j|), M = 2 clusters, k_nn = 7 -> k = min(7, 2) = 2.
    x = torch.tensor([[0.0], [1.0], [3.0], [10.0], [10.5]])
    # d^2 rows:   x0: 0 1 9 100 110.25 | x1: 1 0 4 81 90.25 | x2: 9 4 0 49 56.25
    #             x3: 100 81 49 0 0.25 | x4: 110.25 90.25 56.25 0.25 0
    # rho_i = exp(-mean of the 2 smallest d^2 of row i):
    #   rho0 = exp(-(0 + 1) / 2) = e^-0.5   = 0.606531   rho1 = e^-0.5 (tie with x0: lower index x0 is denser)
    #   rho2 = exp(-(0 + 4) / 2) = e^-2     = 0.135335
    #   rho3 = exp(-(0 + .25)/2) = e^-0.125 = 0.882497   rho4 = e^-0.125 (tie with x3: x3 is denser)
    # density order: x3 > x4 > x0 > x1 > x2
    # delta: x3 densest -> max d = |0 - 10.5| = 10.5;  x4 -> d(x4, x3) = 0.5;  x0 -> min(d to x3, x4) = 10;
    #        x1 -> min(9, 9.5, d(x1, x0) = 1) = 1;  x2 -> min(7, 7.5, 3, d(x2, x1) = 2) = 2
    # gamma = rho * delta: x0 6.06531, x1 0.606531, x2 0.270671, x3 9.26622, x4 0.441248
    # top-2 -> centres {x3, x0}, in index order [0, 3].
    # assignment: x1 -> x0 (1 < 9), x2 -> x0 (3 < 7), x4 -> x3 (0.5 < 10.5).
    plan = plan_density_peaks(x, num_clusters=2, k_nn=7)
    assert plan.centres.tolist() == [0, 3]
    assert plan.assign.tolist() == [0, 0, 0, 1, 1]
    assert plan.is_centre.tolist() == [True, False, False, True, False]
    assert plan.member_count.tolist() == [2, 1]
    # merged with beta = 0.6: cluster x0: 0.6 * 0 + 0.4 * mean(1, 3) = 0.8; cluster x3: 0.6 * 10 + 0.4 * 10.5 = 10.2
    merged = apply_density_peaks(x, plan, beta=0.6)
    torch.testing.assert_close(merged, torch.tensor([[0.8], [10.2]]))
    # Linear form: weights beta / (1 - beta) / m per token.
    torch.testing.assert_close(density_peak_weights(plan, 0.6), torch.tensor([0.6, 0.2, 0.2, 0.6, 0.4]))
    ref = oracle.dpc([v.double().numpy() for v in x], 2, 7, 0.6)
    assert ref.centres == [0, 3] and ref.assign == [0, 0, 0, 3, 3]
    np.testing.assert_allclose(ref.rho, [math.exp(-0.5), math.exp(-0.5), math.exp(-2), math.exp(-0.125), math.exp(-0.125)])
    np.testing.assert_allclose(ref.delta, [10, 1, 2, 10.5, 0.5])


def test_hand_worked_three_clusters_with_an_empty_one():
    # Same tokens, M = 3 -> k = 3. 3 smallest d^2 per row:
    #   x0: 0 1 9 -> mean 10/3, x1: 0 1 4 -> 5/3, x2: 0 4 9 -> 13/3, x3: 0 .25 49 -> 49.25/3, x4: 0 .25 56.25 -> 56.5/3
    # density order: x1 > x0 > x2 > x3 > x4
    # delta: x1 densest -> 10.5; x0 -> 1; x2 -> min(2, 3) = 2; x3 -> min(9, 10, 7) = 7; x4 -> 0.5
    # gamma: x1 e^(-5/3)*10.5 = 1.98339; x0 e^(-10/3) = 0.035674; x2 e^(-13/3)*2 = 0.026264;
    #        x3 e^(-49.25/3)*7 = 5.1e-7; x4 e^(-56.5/3)*0.5 = 3.3e-9
    # top-3 -> centres {x1, x0, x2}; x3 and x4 join the nearest centre x2 (d 7 and 7.5).
    x = torch.tensor([[0.0], [1.0], [3.0], [10.0], [10.5]])
    plan = plan_density_peaks(x, num_clusters=3, k_nn=7)
    assert plan.centres.tolist() == [0, 1, 2]
    assert plan.assign.tolist() == [0, 1, 2, 2, 2]
    assert plan.member_count.tolist() == [0, 0, 2]
    # x0 and x1 keep their own value (empty clusters); x2: 0.6 * 3 + 0.4 * (10 + 10.5) / 2 = 5.9
    torch.testing.assert_close(apply_density_peaks(x, plan, 0.6), torch.tensor([[0.0], [1.0], [5.9]]))


def _random_tokens(rng, n, dim):
    return rng.standard_normal((n, dim)).astype(np.float32) * rng.uniform(0.5, 3.0)


def test_random_groups_match_oracle():
    rng = np.random.default_rng(0)
    compared = 0
    while compared < 60:
        n = int(rng.integers(1, 30))
        dim = int(rng.choice([1, 3, 8, 32]))
        x = _random_tokens(rng, n, dim)
        m = int(rng.integers(0, n + 1))
        k_nn = int(rng.integers(1, 12))
        beta = float(rng.uniform(0, 1))
        ref = oracle.dpc([v.astype(np.float64) for v in x], m, k_nn, beta)
        if ref.margin < 1e-5:
            continue
        compared += 1
        plan = plan_density_peaks(torch.from_numpy(x), m, k_nn)
        assert plan.centres.tolist() == ref.centres
        centre_slot = {c: s for s, c in enumerate(ref.centres)}
        assert plan.assign.tolist() == [centre_slot[a] if a >= 0 else -1 for a in ref.assign]
        if m:
            expected = torch.from_numpy(np.stack([ref.merged[c] for c in ref.centres])).float()
            torch.testing.assert_close(apply_density_peaks(torch.from_numpy(x), plan, beta), expected, atol=ATOL, rtol=RTOL)


def test_batched_padded_groups_equal_single_groups():
    rng = np.random.default_rng(1)
    sizes, clusters = [5, 12, 1, 9], [2, 4, 1, 0]
    width, dim = 14, 6
    x = torch.zeros(len(sizes), width, dim)
    valid = torch.zeros(len(sizes), width, dtype=torch.bool)
    singles = []
    for g, n in enumerate(sizes):
        tokens = torch.from_numpy(_random_tokens(rng, n, dim))
        x[g, :n] = tokens
        x[g, n:] = 1e3  # garbage in padding slots must not matter
        valid[g, :n] = True
        singles.append(tokens)
    plan = plan_density_peaks(x, clusters, k_nn=3, valid=valid)
    merged = apply_density_peaks(x, plan, beta=0.3)
    assert merged.shape == (4, 4, dim)
    for g, (tokens, m) in enumerate(zip(singles, clusters)):
        single = plan_density_peaks(tokens, m, k_nn=3)
        assert plan.centres[g, :m].tolist() == single.centres.tolist()
        assert plan.centre_valid[g].tolist() == [s < m for s in range(4)]
        assert plan.assign[g, : sizes[g]].tolist() == single.assign.tolist()
        assert (plan.assign[g, sizes[g] :] == -1).all()
        torch.testing.assert_close(merged[g, :m], apply_density_peaks(tokens, single, beta=0.3), atol=ATOL, rtol=RTOL)
        assert (merged[g, m:] == 0).all()


def test_duplicates_tie_by_lower_index():
    # Four copies of a, two of b: density ties resolve to the lower index; duplicates of a centre
    # have delta 0 and never outrank it; equidistant centres go to the lower index.
    a, b = torch.randn(16), torch.randn(16)
    x = torch.stack([b, a, a, b, a, a])
    plan = plan_density_peaks(x, num_clusters=2, k_nn=7)
    # Centres must be the first copy of each vector: index 0 (b) and 1 (a).
    assert plan.centres.tolist() == [0, 1]
    assert plan.assign.tolist() == [0, 1, 1, 0, 1, 1]
    ref = oracle.dpc([v.double().numpy() for v in x], 2, 7, 0.5)
    assert ref.centres == [0, 1]
    # All six identical: every rho and gamma tie -> centres are the lowest indices.
    same = a.repeat(6, 1)
    plan = plan_density_peaks(same, num_clusters=3, k_nn=2)
    assert plan.centres.tolist() == [0, 1, 2]
    assert plan.assign.tolist() == [0, 1, 2, 0, 0, 0]  # d = 0 to every centre: the lowest
    torch.testing.assert_close(apply_density_peaks(same, plan, 0.6), a.repeat(3, 1))


def test_zero_one_and_all_clusters_and_large_k():
    x = torch.randn(7, 5)
    none = plan_density_peaks(x, 0, 7)
    assert none.centres.numel() == 0 and (none.assign == -1).all()
    assert apply_density_peaks(x, none, 0.6).shape == (0, 5)
    one = plan_density_peaks(x, 1, 7)  # k = 1: every rho = 1, the densest is index 0 (tie rule)
    assert (one.assign == 0).all()
    torch.testing.assert_close(apply_density_peaks(x, one, 0.6)[0], 0.6 * x[one.centres[0]] + 0.4 * torch.cat([x[: one.centres[0]], x[one.centres[0] + 1 :]]).mean(0))
    every = plan_density_peaks(x, 7, 100)  # k_nn far above n: k = min(k_nn, M) = 7 = n
    assert every.centres.tolist() == list(range(7))
    torch.testing.assert_close(apply_density_peaks(x, every, 0.6), x)


def test_core_squared_distances_are_exact_for_duplicates_and_symmetric():
    x = torch.randn(1, 9, 64) * 20 + 100  # large common offset: centring keeps float32 accurate
    x[0, 5] = x[0, 2]
    plan, d2, mean = _dpc_core(x.clone(), torch.ones(1, 9, dtype=torch.bool), [3], 7)
    assert d2[0, 2, 5] == 0 and d2[0, 5, 2] == 0
    assert torch.equal(d2, d2.transpose(1, 2))
    assert (d2.diagonal(dim1=1, dim2=2) == 0).all()
    ref = torch.cdist(x.double(), x.double()) ** 2 / 64
    torch.testing.assert_close(d2.double(), ref, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(mean, x.mean(1))


def test_bad_inputs():
    x = torch.randn(5, 3)
    with pytest.raises(ConfigError, match="num_clusters"):
        plan_density_peaks(x, 6, 7)
    with pytest.raises(ConfigError, match="k_nn"):
        plan_density_peaks(x, 2, 0)
    with pytest.raises(ConfigError, match="one per group"):
        plan_density_peaks(x[None].repeat(2, 1, 1), [1, 2, 3], 7)
    with pytest.raises(InputError, match="rank"):
        plan_density_peaks(torch.randn(5), 1, 7)
    with pytest.raises(InputError, match="valid"):
        plan_density_peaks(x, 1, 7, valid=torch.ones(4, dtype=torch.bool))
    bad = x.clone()
    bad[1, 1] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        plan_density_peaks(bad, 2, 7)
    plan = plan_density_peaks(x, 2, 7)
    with pytest.raises(ConfigError, match="beta"):
        apply_density_peaks(x, plan, 1.5)
    with pytest.raises(InputError, match="does not match"):
        apply_density_peaks(torch.randn(4, 3), plan, 0.5)
