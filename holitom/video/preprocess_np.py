"""Frames -> ``pixel_values`` in numpy, identical to transformers' LLaVA-OneVision video processor on the CPU.

The edge runtime's preprocessor (no torch). transformers resizes uint8 frames
with torchvision's ``resize(antialias=True)``, which on the CPU hands them to
torch's fixed-point uint8 kernel for bicubic (and for bilinear on AVX2 / AVX512
/ ARM CPUs, i.e. every CPU this runs on in practice). That kernel is separable,
width first, and exact integer arithmetic once its weights are fixed:

- per output index ``i`` of an axis, with ``scale = in / out`` and a filter of
  support ``s`` (bicubic 2, bilinear 1; times ``scale`` when shrinking):
  ``center = scale * (i + 0.5)``, taps ``xmin .. xmin + xsize - 1`` with
  ``xmin = max(trunc(center - s + 0.5), 0)``, ``xsize = min(trunc(center + s + 0.5), in) - xmin``,
  weights ``filter((x - center + 0.5) / max(scale, 1))`` normalised to sum 1,
  all in float64 (bicubic is Keys' cubic with a = -0.5, as PIL);
- the weights become int16 at the largest precision ``p < 22`` whose doubled
  largest weight still rounds below 2**15 (round half away from zero);
- each output pixel is ``clip((2**(p-1) + sum(pixel * weight)) >> p, 0, 255)``,
  the width pass rounded to uint8 before the height pass reads it.

Integer sums make the result independent of summation order, so numpy gives the
same bytes (float matrix products over blocks of outputs hold them exactly) (``tests/video/test_preprocess.py`` checks both preprocessors against
transformers). The float ``mean`` / ``std`` are fused with the rescale factor in
float32 as transformers does. The route torchvision takes for bilinear on x86
CPUs without AVX2 (float resize, then round) is not reproduced here.
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

from holitom.video.clip import VideoClip, as_rgb_frames
from holitom.video.preprocess_config import VideoPreprocessConfig

# Filter half-widths at scale 1 (torch's interp_size / 2).
_SUPPORT = {"bicubic": 2.0, "bilinear": 1.0}
_CUBIC_A = -0.5  # Keys' cubic as PIL (and torch's antialiased kernel) use it
_MAX_PRECISION = 22
# Pixel values resized per chunk of frames: bounds the float working arrays (64 MB in float32) while keeping each
# matrix product large (many small products are what multi-threaded BLAS does worst).
_CHUNK_VALUES = 16 * 2**20
# Outputs per dense block of an axis's weights: small enough that the zeros around each output's taps
# stay few, large enough for BLAS to run at speed.
_BLOCK_OUTPUTS = 16


def _filter(mode: str, x: float) -> float:
    x = abs(x)
    if mode == "bilinear":
        return 1.0 - x if x < 1.0 else 0.0
    a = _CUBIC_A
    # Written in torch's operation order (cubic_convolution1 / 2) so every float64 rounds alike.
    if x < 1.0:
        return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2.0:
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return 0.0


@lru_cache(maxsize=32)
def axis_weights(in_size: int, out_size: int, mode: str) -> tuple[np.ndarray, np.ndarray, int]:
    """One axis of the fixed-point resize: ``(taps (out, K) int64 source indices, weights (out, K) int32, precision)``.

    Taps past an output's window carry weight 0 (their index is clamped into range).
    """
    scale = in_size / out_size
    support = _SUPPORT[mode] * scale if scale >= 1.0 else _SUPPORT[mode]
    width = int(np.ceil(support)) * 2 + 1
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    starts = np.zeros(out_size, dtype=np.int64)
    real = np.zeros((out_size, width), dtype=np.float64)
    wt_max = 0.0
    for i in range(out_size):  # a few hundred outputs, once per (size, mode): exact scalar float64 is simplest
        center = scale * (i + 0.5)
        xmin = max(int(center - support + 0.5), 0)  # int() truncates toward zero, as the C++ cast
        xsize = min(max(min(int(center + support + 0.5), in_size) - xmin, 0), width)
        ws = [_filter(mode, (j + xmin - center + 0.5) * invscale) for j in range(xsize)]
        total = 0.0
        for w in ws:  # left to right, as the C++ loop sums
            total += w
        if total != 0.0:
            ws = [w / total for w in ws]
            wt_max = max([wt_max, *ws])
        starts[i] = xmin
        real[i, :xsize] = ws
    precision = 0
    while precision < _MAX_PRECISION and int(0.5 + wt_max * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    scaled = real * (1 << precision)
    fixed = np.where(scaled < 0, np.trunc(scaled - 0.5), np.trunc(scaled + 0.5)).astype(np.int32)  # (out, K)
    taps = np.minimum(starts[:, None] + np.arange(width), in_size - 1)  # (out, K)
    return taps, fixed, precision


@lru_cache(maxsize=32)
def _axis_plan(in_size: int, out_size: int, mode: str) -> tuple[int, type, tuple[tuple[int, int, int, np.ndarray], ...]]:
    """The axis's weights as dense blocks: ``(precision, dtype, ((first output, first input, inputs, weights (outputs, inputs)), ...))``.

    Each block of consecutive outputs reads one contiguous input window, so one matrix product per block
    does the work of every tap (the zeros around each output's taps cost a little, BLAS pays it back).
    Every product and partial sum is an integer, so a float type gives them exactly, whatever order BLAS
    adds in, as long as they stay below its integer range: float32 (2**24) when the largest possible
    ``|sum| + 2**(p-1)`` fits, float64 (2**53) otherwise.
    """
    taps, weights, precision = axis_weights(in_size, out_size, mode)
    largest = 255 * int(np.abs(weights).sum(axis=1).max()) + (1 << max(precision - 1, 0))
    dtype = np.float32 if largest < 2**24 else np.float64
    blocks = []
    for lo in range(0, out_size, _BLOCK_OUTPUTS):
        hi = min(lo + _BLOCK_OUTPUTS, out_size)
        first, last = int(taps[lo:hi].min()), int(taps[lo:hi].max())
        dense = np.zeros((hi - lo, last - first + 1), dtype=np.float64)  # (outputs, inputs)
        rows = np.repeat(np.arange(hi - lo), taps.shape[1])
        np.add.at(dense, (rows, (taps[lo:hi] - first).reshape(-1)), weights[lo:hi].reshape(-1))  # clamped taps weigh 0
        blocks.append((lo, first, last - first + 1, dense.astype(dtype)))
    return precision, dtype, tuple(blocks)


def _round_shift(acc: np.ndarray, precision: int) -> np.ndarray:
    """``clip((acc + 2**(p-1)) >> p, 0, 255)`` in place, in ``acc``'s float type (adding, scaling by a power of two
    and flooring integers below its integer range are exact): the uint8 result as exact float values."""
    acc += (1 << (precision - 1)) if precision else 0
    acc *= 2.0**-precision
    np.floor(acc, out=acc)
    return np.clip(acc, 0, 255, out=acc)


def _resample_width(x: np.ndarray, out_size: int, mode: str) -> np.ndarray:
    """(f, H, W, 3) pixel values -> (f, H, out_size, 3), as exact floats. Channels stay interleaved: each
    block's weights act on (input, channel) pairs through a Kronecker product with the 3x3 identity."""
    f, h, w, c = x.shape
    precision, dtype, blocks = _axis_plan(w, out_size, mode)
    rows = x.reshape(f * h, w * c).astype(dtype, copy=False)  # (f*H, W*3), a free reshape of contiguous frames
    acc = np.empty((f * h, out_size * c), dtype=dtype)
    eye = np.eye(c, dtype=dtype)
    for lo, first, count, dense in blocks:
        weights = np.kron(dense.T, eye)  # (count*3, outputs*3)
        acc[:, lo * c : (lo + dense.shape[0]) * c] = rows[:, first * c : (first + count) * c] @ weights
    return _round_shift(acc, precision).reshape(f, h, out_size, c)


