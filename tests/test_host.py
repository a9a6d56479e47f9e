"""holitom.host.usable_cpus: the process's affinity mask where the platform has one, else every CPU."""

from __future__ import annotations

import os

from holitom import host


def test_usable_cpus_is_the_affinity_mask_else_the_cpu_count(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert host.usable_cpus() == host.cpu_affinity() == 3  # e.g. under taskset -c 0,3,5 on an 8-CPU machine
    monkeypatch.delattr(os, "sched_getaffinity")  # macOS has none
    assert host.cpu_affinity() is None  # what the bench reports: no mask, not a guess
    assert host.usable_cpus() == 8
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # undeterminable
    assert host.usable_cpus() == 1


def test_the_preprocessor_shares_frames_among_the_usable_cpus(monkeypatch):
    from holitom.video.preprocess_np import NumpyVideoPreprocessor

    monkeypatch.setattr("holitom.video.preprocess_np.usable_cpus", lambda: 5)  # the one definition, not a copy of it
    assert NumpyVideoPreprocessor().threads == 5 and NumpyVideoPreprocessor(threads=2).threads == 2
