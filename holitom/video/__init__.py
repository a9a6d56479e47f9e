"""Video input: decoding with PyAV, uniform frame sampling, preprocessing identical to transformers' LLaVA-OneVision processor.

Typical use::

    from holitom.video import VideoPreprocessor, read_video

    clip = read_video("clip.mp4", num_frames=32)          # VideoClip, frames (32, H, W, 3) uint8
    pixel_values = VideoPreprocessor.from_pretrained(ckpt)(clip)  # (32, 3, 384, 384) float32

Frames already in memory (camera, another decoder) skip the file::

    clip = clip_from_frames(frames, num_frames=32)  # numpy / torch, uint8 or float in [0, 1]

``import holitom.video`` needs numpy only; PyAV loads on the first decode and
torch on first use of :class:`VideoPreprocessor` (attribute access below).
:class:`NumpyVideoPreprocessor` gives the same ``pixel_values`` (as numpy) without
torch: the edge runtime's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from holitom.video.clip import VideoClip, as_rgb_frames, clip_from_frames
from holitom.video.preprocess_np import NumpyVideoPreprocessor
from holitom.video.reader import FrameCountWarning, read_video
from holitom.video.sampling import FrameShortageWarning, sample_frame_indices
from holitom.video.synthetic import make_frames, write_video

if TYPE_CHECKING:
    from holitom.video.preprocess import PreprocessorConfigWarning, VideoPreprocessConfig, VideoPreprocessor

_LAZY = {"VideoPreprocessor", "VideoPreprocessConfig", "PreprocessorConfigWarning"}


def __getattr__(name: str) -> Any:
    # preprocess imports torch (~1 s); keep it out of `import holitom.video`.
    if name in _LAZY:
        from holitom.video import preprocess

        return getattr(preprocess, name)
    raise AttributeError(f"module 'holitom.video' has no attribute '{name}'")


__all__ = [
    "FrameCountWarning",
    "FrameShortageWarning",
    "NumpyVideoPreprocessor",
    "PreprocessorConfigWarning",
    "VideoClip",
    "VideoPreprocessConfig",
    "VideoPreprocessor",
    "as_rgb_frames",
    "clip_from_frames",
    "make_frames",
    "read_video",
    "sample_frame_indices",
    "write_video",
]
