"""Generated clips: deterministic, with a static background, moving shapes and a scene cut."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from holitom.errors import InputError
from holitom.video import make_frames, read_video, write_video


def _changed_fraction(a: np.ndarray, b: np.ndarray) -> float:
    return float((a != b).any(axis=-1).mean())


def test_shape_dtype_and_determinism():
    a = make_frames(6, 50, 70, seed=3)
    assert a.shape == (6, 50, 70, 3) and a.dtype == np.uint8 and a.flags.c_contiguous
    np.testing.assert_array_equal(a, make_frames(6, 50, 70, seed=3))
    assert not np.array_equal(a, make_frames(6, 50, 70, seed=4))


def test_static_background_and_moving_shapes():
    f = make_frames(12, 120, 160, seed=0)
    changed = [_changed_fraction(f[t], f[t + 1]) for t in range(11)]
    # Most of the picture is a static background, yet something moves every frame.
    assert max(changed) < 0.25, changed
    assert min(changed) > 0.005, changed
    # The background is textured, not flat (the vision tower must see structure).
    assert f[0].reshape(-1, 3).std(axis=0).min() > 20


def test_scene_cut():
    f = make_frames(10, 64, 96, seed=1, scene_cut_at=6)
    assert _changed_fraction(f[5], f[6]) > 0.8  # new background at the cut
    assert all(_changed_fraction(f[t], f[t + 1]) < 0.3 for t in (0, 1, 2, 3, 4, 6, 7, 8))
    # Adding a cut leaves the first scene as it was.
    np.testing.assert_array_equal(f[:6], make_frames(6, 64, 96, seed=1))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_frames=0, height=32, width=32), "num_frames"),
        (dict(num_frames=2, height=4, width=32), "at least 8"),
        (dict(num_frames=2, height=32, width=32, seed=-1), "seed"),
        (dict(num_frames=4, height=32, width=32, scene_cut_at=0), "scene_cut_at"),
        (dict(num_frames=4, height=32, width=32, scene_cut_at=4), "scene_cut_at"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(InputError, match=match):
        make_frames(**kwargs)


@pytest.mark.parametrize("suffix", ["mkv", "mp4"])
def test_lossless_write_roundtrips_exactly(tmp_path, suffix):
    f = make_frames(5, 40, 56, seed=2)
    path = write_video(tmp_path / f"x.{suffix}", f, fps=10, lossless=True)
    clip = read_video(path, 5)
    np.testing.assert_array_equal(clip.frames, f)


def test_odd_sized_frames_are_written(tmp_path):
    f = make_frames(4, 37, 51, seed=5)
    clip = read_video(write_video(tmp_path / "odd.mp4", f, fps=8), 4)
    assert clip.frames.shape == f.shape
    assert np.abs(clip.frames.astype(np.int16) - f).mean() < 6


def test_write_errors(tmp_path):
    f = make_frames(2, 16, 16, seed=0)
    with pytest.raises(InputError, match="fps"):
        write_video(tmp_path / "a.mp4", f, fps=0)
    with pytest.raises(InputError, match="does not exist"):
        write_video(tmp_path / "missing_dir" / "a.mp4", f)
    with pytest.raises(InputError, match="suffix"):
        write_video(tmp_path / "a.notacontainer", f)
    with pytest.raises(InputError, match="channels"):
        write_video(tmp_path / "a.mp4", f[..., :2])


_ENCODE_IN_CHILD = """
import os, sys
from holitom.video import make_frames, write_video
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one CPU: libx264's automatic thread count would change
write_video(sys.argv[1], make_frames(16, 160, 160, seed=1), fps=8)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="poisons fresh heap memory through glibc's MALLOC_PERTURB_")
def test_lossy_file_does_not_depend_on_heap_contents_or_cpu_count(tmp_path):
    """The same frames give the same H.264 bytes in a process whose fresh heap memory is poisoned and that may use
    one CPU. Before libx264 ran on one thread without mb-tree, on an AVX-512 CPU (this project's CI machine) its
    bitstream changed with the garbage it read (MALLOC_PERTURB_=1), which once flipped a test's greedy answer."""
    mine = write_video(tmp_path / "here.mp4", make_frames(16, 160, 160, seed=1), fps=8).read_bytes()
    for perturb in ("1", "165"):
        # A threshold at glibc's maximum keeps large buffers on the (poisoned) heap instead of fresh zeroed pages.
        env = {**os.environ, "MALLOC_PERTURB_": perturb, "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20)}
        path = tmp_path / f"child{perturb}.mp4"
        subprocess.run([sys.executable, "-c", _ENCODE_IN_CHILD, str(path)], env=env, check=True)
        assert path.read_bytes() == mine, f"MALLOC_PERTURB_={perturb}"
