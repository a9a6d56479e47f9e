"""The LLaVA-OneVision frame sampling rule and its edge cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from holitom.errors import InputError, VideoError
from holitom.video import FrameShortageWarning, sample_frame_indices


@pytest.mark.parametrize("total", [1, 2, 7, 32, 33, 100, 901, 10_000])
@pytest.mark.parametrize("num", [1, 2, 8, 32])
def test_matches_llava_onevision_rule(total, num):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FrameShortageWarning)
        idx = sample_frame_indices(total, num)
    # LLaVA-NeXT's load_video: np.linspace(0, total - 1, num, dtype=int)
    expected = np.linspace(0, total - 1, num, dtype=int)
    assert idx.dtype == np.int64 and idx.shape == (num,)
    np.testing.assert_array_equal(idx, expected)
    assert idx[0] == 0 and np.all(np.diff(idx) >= 0)
    if num >= 2:
        assert idx[-1] == total - 1  # the whole clip, last frame included


def test_hand_worked_values():
    np.testing.assert_array_equal(sample_frame_indices(10, 4), [0, 3, 6, 9])
    np.testing.assert_array_equal(sample_frame_indices(100, 8), [0, 14, 28, 42, 56, 70, 84, 99])
    np.testing.assert_array_equal(sample_frame_indices(5, 1), [0])


def test_no_warning_when_enough_frames():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sample_frame_indices(8, 8)
        sample_frame_indices(9, 8)


def test_shortage_repeats_frames_and_warns():
    with pytest.warns(FrameShortageWarning, match=r"has 3 frames but 5 were requested.*num_frames <= 3") as record:
        idx = sample_frame_indices(3, 5)
    np.testing.assert_array_equal(idx, [0, 0, 1, 1, 2])
    # The warning points at the caller, not at holitom's internals.
    assert record[0].filename == __file__


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8", None])
def test_bad_num_frames_is_input_error(bad):
    with pytest.raises(InputError, match="num_frames"):
        sample_frame_indices(10, bad)


def test_empty_video_is_video_error():
    with pytest.raises(VideoError, match="no frames"):
        sample_frame_indices(0, 4)


@pytest.mark.parametrize("bad", [-1, 3.0, "10"])
def test_bad_total_is_input_error(bad):
    with pytest.raises(InputError, match="total_frames"):
        sample_frame_indices(bad, 4)


def test_numpy_integers_accepted():
    np.testing.assert_array_equal(sample_frame_indices(np.int64(10), np.int32(4)), [0, 3, 6, 9])