def _resample_height(x: np.ndarray, out_size: int, mode: str) -> np.ndarray:
    """(f, H, W, 3) pixel values -> (f, out_size, W, 3), as exact floats (one batched product per block)."""
    f, h, w, c = x.shape
    precision, dtype, blocks = _axis_plan(h, out_size, mode)
    cols = x.reshape(f, h, w * c).astype(dtype, copy=False)  # (f, H, W*3)
    acc = np.empty((f, out_size, w * c), dtype=dtype)
    for lo, first, count, dense in blocks:
        np.matmul(dense, cols[:, first : first + count], out=acc[:, lo : lo + dense.shape[0]])  # (f, outputs, W*3)
    return _round_shift(acc, precision).reshape(f, out_size, w, c)


def _nearest_exact(x: np.ndarray, axis: int, out_size: int) -> np.ndarray:
    in_size = x.shape[axis]
    scale = np.float32(in_size) / np.float32(out_size)
    # floorf((i + 0.5) * scale): the product in double, rounded to float before the floor.
    src = np.floor(((np.arange(out_size) + 0.5) * np.float64(scale)).astype(np.float32)).astype(np.int64)
    return np.take(x, np.minimum(src, in_size - 1), axis=axis)


def _resize(frames: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
    """(F, H, W, 3) uint8 -> (F, height, width, 3) float32 holding the uint8 values of torchvision's CPU
    ``resize(antialias=True)`` (float: the normalisation reads them as float32 next)."""
    if frames.shape[1:3] == (height, width):
        return frames.astype(np.float32)  # torchvision returns the input unchanged at the target size
    if mode == "nearest-exact":
        return _nearest_exact(_nearest_exact(frames, 1, height), 2, width).astype(np.float32)
    out = np.empty((frames.shape[0], height, width, 3), dtype=np.float32)
    step = max(1, _CHUNK_VALUES // max(frames[0].size, height * width * 3))
    for start in range(0, frames.shape[0], step):
        chunk = frames[start : start + step]  # (f, H, W, 3)
        if chunk.shape[2] != width:  # width first: its uint8 result is what the height pass reads
            chunk = _resample_width(np.ascontiguousarray(chunk), width, mode)  # (f, H, width, 3)
        if chunk.shape[1] != height:
            chunk = _resample_height(chunk, height, mode)  # (f, height, width, 3)
        out[start : start + step] = chunk
    return out


def resize_uint8(frames: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
    """(F, H, W, 3) uint8 -> (F, height, width, 3) uint8, as torchvision's CPU ``resize(antialias=True)``."""
    return _resize(frames, height, width, mode).astype(np.uint8)


class NumpyVideoPreprocessor:
    """Turn RGB frames into ``pixel_values``: float32 numpy ``(F, 3, H, W)``, without torch.

    Same config and same output as :class:`holitom.video.VideoPreprocessor` on the CPU.
    """

    def __init__(self, config: VideoPreprocessConfig | None = None):
        self.config = config if config is not None else VideoPreprocessConfig()
        c = self.config
        # The fused constants as transformers computes them: a float32 tensor times a Python float (in float32).
        factor = np.float32(1.0 / c.rescale_factor) if c.do_rescale and c.do_normalize else np.float32(1.0)
        self._mean = (np.asarray(c.image_mean, dtype=np.float32) * factor).reshape(1, 3, 1, 1)  # (1, 3, 1, 1)
        self._std = (np.asarray(c.image_std, dtype=np.float32) * factor).reshape(1, 3, 1, 1)

    @classmethod
    def from_pretrained(cls, checkpoint_dir: str | os.PathLike) -> "NumpyVideoPreprocessor":
        return cls(VideoPreprocessConfig.from_pretrained(checkpoint_dir))

    def __repr__(self) -> str:
        return f"NumpyVideoPreprocessor({self.config})"

    def __call__(self, frames) -> np.ndarray:
        """Preprocess a :class:`VideoClip` or in-memory frames (any form :func:`holitom.video.as_rgb_frames` takes)."""
        rgb = frames.frames if isinstance(frames, VideoClip) else as_rgb_frames(frames)  # (F, H, W, 3) uint8
        c = self.config
        pixels = _resize(rgb, c.height, c.width, c.interpolation) if c.do_resize else rgb  # (F, h, w, 3) pixel values
        video = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2), dtype=np.float32)  # (F, 3, h, w), a new array
        if c.do_normalize:
            video -= self._mean
            video /= self._std
        elif c.do_rescale:
            video *= np.float32(c.rescale_factor)
        return video


__all__ = ["NumpyVideoPreprocessor", "axis_weights", "resize_uint8"]
