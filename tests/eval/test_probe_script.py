"""scripts/probe_merge_objects.py: which objects a merge plan still shows, against hand-made plans and brute force."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from script_modules import load_script  # tests/ helper (tests/conftest.py puts it on sys.path)


@pytest.fixture(scope="module")
def probe():
    return load_script("probe_merge_objects")


def _plan(edges: list[tuple[int, int, float]], frame_index: list[int], tokens_per_frame: int):
    """A plan with just what shown_frames reads: edges (flat input t * P + p, output row, weight)."""
    src, dst, weight = zip(*edges)
    return SimpleNamespace(
        tokens_per_frame=tokens_per_frame,
        src_index=torch.tensor(src), dst_index=torch.tensor(dst), weight=torch.tensor(weight, dtype=torch.float32),
        frame_index=torch.tensor(frame_index), num_rows=len(frame_index),
    )


def test_static_cluster_counts_for_its_first_frame_and_shares_are_weighted(probe):
    P = 4
    # row 0: a static cluster of position 0 over frames 0-1; row 1: (t0, p1); row 2: a newline (no edges);
    # row 3: (t1, p2) and (t1, p3) merged with weights 0.25 / 0.75.
    plan = _plan([(0, 0, 0.5), (P + 0, 0, 0.5), (1, 1, 1.0), (P + 2, 3, 0.25), (P + 3, 3, 0.75)], [0, 0, 0, 1], P)
    cover = np.zeros((3, 2, P))  # (S, F, P)
    cover[0, :, 0] = 1.0  # object 0 fills position 0 in both frames: the cluster row, placed at frame 0
    cover[1, 1, 2] = 1.0  # object 1 fills (t1, p2): a quarter of row 3
    cover[2, 1, 3] = 0.8  # object 2 fills 80% of (t1, p3): 0.6 of row 3
    assert probe.shown_frames(plan, cover, 0.5) == [{0}, set(), {1}]
    assert probe.shown_frames(plan, cover, 0.25) == [{0}, {1}, {1}]
    assert probe.shown_frames(plan, cover, 0.61) == [{0}, set(), set()]


def test_vanilla_plan_shows_an_object_where_a_patch_is_mostly_its(probe):
    from holitom.merge import plan_outer_merge
    from holitom.merge.config import MergeConfig

    rng = np.random.default_rng(0)
    F, grid = 3, (2, 3)
    P = grid[0] * grid[1]
    plan = plan_outer_merge(torch.randn(F, P, 8), torch.rand(F, P), MergeConfig(), grid, "llava_video")  # newline rows too
    cover = rng.random((4, F, P)) ** 3  # (S, F, P)
    want = [{t for t in range(F) if (cover[s, t] >= 0.5).any()} for s in range(4)]
    assert probe.shown_frames(plan, cover, 0.5) == want
    assert any(want) and not all(len(w) == F for w in want)  # the check sees both cases


def test_a_competitors_selection_plan_shows_what_it_keeps(probe):
    from holitom.merge.baselines import plan_evs

    rng = np.random.default_rng(1)
    F, grid = 4, (3, 3)
    P = grid[0] * grid[1]
    plan = plan_evs(torch.randn(F, P, 8), None, 0.5, grid)  # frame 0 whole, the 9 least similar later tokens
    cover = rng.random((3, F, P)) ** 2  # (S, F, P)
    kept = np.zeros((F, P), dtype=bool)
    kept.flat[plan.src_index.numpy()] = True  # a selection: one edge of weight 1 per kept input token
    want = [{t for t in range(F) if (kept[t] & (cover[s, t] >= 0.5)).any()} for s in range(3)]
    assert probe.shown_frames(plan, cover, 0.5) == want
    assert kept[0].all() and kept[1:].sum() == plan.num_out - P  # EVS: frame 0 whole, the rest ranked
    assert any(len(w) > 1 for w in want) and any(len(w) < F for w in want)  # the check sees both cases


def test_runs_on_the_default_model_and_refuses_bad_flags(probe, capsys):
    from holitom.default_model import default_model_dir

    model = str(default_model_dir())
    assert probe.main(["--model", model, "--items", "2", "--preset", "r10"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.split()[:1] in (["attribute"], ["motion"])]
    assert [r[:3] for r in rows] == [["attribute", "vanilla", "1"], ["attribute", "r10", "1"], ["motion", "vanilla", "1"], ["motion", "r10", "1"]]
    assert probe.main(["--model", model, "--items", "2", "--preset", "evs-r25"]) == 0  # a competitor's outer step
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in lines if line.split()[:1] == ["motion"]] == [["motion", "vanilla", "1"], ["motion", "evs-r25", "1"]]
    assert probe.main(["--model", model, "--types", "colour"]) == 2
    assert "unknown question types ['colour']" in capsys.readouterr().err
    assert probe.main(["--model", model, "--share", "0"]) == 2
    assert probe.main(["--model", model, "--preset", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert probe.main(["--model", model, "--items", "0"]) == 2
    assert probe.main(["--model", model, "--split", "dev"]) == 2
    assert probe.main(["--model", str(default_model_dir().parent / "missing")]) == 2
    assert all(line.startswith("probe_merge_objects: error: ") for line in capsys.readouterr().err.splitlines())
