"""The order in which `holitom bench` runs its rows (holitom.bench.runner.run_schedule): rotated repeats, and no
measured run right after another backend's run."""

from __future__ import annotations

from collections import Counter

import pytest

from holitom.bench.runner import run_schedule

BACKENDS = ["transformers", "torch", "torch", "onnxruntime", "onnxruntime"]


@pytest.mark.parametrize("after", [None, 4, 1])
def test_a_measured_run_follows_a_run_of_its_own_backend(after):
    runs = run_schedule(BACKENDS, 5, after=after)
    previous = after
    for rep, index, measured in runs:
        if measured and previous is not None:
            assert BACKENDS[previous] == BACKENDS[index], (rep, index)
        if not measured:  # a settling run only where the backend changes, and its own row's measured run follows
            assert previous is not None and BACKENDS[previous] != BACKENDS[index]
        previous = index
    settles = [(rep, index) for rep, index, measured in runs if not measured]
    assert all((rep, index, True) == runs[runs.index((rep, index, False)) + 1] for rep, index in settles)


def test_every_row_is_measured_once_per_repeat_in_rotated_order():
    runs = run_schedule(BACKENDS, 7, after=len(BACKENDS) - 1)
    measured = [(rep, index) for rep, index, m in runs if m]
    assert Counter(index for _, index in measured) == {i: 7 for i in range(len(BACKENDS))}
    for rep in range(7):
        order = [index for r, index in measured if r == rep]
        assert order == [(rep + k) % len(BACKENDS) for k in range(len(BACKENDS))]


def test_one_backend_needs_no_settling_run():
    assert all(measured for _, _, measured in run_schedule(["onnxruntime"] * 3, 4, after=2))
    # repeat 0: torch, then onnxruntime after a settling run; repeat 1 (rotated): onnxruntime, then torch after one
    assert [(i, m) for _, i, m in run_schedule(["torch", "onnxruntime"], 2)] == [(0, True), (1, False), (1, True), (1, True), (0, False), (0, True)]
