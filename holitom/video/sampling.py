"""Which frames of a video the model sees.

LLaVA-OneVision and LLaVA-Video sample a fixed number of frames uniformly over
the WHOLE clip, first and last frame included::

    np.linspace(0, total_frames - 1, num_frames, dtype=int)

(``load_video`` in the LLaVA-NeXT repository). This differs from transformers'
``default_sample_indices_fn`` (``arange(0, total, total / num_frames)``), which
never picks the last frame; we follow the models' own rule because that is what
they were trained and evaluated with.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np

from holitom.errors import InputError, VideoError


class FrameShortageWarning(UserWarning):
    """A video has fewer frames than were requested, so sampled frames repeat."""


def _check_count(value: object, name: str, minimum: int) -> int:
    # bool is an int subclass; True frames is a bug, not a count.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an integer, got {value!r} of type {type(value).__name__}; pass e.g. {name}=32.")
    if value < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {value}; pass e.g. {name}=32.")
    return int(value)


def check_num_frames(num_frames: object) -> int:
    """Validate a requested frame count (a positive integer) and return it as ``int``."""
    return _check_count(num_frames, "num_frames", 1)


def sample_frame_indices(total_frames: int, num_frames: int) -> np.ndarray:
    """Indices of ``num_frames`` frames spread uniformly from the first to the last frame.

    The rule is LLaVA-OneVision's: ``linspace(0, total_frames - 1, num_frames)``
    cast to int (floor), so index 0 and index ``total_frames - 1`` are always
    included (for ``num_frames >= 2``) and the result is non-decreasing.

    Frame shortage policy: when the video has FEWER frames than requested
    (``total_frames < num_frames``), the same rule is applied and it repeats
    frames (e.g. 3 frames, 5 requested -> ``[0, 0, 1, 1, 2]``), and a
    :class:`FrameShortageWarning` is emitted. We sample with repetition rather
    than refuse because that is exactly what LLaVA-OneVision's own loader does
    with short clips, the model always receives the requested number of frames
    (fixed token budget, fixed exported shapes), and HoliTom's temporal merge
    folds the duplicated frames into static tokens anyway. To avoid duplicates,
    request at most ``total_frames`` frames.

    Args:
        total_frames: number of frames in the video (>= 1).
        num_frames: number of frames to sample (>= 1).

    Returns:
        ``np.ndarray`` of dtype int64 and shape ``(num_frames,)``.

    Raises:
        InputError: ``num_frames`` < 1, or either argument is not an integer,
            or ``total_frames`` is negative.
        VideoError: ``total_frames`` is 0 (there is nothing to sample).
    """
    return _sample(total_frames, num_frames, warn_stacklevel=3)


def _sample(total_frames: object, num_frames: object, warn_stacklevel: int) -> np.ndarray:
    """:func:`sample_frame_indices`, with the warning attributed ``warn_stacklevel`` frames up.

    Readers call this so a :class:`FrameShortageWarning` points at the user's
    ``read_video(...)`` line rather than at holitom's internals.
    """
    num_frames = check_num_frames(num_frames)
    total_frames = _check_count(total_frames, "total_frames", 0)
    if total_frames == 0:
        raise VideoError("the video has no frames, so none can be sampled; check that the file or frame batch is not empty.")
    if total_frames < num_frames:
        warnings.warn(
            f"the video has {total_frames} frames but {num_frames} were requested; sampling repeats frames "
            f"(LLaVA-OneVision's rule). Request num_frames <= {total_frames} to avoid duplicates.",
            FrameShortageWarning,
            stacklevel=warn_stacklevel,
        )
    # float64 linspace then floor: identical to np.linspace(..., dtype=int) for
    # these non-negative values, on every numpy version.
    return np.floor(np.linspace(0.0, float(total_frames - 1), num_frames)).astype(np.int64)


__all__ = ["FrameShortageWarning", "check_num_frames", "sample_frame_indices"]
