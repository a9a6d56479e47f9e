"""Decode a video file with PyAV and sample frames the way LLaVA-OneVision does.

Decoding strategy: one sequential pass over the first video stream. Only the
sampled frames are converted to RGB (the conversion, not the decoding, is the
expensive per-frame step for a few sampled frames), and decoding stops at the
last sampled frame. Seeking is not used: keyframe seeking lands on the keyframe
before a target, mapping a frame INDEX to a timestamp needs a constant frame
rate, and a wrong guess would silently shift frames. For the LLaVA rule the last
sampled frame is the last frame, so the whole stream is decoded once.

Frame count: the container's count (``stream.frames``, e.g. mp4's sample table)
when it has one; otherwise (Matroska/WebM and others) the video packets are
counted by demuxing without decoding, which is cheap and exact for codecs that
put one frame per packet (all modern ones). The count is checked against what
decodes; see :func:`read_video` for what happens when they disagree.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from holitom.errors import InputError, VideoError
from holitom.video.clip import VideoClip
from holitom.video.sampling import _sample, check_num_frames

_REENCODE = "re-encode it, e.g. `ffmpeg -i INPUT -c:v libx264 -pix_fmt yuv420p OUTPUT.mp4`"

# FFmpeg demuxers for single still images. A PNG or JPEG opens as a one-frame
# "video"; we refuse it because LLaVA-OneVision treats images differently
# (AnyRes tiling, 729+ tokens), and a user passing one almost certainly meant a
# video. Animated formats (gif, apng, webp animations) are accepted.
_IMAGE_DEMUXERS = frozenset({"image2", "image2pipe"})


class FrameCountWarning(UserWarning):
    """The container declared more frames than could be decoded; sampling used the decodable ones."""


def _is_still_image_format(format_name: str) -> bool:
    names = set(format_name.split(","))
    return bool(names & _IMAGE_DEMUXERS) or any(n.endswith("_pipe") for n in names)


def _check_path(path: str | os.PathLike) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"path must be a str or os.PathLike, got {type(path).__name__}; to pass frames in memory use clip_from_frames().")
    from holitom.paths import existing_path

    p = existing_path(path, "video file", "file", VideoError)
    if p.stat().st_size == 0:
        raise VideoError(f"video file '{p}' is empty (0 bytes); it was not written completely: copy, download or export it again.")
    return p


def _open(p: Path):
    import av  # lazy: PyAV loads FFmpeg's shared libraries

    try:
        return av.open(str(p), mode="r")
    except av.error.FFmpegError as exc:
        raise VideoError(
            f"'{p}' is not a readable video: FFmpeg could not open it ({exc.strerror or exc}). "
            f"It is truncated, corrupt or not a video file; if it plays elsewhere, {_REENCODE}."
        ) from exc


def _video_stream(container, p: Path):
    if _is_still_image_format(container.format.name):
        raise VideoError(
            f"'{p}' is a still image (FFmpeg format '{container.format.name}'), not a video; "
            "pass a video file, or load the image yourself and pass frames in memory with clip_from_frames()."
        )
    if not container.streams.video:
        kinds = ", ".join(s.type for s in container.streams) or "none"
        raise VideoError(f"'{p}' has no video stream (its streams: {kinds}); pass a file that contains video.")
    # FFmpeg's own choice of "the" video stream (largest resolution / default flag).
    return container.streams.best("video")


def _stream_fps(stream) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return float(rate)
    return None


def _declared_duration_s(container, stream) -> float | None:
    """Duration the file claims for the video stream (from headers, not from decoding)."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    # The container's duration covers all streams; it stands for the video
    # only when the video is the sole stream.
    if container.duration is not None and container.duration > 0 and len(container.streams) == 1:
        return container.duration / 1_000_000  # AV_TIME_BASE is microseconds
    return None


def _count_packets(p: Path, stream_index: int) -> tuple[int, float | None]:
    """Count a stream's frames by demuxing (no decoding). Returns (count, end time in s or None)."""
    import av

    count, end = 0, None
    with _open(p) as container:
        stream = container.streams[stream_index]
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # the flush packet PyAV yields at the end
                    continue
                count += 1
                if packet.pts is not None and packet.time_base is not None:
                    t = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                    end = t if end is None else max(end, t)
        except av.error.FFmpegError as exc:
            raise VideoError(f"'{p}' is truncated or corrupt: demuxing failed after {count} frames ({exc}); {_REENCODE}.") from exc
    return count, end


def _truncation_tolerance_s(fps: float | None) -> float:
    # Muxers round durations and B-frame reordering shifts the last pts by a
    # frame or two; anything beyond that is missing data.
    return 0.5 if fps is None else max(2.5 / fps, 0.1)


