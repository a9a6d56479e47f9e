"""Frames already in memory: numpy / torch, uint8 / float, both layouts, validated."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from holitom.errors import InputError
from holitom.video import FrameShortageWarning, VideoClip, as_rgb_frames, clip_from_frames, make_frames


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return make_frames(6, 24, 40, seed=11)  # (6, 24, 40, 3)


def test_numpy_uint8_passes_through(frames):
    out = as_rgb_frames(frames)
    np.testing.assert_array_equal(out, frames)
    assert out.dtype == np.uint8 and out.flags.c_contiguous


def test_channels_first_and_non_contiguous(frames):
    chw = np.ascontiguousarray(frames.transpose(0, 3, 1, 2))  # (F, 3, H, W)
    np.testing.assert_array_equal(as_rgb_frames(chw), frames)
    view = np.ascontiguousarray(frames[:, ::-1])[:, ::-1]  # negative strides
    np.testing.assert_array_equal(as_rgb_frames(view), frames)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_torch_float_in_unit_range_quantises_back(frames, dtype):
    t = torch.from_numpy(frames).permute(0, 3, 1, 2).to(dtype) / 255  # (F, 3, H, W) in [0, 1]
    out = as_rgb_frames(t)
    if dtype == torch.bfloat16:
        # bfloat16 keeps 8 significant bits: k / 255 is off by up to ~1 level.
        assert np.abs(out.astype(np.int16) - frames).max() <= 1
    else:
        np.testing.assert_array_equal(out, frames)


def test_torch_uint8_both_layouts(frames):
    t = torch.from_numpy(frames)
    np.testing.assert_array_equal(as_rgb_frames(t), frames)
    np.testing.assert_array_equal(as_rgb_frames(t.permute(0, 3, 1, 2)), frames)


def test_list_of_frames(frames):
    np.testing.assert_array_equal(as_rgb_frames(list(frames)), frames)
    np.testing.assert_array_equal(as_rgb_frames([torch.from_numpy(f) for f in frames]), frames)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((24, 40, 3), np.uint8), "4 dimensions"),
        (np.zeros((2, 24, 40, 4), np.uint8), "RGBA drop alpha"),
        (np.zeros((2, 24, 40, 1), np.uint8), "grayscale"),
        (np.zeros((2, 3, 24, 3), np.uint8), "cannot tell"),
        (np.zeros((2, 24, 40, 3), np.int64), "dtype int64"),
        (np.full((2, 24, 40, 3), 1.5, np.float32), r"\[0, 1\]"),
        (np.full((2, 24, 40, 3), np.nan, np.float32), "NaN"),
        (np.zeros((0, 24, 40, 3), np.uint8), "non-empty"),
        ("frames.mp4", "numpy array"),
        ([], "empty list"),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)], "differ in shape"),
    ],
)
def test_bad_frames_are_input_errors(bad, match):
    with pytest.raises(InputError, match=match):
        as_rgb_frames(bad)


def test_clip_from_frames_keeps_all_by_default(frames):
    clip = clip_from_frames(frames, fps=4)
    assert isinstance(clip, VideoClip)
    np.testing.assert_array_equal(clip.frames, frames)
    np.testing.assert_array_equal(clip.indices, np.arange(6))
    assert clip.total_frames == 6 and clip.fps == 4.0 and clip.duration_s == 1.5
    np.testing.assert_allclose(clip.timestamps_s, np.arange(6) / 4)


def test_clip_from_frames_samples_like_files(frames):
    clip = clip_from_frames(torch.from_numpy(frames), num_frames=3)
    np.testing.assert_array_equal(clip.indices, [0, 2, 5])
    np.testing.assert_array_equal(clip.frames, frames[[0, 2, 5]])
    assert clip.fps is None and clip.duration_s is None and clip.timestamps_s is None
    with pytest.warns(FrameShortageWarning):
        short = clip_from_frames(frames[:2], num_frames=4)
    np.testing.assert_array_equal(short.indices, [0, 0, 0, 1])


def test_clip_from_frames_bad_arguments(frames):
    with pytest.raises(InputError, match="num_frames"):
        clip_from_frames(frames, num_frames=0)
    with pytest.raises(InputError, match="fps"):
        clip_from_frames(frames, fps=-1)


def test_video_clip_validates_its_fields(frames):
    idx = np.arange(6, dtype=np.int64)
    with pytest.raises(InputError, match="uint8"):
        VideoClip(frames=frames.astype(np.float32), indices=idx, fps=None, total_frames=6, duration_s=None)
    with pytest.raises(InputError, match="int64"):
        VideoClip(frames=frames, indices=idx[:5], fps=None, total_frames=6, duration_s=None)
    with pytest.raises(InputError, match="total_frames"):
        VideoClip(frames=frames, indices=idx, fps=None, total_frames=5, duration_s=None)
