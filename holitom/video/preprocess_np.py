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
# Outputs per dense block of an axis's weights: few enough that the zeros around each output's taps stay few,
# enough for BLAS to run at speed. The width pass multiplies on the right (a block is the product's column count:
# it wants more), the height pass on the left. Measured (CPU time, 32 frames 256x320 -> 384x384 bicubic):
# width 64 / height 32 took 40% of the earlier interleaved-channel pass (16 / 16, Kronecker weights).
_WIDTH_BLOCK = 64
_HEIGHT_BLOCK = 32

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
def _axis_plan(in_size: int, out_size: int, mode: str, block: int) -> tuple[int, type, tuple[tuple[int, int, int, np.ndarray], ...]]:
    """The axis's weights as dense blocks of ``block`` outputs: ``(precision, dtype, ((first output, first input, inputs,
    weights (outputs, inputs)), ...))``.

    Each block of consecutive outputs reads one contiguous input window, so one matrix product per block
    does the work of every tap (the zeros around each output's taps cost a little, BLAS pays it back).
    Every product and partial sum is an integer times 2**-p, so a float type gives them exactly, whatever order BLAS
    adds in, as long as they stay below its integer range: float32 (2**24) when the largest possible
    ``|sum| + 2**(p-1)`` fits, float64 (2**53) otherwise.
    """
    taps, weights, precision = axis_weights(in_size, out_size, mode)
    largest = 255 * int(np.abs(weights).sum(axis=1).max()) + (1 << max(precision - 1, 0))
    dtype = np.float32 if largest < 2**24 else np.float64
    blocks = []
    for lo in range(0, out_size, block):
        hi = min(lo + block, out_size)
        first, last = int(taps[lo:hi].min()), int(taps[lo:hi].max())
        dense = np.zeros((hi - lo, last - first + 1), dtype=np.float64)  # (outputs, inputs)
        rows = np.repeat(np.arange(hi - lo), taps.shape[1])
        np.add.at(dense, (rows, (taps[lo:hi] - first).reshape(-1)), weights[lo:hi].reshape(-1))  # clamped taps weigh 0
        # Scaled by 2**-p (exact: a power of two), so each product already holds its sum shifted right by p bits.
        blocks.append((lo, first, last - first + 1, (dense * 2.0**-precision).astype(dtype)))
    return precision, dtype, tuple(blocks)


def _round_shift(acc: np.ndarray, precision: int) -> np.ndarray:
    """``clip((sum + 2**(p-1)) >> p, 0, 255)`` in place from ``acc = sum * 2**-p`` (the plan's scaled weights), in
    ``acc``'s float type (adding 1/2 and flooring multiples of 2**-p below its integer range are exact): the uint8
    result as exact float values."""
    acc += 0.5 if precision else 0.0
    np.floor(acc, out=acc)
    return np.clip(acc, 0, 255, out=acc)


def _resample_width(x: np.ndarray, out_size: int, mode: str) -> np.ndarray:
    """(n, W) rows of pixel values (one per channel plane row) -> (n, out_size), as exact floats."""
    precision, dtype, blocks = _axis_plan(x.shape[1], out_size, mode, _WIDTH_BLOCK)
    rows = x.astype(dtype, copy=False)
    acc = np.empty((x.shape[0], out_size), dtype=dtype)
    for lo, first, count, dense in blocks:
        np.matmul(rows[:, first : first + count], dense.T, out=acc[:, lo : lo + dense.shape[0]])  # (n, outputs)
    return _round_shift(acc, precision)


def _resample_height(x: np.ndarray, out_size: int, mode: str) -> np.ndarray:
    """(planes, H, W) pixel values -> (planes, out_size, W), as exact floats (one batched product per block)."""
    precision, dtype, blocks = _axis_plan(x.shape[1], out_size, mode, _HEIGHT_BLOCK)
    cols = x.astype(dtype, copy=False)
    acc = np.empty((x.shape[0], out_size, x.shape[2]), dtype=dtype)
    for lo, first, count, dense in blocks:
        np.matmul(dense, cols[:, first : first + count], out=acc[:, lo : lo + dense.shape[0]])  # (planes, outputs, W)
    return _round_shift(acc, precision)


def _nearest_exact(x: np.ndarray, axis: int, out_size: int) -> np.ndarray:
    in_size = x.shape[axis]
    scale = np.float32(in_size) / np.float32(out_size)
    # floorf((i + 0.5) * scale): the product in double, rounded to float before the floor.
    src = np.floor(((np.arange(out_size) + 0.5) * np.float64(scale)).astype(np.float32)).astype(np.int64)
    return np.take(x, np.minimum(src, in_size - 1), axis=axis)


def _resize(frames: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
    """(F, H, W, 3) uint8 -> (F, 3, height, width) float32 holding the uint8 values of torchvision's CPU
    ``resize(antialias=True)`` (float: the normalisation reads them as float32 next).

    Channel planes first (a transpose of the small uint8 input): both passes then act on plain rows and
    columns of each plane, and the result is already in ``pixel_values``' layout.
    """
    planar = frames.transpose(0, 3, 1, 2)  # (F, 3, H, W) uint8 view
    if frames.shape[1:3] == (height, width):
        return np.ascontiguousarray(planar, dtype=np.float32)  # torchvision returns the input unchanged at the target size
    if mode == "nearest-exact":
        return np.ascontiguousarray(_nearest_exact(_nearest_exact(planar, 2, height), 3, width), dtype=np.float32)
    f, c, h, w = planar.shape
    out = np.empty((f, c, height, width), dtype=np.float32)
    step = max(1, _CHUNK_VALUES // max(frames[0].size, height * width * c))
    for start in range(0, f, step):
        chunk = np.ascontiguousarray(planar[start : start + step])  # (f, 3, H, W)
        n = chunk.shape[0]
        if w != width:  # width first: its uint8 result is what the height pass reads
            chunk = _resample_width(chunk.reshape(n * c * h, w), width, mode).reshape(n, c, h, width)
        if h != height:
            chunk = _resample_height(chunk.reshape(n * c, h, width), height, mode).reshape(n, c, height, width)
        out[start : start + step] = chunk
    return out


def resize_uint8(frames: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
    """(F, H, W, 3) uint8 -> (F, height, width, 3) uint8, as torchvision's CPU ``resize(antialias=True)``."""
    return _resize(frames, height, width, mode).transpose(0, 2, 3, 1).astype(np.uint8)


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
        if c.do_resize:
            video = _resize(rgb, c.height, c.width, c.interpolation)  # (F, 3, h, w) float32 pixel values, a new array
        else:
            video = np.ascontiguousarray(rgb.transpose(0, 3, 1, 2), dtype=np.float32)  # (F, 3, h, w)
        if c.do_normalize:
            video -= self._mean
            video /= self._std
        elif c.do_rescale:
            video *= np.float32(c.rescale_factor)
        return video


__all__ = ["NumpyVideoPreprocessor", "axis_weights", "resize_uint8"]