def _decode(p: Path, stream_index: int, wanted: np.ndarray) -> tuple[dict[int, np.ndarray], int, float | None]:
    """Decode frames in order and keep the RGB images of the ``wanted`` indices.

    Returns (index -> (H, W, 3) uint8, number of frames decoded, end time of the
    last decoded frame in seconds or None). Stops after the largest wanted index.
    """
    import av

    wanted_set = set(int(i) for i in wanted)
    last = int(wanted.max())
    kept: dict[int, np.ndarray] = {}
    decoded, end = 0, None
    with _open(p) as container:
        stream = container.streams[stream_index]
        stream.thread_type = "AUTO"  # frame + slice threads; decoding is the bulk of the work
        try:
            for frame in container.decode(stream):
                i = decoded
                decoded += 1
                if frame.pts is not None and frame.time_base is not None:
                    # VideoFrame.duration appeared in PyAV 13; without it the end is the last pts.
                    end = float((frame.pts + (getattr(frame, "duration", None) or 0)) * frame.time_base)
                if i in wanted_set:
                    kept[i] = frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8
                if i >= last:
                    break
        except av.error.FFmpegError as exc:
            raise VideoError(
                f"'{p}' is truncated or corrupt: decoding failed after {decoded} frames ({exc.strerror or exc}); "
                f"download or export it again, or {_REENCODE}."
            ) from exc
    return kept, decoded, end


def read_video(path: str | os.PathLike, num_frames: int) -> VideoClip:
    """Decode ``num_frames`` frames sampled uniformly over a whole video file.

    Sampling follows :func:`holitom.video.sample_frame_indices` (LLaVA-OneVision:
    first to last frame, ``linspace`` floored). A video shorter than
    ``num_frames`` frames yields repeated frames and a
    :class:`~holitom.video.FrameShortageWarning`.

    When the container declares more frames than can be decoded (an mp4 whose
    sample table overstates the stream), the frames are sampled again over the
    decodable ones with a :class:`FrameCountWarning`, unless the decodable part
    ends well before the declared duration: that is a truncated file and raises
    :class:`VideoError`.

    Args:
        path: the video file (anything FFmpeg reads: mp4, mkv, webm, avi, mov, gif...).
        num_frames: how many frames to return (>= 1).

    Returns:
        :class:`VideoClip` with ``frames`` uint8 ``(num_frames, H, W, 3)`` RGB.

    Raises:
        InputError: ``num_frames`` is not a positive integer, or ``path`` is not a path.
        VideoError: the file is missing, a directory, empty, not a video
            (text, still image, audio only), truncated or corrupt, or changes
            resolution mid-stream.
    """
    num_frames = check_num_frames(num_frames)
    p = _check_path(path)

    with _open(p) as container:
        stream = _video_stream(container, p)
        stream_index = stream.index
        fps = _stream_fps(stream)
        declared_frames = stream.frames if stream.frames and stream.frames > 0 else None
        declared_duration = _declared_duration_s(container, stream)

    if declared_frames is None:
        total, end = _count_packets(p, stream_index)
    else:
        total, end = declared_frames, None
    if total == 0:
        raise VideoError(f"'{p}' has a video stream but no frames in it; it is empty or truncated: {_REENCODE}.")

    def truncated(end_s: float | None) -> bool:
        return end_s is not None and declared_duration is not None and end_s < declared_duration - _truncation_tolerance_s(fps)

    if truncated(end):
        raise VideoError(
            f"'{p}' is truncated: its header declares {declared_duration:.2f} s of video but the frames end at "
            f"{end:.2f} s ({total} frames); download or export it again, or {_REENCODE}."
        )

    indices = _sample(total, num_frames, warn_stacklevel=3)  # warning points at the caller of read_video
    kept, decoded, end = _decode(p, stream_index, indices)
    if decoded <= int(indices.max()):
        # Fewer decodable frames than declared. Either data is missing (refuse)
        # or the header count is off (sample again over what decodes).
        if decoded == 0:
            raise VideoError(f"'{p}' has a video stream but no decodable frames; it is corrupt: {_REENCODE}.")
        if truncated(end):
            raise VideoError(
                f"'{p}' is truncated: its header declares {total} frames ({declared_duration:.2f} s) but only "
                f"{decoded} decode, ending at {end:.2f} s; download or export it again, or {_REENCODE}."
            )
        warnings.warn(
            f"'{p}' declares {total} frames but only {decoded} decode; sampling over the {decoded} decodable frames.",
            FrameCountWarning,
            stacklevel=2,
        )
        total = decoded
        indices = _sample(total, num_frames, warn_stacklevel=3)
        kept, decoded, end = _decode(p, stream_index, indices)

    shapes = {a.shape for a in kept.values()}
    if len(shapes) != 1:
        raise VideoError(
            f"'{p}' changes resolution mid-stream (frame sizes {sorted(shapes)}); re-encode it at one size, "
            "e.g. `ffmpeg -i INPUT -vf scale=W:H -c:v libx264 -pix_fmt yuv420p OUTPUT.mp4`."
        )
    frames = np.stack([kept[int(i)] for i in indices])  # (F, H, W, 3); repeated indices share a source frame
    if declared_duration is not None:
        duration = declared_duration
    elif fps is not None:
        duration = total / fps
    else:
        duration = None
    if duration is not None and not math.isfinite(duration):
        duration = None
    return VideoClip(frames=frames, indices=indices, fps=fps, total_frames=int(total), duration_s=duration, source=str(p))


__all__ = ["FrameCountWarning", "read_video"]
