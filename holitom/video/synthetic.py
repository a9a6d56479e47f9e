"""Deterministic generated video clips, for tests and ``holitom demo``.

No binary fixtures live in git: tests generate what they need. A clip has what
HoliTom reacts to: a static textured background (static tokens, merged over
time), a few shapes moving at constant speed and bouncing off the borders
(dynamic tokens), and optionally a hard scene cut (a temporal segment
boundary). Everything is a pure function of the arguments; the random numbers
come from ``numpy.random.Generator(PCG64(seed))``, whose streams numpy keeps
stable across releases.
"""

from __future__ import annotations

import math
import numbers
import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from holitom.errors import InputError, VideoError
from holitom.video.clip import as_rgb_frames

# (encoder, pixel format for even / odd frame sizes, encoder options), in order
# of preference. PyAV's wheels bundle libx264; FFmpeg builds without GPL parts
# lack it and fall back to the native encoders.
# The same frames must give the same file in every process and on any number of
# CPUs (the benchmark's clips are "deterministic per seed"), so libx264 runs:
# - on one thread: its output depends on the thread count, which it otherwise
#   takes from the machine's CPU count;
# - without macroblock-tree rate control: on AVX-512 CPUs (PyAV 18's x264) it
#   reads memory it never wrote, so the bitstream changed with the process's heap
#   (MALLOC_PERTURB_=1 gave another file; tests/video/test_synthetic.py);
# - at CRF 17, which without mb-tree decodes as close to the frames as CRF 18 did
#   with it (tests/video/test_reader.py's clip: mean error 3.28 vs 3.28 gray
#   levels, 95th percentile 11 vs 11; CRF 18 without mb-tree: 3.34 and 12).
_LOSSY_ENCODERS = (
    ("libx264", ("yuv420p", "yuv444p"), {"crf": "17", "threads": "1", "mbtree": "0"}),
    ("mpeg4", ("yuv420p", None), {"qscale": "2"}),
)
# Lossless RGB: decoded frames equal the written ones bit for bit.
_LOSSLESS_ENCODERS = (
    ("libx264rgb", ("rgb24", "rgb24"), {"qp": "0"}),
    ("ffv1", ("bgr0", "bgr0"), {}),
)

