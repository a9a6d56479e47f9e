"""A sampled video clip, and the conversion of in-memory frames into one.

Everything downstream (preprocessing, the HoliTom stages) takes frames in ONE
canonical form: a C-contiguous ``np.uint8`` array of shape ``(F, H, W, 3)`` in
RGB order. Files reach it through :func:`holitom.video.read_video`; frames a
program already holds (a camera pipeline, another decoder, a tensor on the GPU)
reach it through :func:`as_rgb_frames` / :func:`clip_from_frames`, so no file
is ever needed.

torch is never imported here: a torch tensor can only be passed in if the
caller has imported torch already, so we look it up in ``sys.modules``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from holitom.errors import InputError
from holitom.video.sampling import _sample, check_num_frames

_FIX_LAYOUT = "pass frames as (F, H, W, 3) RGB uint8, e.g. np.stack(list_of_rgb_images)"


@dataclass(frozen=True, eq=False)
class VideoClip:
    """Frames sampled from a video, with where they came from.

    Attributes:
        frames: ``np.uint8`` array ``(F, H, W, 3)``, RGB, C-contiguous.
        indices: ``np.int64`` array ``(F,)``: index of each frame in the source
            (0-based, presentation order). May repeat (see
            :func:`holitom.video.sample_frame_indices`).
        fps: frames per second of the source, or None when unknown (in-memory
            frames given without a rate).
        total_frames: number of frames in the source.
        duration_s: duration of the source in seconds, or None when unknown.
        source: the file path, or None for in-memory frames (used in messages).
    """

    frames: np.ndarray = field(repr=False)
    indices: np.ndarray = field(repr=False)
    fps: float | None
    total_frames: int
    duration_s: float | None
    source: str | None = None

    def __post_init__(self) -> None:
        f = self.frames
        if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
            got = f"{type(f).__name__} {getattr(f, 'dtype', '')} {tuple(getattr(f, 'shape', ()))}"
            raise InputError(f"VideoClip.frames must be a uint8 array (F, H, W, 3), got {got}; {_FIX_LAYOUT}.")
        idx = self.indices
        if not isinstance(idx, np.ndarray) or idx.dtype != np.int64 or idx.shape != (f.shape[0],):
            raise InputError(
                f"VideoClip.indices must be an int64 array of shape ({f.shape[0]},) (one index per frame), "
                f"got {getattr(idx, 'dtype', type(idx).__name__)} {tuple(getattr(idx, 'shape', ()))}."
            )
        if self.total_frames < 1 or (idx.size and (idx.min() < 0 or idx.max() >= self.total_frames)):
            raise InputError(
                f"VideoClip.indices must lie in [0, total_frames={self.total_frames}), "
                f"got range [{idx.min() if idx.size else '-'}, {idx.max() if idx.size else '-'}]."
            )
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise InputError(f"VideoClip.fps must be a positive number or None, got {self.fps!r}.")

    def __repr__(self) -> str:
        # The default repr would print every pixel.
        return (
            f"VideoClip(frames=<{self.num_frames}x{self.height}x{self.width}x3 uint8>, indices={self.indices.tolist()}, "
            f"fps={self.fps}, total_frames={self.total_frames}, duration_s={self.duration_s}, source={self.source!r})"
        )

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def timestamps_s(self) -> np.ndarray | None:
        """Time of each sampled frame in seconds (``indices / fps``), or None if fps is unknown.

        LLaVA-Video states these times in its prompt.
        """
        if self.fps is None:
            return None
        return self.indices.astype(np.float64) / self.fps


def _torch_tensor_to_numpy(x) -> np.ndarray:
    # Half / bfloat16 tensors have no numpy twin: widen to float32 first.
    if x.is_floating_point():
        x = x.detach().float()
    return x.detach().cpu().numpy()


def _to_numpy(frames) -> np.ndarray:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(frames, torch.Tensor):
        return _torch_tensor_to_numpy(frames)
    if isinstance(frames, np.ndarray):
        return frames
    if isinstance(frames, Sequence) and not isinstance(frames, (str, bytes)):
        if len(frames) == 0:
            raise InputError(f"got an empty list of frames; {_FIX_LAYOUT}.")
        items = [_to_numpy(f) for f in frames]
        shapes = {(a.shape, a.dtype.str) for a in items}
        if len(shapes) != 1:
            raise InputError(
                f"the frames in the list differ in shape or dtype ({sorted(shapes)[:3]}...); "
                "resize them to one size and dtype before passing them."
            )
        if items[0].ndim != 3:
            raise InputError(f"each frame in a list must be (H, W, 3) or (3, H, W), got shape {items[0].shape}; {_FIX_LAYOUT}.")
        return np.stack(items)
    raise InputError(f"frames must be a numpy array, a torch tensor or a list of frames, got {type(frames).__name__}; {_FIX_LAYOUT}.")


def as_rgb_frames(frames) -> np.ndarray:
    """Validate in-memory frames and return them as C-contiguous uint8 ``(F, H, W, 3)`` RGB.

    Accepted inputs (numpy arrays, torch tensors on any device, or a list of
    per-frame arrays/tensors that are stacked):

    - layout ``(F, H, W, 3)`` (channels last) or ``(F, 3, H, W)`` (channels
      first, the usual torch layout). A shape where both readings are possible
      (``(F, 3, H, 3)``) is refused, since a wrong guess would silently
      transpose the picture.
    - dtype ``uint8`` (0..255), or floating point with values in [0, 1]. Float
      frames are quantised with ``round(x * 255)``: the reference processor and
      the model work on 8-bit frames, so this keeps one numeric path (and exact
      parity with transformers' processor, which is fed uint8).

    Channels must be RGB (3). The function does not reorder BGR (OpenCV) input:
    convert it first with ``frames[..., ::-1]``.

    Raises:
        InputError: wrong type, rank, channel count, dtype, empty dimensions,
            or float values outside [0, 1] / not finite.
    """
    arr = _to_numpy(frames)
    if arr.ndim != 4:
        raise InputError(f"frames must have 4 dimensions (F, H, W, 3) or (F, 3, H, W), got shape {arr.shape}; {_FIX_LAYOUT}.")
    last, second = arr.shape[3] == 3, arr.shape[1] == 3
    if last and second:
        raise InputError(
            f"cannot tell whether frames of shape {arr.shape} are (F, H, W, 3) or (F, 3, H, W); "
            "frames 3 pixels wide or tall are not supported."
        )
    if not last and not second:
        hint = ""
        if arr.shape[3] in (1, 4) or arr.shape[1] in (1, 4):
            hint = " for grayscale repeat the channel (np.repeat(x, 3, axis=-1)), for RGBA drop alpha (x[..., :3]);"
        raise InputError(f"frames must have 3 (RGB) channels, got shape {arr.shape};{hint} {_FIX_LAYOUT}.")
    if second:
        arr = arr.transpose(0, 2, 3, 1)
    if min(arr.shape[:3]) == 0:
        raise InputError(f"frames must be non-empty, got (F, H, W, 3) = {arr.shape}; pass at least one frame of at least 1x1 pixels.")

    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InputError("float frames contain NaN or infinity; float frames must hold finite values in [0, 1].")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(
                f"float frames must have values in [0, 1], got range [{lo:.4g}, {hi:.4g}]; "
                "divide 0..255 data by 255 or pass it as uint8 (np.clip(x, 0, 1) if it only overshoots slightly)."
            )
        return np.ascontiguousarray(np.rint(arr.astype(np.float32) * 255.0).astype(np.uint8))
    raise InputError(
        f"frames must be uint8 (0..255) or float in [0, 1], got dtype {arr.dtype}; "
        "convert with x.astype(np.uint8) if the values are already 0..255."
    )


def clip_from_frames(frames, num_frames: int | None = None, fps: float | None = None) -> VideoClip:
    """Make a :class:`VideoClip` from frames held in memory (no file involved).

    Args:
        frames: see :func:`as_rgb_frames` for the accepted types and layouts.
        num_frames: if given, sample this many frames with the same rule (and
            the same frame-shortage policy) as :func:`holitom.video.read_video`;
            if None, keep every frame given, in order.
        fps: frame rate of the given frames, if known (used for
            ``duration_s`` and ``timestamps_s``).
    """
    if num_frames is not None:
        num_frames = check_num_frames(num_frames)
    if fps is not None and not (isinstance(fps, (int, float)) and not isinstance(fps, bool) and math.isfinite(fps) and fps > 0):
        raise InputError(f"fps must be a positive number or None, got {fps!r}.")
    rgb = as_rgb_frames(frames)  # (T, H, W, 3)
    total = rgb.shape[0]
    if num_frames is None:
        indices = np.arange(total, dtype=np.int64)
        sampled = rgb
    else:
        indices = _sample(total, num_frames, warn_stacklevel=3)
        sampled = np.ascontiguousarray(rgb[indices])  # (F, H, W, 3)
    fps_f = None if fps is None else float(fps)
    duration = None if fps_f is None else total / fps_f
    return VideoClip(frames=sampled, indices=indices, fps=fps_f, total_frames=total, duration_s=duration, source=None)


__all__ = ["VideoClip", "as_rgb_frames", "clip_from_frames"]