SHAPES = ("circle", "square", "triangle")


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def background_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A static texture: coloured tiles, a gradient and a diagonal grating. (H, W, 3) float32 in 0..255."""
    tile = max(4, min(height, width) // 6)
    rows, cols = -(-height // tile), -(-width // tile)
    tiles = rng.uniform(40.0, 215.0, size=(rows, cols, 3))
    img = np.repeat(np.repeat(tiles, tile, axis=0), tile, axis=1)[:height, :width]  # (H, W, 3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    gradient = (xx / max(width - 1, 1) - 0.5) * 40.0  # (H, W)
    period = rng.uniform(6.0, 14.0)
    grating = 18.0 * np.sin(2.0 * np.pi * (xx + yy) / period)  # (H, W)
    img = img + (gradient + grating)[..., None]
    return np.clip(img, 0.0, 255.0).astype(np.float32)


def shape_mask(kind: str, dy: np.ndarray, dx: np.ndarray, size: float) -> np.ndarray:
    """Pixels covered by a shape whose bounding box of side ``size`` starts at offset 0.

    ``dy, dx (H, W)``: each pixel's offset from the box's top-left corner. Shapes:
    ``circle``, ``square``, and an isosceles ``triangle`` with its apex at the top centre.
    """
    if kind == "circle":
        r = size / 2.0
        return (dy - r) ** 2 + (dx - r) ** 2 <= r * r
    inside_y = (dy >= 0) & (dy < size)
    if kind == "square":
        return inside_y & (dx >= 0) & (dx < size)
    if kind == "triangle":
        half = 0.5 * dy  # half-width grows with depth below the apex
        return inside_y & (np.abs(dx - size / 2.0) <= half)
    raise InputError(f"unknown shape {kind!r}; choose one of {list(SHAPES)}.")


def _bounce(start: np.ndarray, velocity: np.ndarray, t: np.ndarray, span: np.ndarray) -> np.ndarray:
    """Position at times ``t`` of a point moving at constant velocity and reflecting inside [0, span].

    (T,) times, (2,) start/velocity/span -> (T, 2): a triangle wave of period 2*span.
    """
    span = np.maximum(span, 1e-6)
    q = np.mod(start[None, :] + velocity[None, :] * t[:, None], 2.0 * span[None, :])
    return span[None, :] - np.abs(q - span[None, :])


def _scene(rng: np.random.Generator, num_frames: int, height: int, width: int, t0: int) -> np.ndarray:
    """Render frames t0..t0+num_frames-1 of one scene. (num_frames, H, W, 3) uint8."""
    background = background_texture(rng, height, width)
    short = min(height, width)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)  # (H, W)
    t = np.arange(t0, t0 + num_frames, dtype=np.float64)
    out = np.repeat(background[None], num_frames, axis=0)  # (F, H, W, 3)
    for kind in SHAPES:
        size = float(rng.uniform(0.14, 0.24) * short)
        color = rng.uniform(0.0, 255.0, size=3)
        # Strong colours: push one channel to an extreme so shapes stand out from the texture.
        color[int(rng.integers(0, 3))] = float(rng.choice([0.0, 255.0]))
        span = np.array([height - size, width - size], dtype=np.float64)
        start = rng.uniform(0.0, 1.0, size=2) * np.maximum(span, 0.0)
        speed = rng.uniform(0.02, 0.05) * short  # pixels per frame
        angle = rng.uniform(0.0, 2.0 * np.pi)
        velocity = speed * np.array([math.sin(angle), math.cos(angle)])
        corner = _bounce(start, velocity, t, span)  # (F, 2) top-left (y, x)
        for f in range(num_frames):
            y0, x0 = corner[f]
            mask = shape_mask(kind, yy - y0, xx - x0, size)  # (H, W)
            out[f][mask] = color
    return np.rint(out).astype(np.uint8)


def make_frames(
    num_frames: int,
    height: int,
    width: int,
    seed: int = 0,
    scene_cut_at: int | None = None,
) -> np.ndarray:
    """Generate a deterministic RGB clip: textured static background, three moving shapes, optional scene cut.

    Args:
        num_frames: number of frames F (>= 1).
        height, width: frame size in pixels (>= 8 each; any aspect ratio).
        seed: random seed; the same arguments always give the same frames.
        scene_cut_at: if given, frames ``scene_cut_at..F-1`` show a different
            scene (new background and shapes); must be in ``1..F-1``.

    Returns:
        ``np.uint8`` array ``(F, H, W, 3)``, RGB, C-contiguous.
    """
    num_frames = _positive_int(num_frames, "num_frames")
    height = _positive_int(height, "height")
    width = _positive_int(width, "width")
    if height < 8 or width < 8:
        raise InputError(f"height and width must be at least 8 pixels, got {height}x{width}.")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}.")
    if scene_cut_at is not None:
        if isinstance(scene_cut_at, bool) or not isinstance(scene_cut_at, numbers.Integral) or not 1 <= scene_cut_at < num_frames:
            raise InputError(
                f"scene_cut_at must be an integer in 1..{num_frames - 1} (the first frame of the new scene), got {scene_cut_at!r}."
            )
    # Independent streams per scene, so adding a cut does not change the first scene.
    first_rng, second_rng = (np.random.Generator(np.random.PCG64([int(seed), k])) for k in (0, 1))
    if scene_cut_at is None:
        return _scene(first_rng, num_frames, height, width, 0)
    first = _scene(first_rng, int(scene_cut_at), height, width, 0)
    second = _scene(second_rng, num_frames - int(scene_cut_at), height, width, int(scene_cut_at))
    return np.ascontiguousarray(np.concatenate([first, second]))


def _pick_encoder(lossless: bool, odd: bool):
    import av

    for name, (even_fmt, odd_fmt), options in _LOSSLESS_ENCODERS if lossless else _LOSSY_ENCODERS:
        pix_fmt = odd_fmt if odd else even_fmt
        if pix_fmt is None:
            continue
        try:
            av.codec.Codec(name, "w")
        except Exception:  # UnknownCodecError: this FFmpeg build lacks the encoder; try the next
            continue
        return name, pix_fmt, options
    kind = "lossless" if lossless else "lossy"
    raise VideoError(f"PyAV's FFmpeg has none of the {kind} video encoders holitom can use; install the PyAV wheel from PyPI (`pip install av`).")


def write_video(path: str | os.PathLike, frames, fps: float = 8.0, *, lossless: bool = False) -> Path:
    """Encode frames into a video file with PyAV.

    The container comes from the suffix (``.mp4``, ``.mkv``, ``.mov``, ``.avi``).
    Lossy (default): H.264 (libx264, CRF 17, yuv420p; yuv444p when a side is
    odd; one thread and no mb-tree, so the bytes depend on neither the CPU count
    nor the heap), or MPEG-4 part 2 if this FFmpeg has no libx264. Lossless: H.264 RGB
    at QP 0 (libx264rgb), or FFV1: decoding gives back exactly the frames
    written, which tests use to compare file and in-memory paths.

    Args:
        path: output file; its folder must exist.
        frames: anything :func:`holitom.video.as_rgb_frames` accepts.
        fps: frame rate (> 0), stored as a fraction (29.97 -> 30000/1001).
        lossless: write a bit-exact RGB stream instead of a compact lossy one.

    Returns:
        The path written, as a ``Path``.
    """
    import av

    rgb = as_rgb_frames(frames)  # (F, H, W, 3)
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise InputError(f"fps must be a positive number, got {fps!r}.")
    p = Path(path)
    if not p.parent.is_dir():
        raise InputError(f"cannot write '{p}': folder '{p.parent}' does not exist; create it first.")
    _, height, width, _ = rgb.shape
    name, pix_fmt, options = _pick_encoder(lossless, odd=(height % 2 == 1 or width % 2 == 1))
    try:
        container = av.open(str(p), mode="w")
    except (av.error.FFmpegError, ValueError) as exc:
        raise InputError(f"cannot write '{p}': FFmpeg knows no container for suffix '{p.suffix}' ({exc}); use .mp4, .mkv, .mov or .avi.") from exc
    try:
        stream = container.add_stream(name, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = dict(options)
        for image in rgb:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():  # flush delayed (B-)frames
            container.mux(packet)
    finally:
        container.close()
    return p


__all__ = ["SHAPES", "background_texture", "make_frames", "shape_mask", "write_video"]
