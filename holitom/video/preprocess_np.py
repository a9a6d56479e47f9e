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
same bytes (float64 matrix products over blocks of outputs hold them exactly) (``tests/video/test_preprocess.py`` checks both preprocessors against
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
# Frames resized per chunk: bounds the float64 working arrays to a few frames' worth.
_CHUNK_FRAMES = 4
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
def _band_blocks(in_size: int, out_size: int, mode: str) -> tuple[tuple[int, int, int, np.ndarray], ...]:
    """The axis's weights as dense float64 blocks: ``(first output, first input, inputs, weights (outputs, inputs))``.

    Each block of consecutive outputs reads one contiguous input window, so one matrix product per block
    does the work of every tap (the zero entries outside each output's taps cost a little, BLAS pays it back).
    """
    taps, weights, _ = axis_weights(in_size, out_size, mode)
    blocks = []
    for lo in range(0, out_size, _BLOCK_OUTPUTS):
        hi = min(lo + _BLOCK_OUTPUTS, out_size)
        first, last = int(taps[lo:hi].min()), int(taps[lo:hi].max())
        dense = np.zeros((hi - lo, last - first + 1), dtype=np.float64)  # (outputs, inputs)
        rows = np.repeat(np.arange(hi - lo), taps.shape[1])
        np.add.at(dense, (rows, (taps[lo:hi] - first).reshape(-1)), weights[lo:hi].reshape(-1))  # clamped taps weigh 0
        blocks.append((lo, first, last - first + 1, dense))
    return tuple(blocks)


def _resample_rows(x: np.ndarray, out_size: int, mode: str) -> np.ndarray:
    """uint8 ``x`` (in, columns) resampled along axis 0 with the fixed-point kernel: (out_size, columns) uint8.

    The products and sums are integers below 2**53, so float64 matrix products give them exactly,
    whatever order BLAS adds in.
    """
    _, _, precision = axis_weights(x.shape[0], out_size, mode)
    values = x.astype(np.float64)  # (in, columns)
    acc = np.empty((out_size, x.shape[1]), dtype=np.float64)
    for lo, first, count, dense in _band_blocks(x.shape[0], out_size, mode):
        np.matmul(dense, values[first : first + count], out=acc[lo : lo + dense.shape[0]])
    # (acc + 2**(p-1)) >> p, in float64: adding, scaling by a power of two and flooring stay exact.
    acc += (1 << (precision - 1)) if precision else 0
    acc *= 2.0**-precision
    np.floor(acc, out=acc)
    np.clip(acc, 0, 255, out=acc)
    return acc.astype(np.uint8)


def _nearest_exact(x: np.ndarray, axis: int, out_size: int) -> np.ndarray:
    in_size = x.shape[axis]
    scale = np.float32(in_size) / np.float32(out_size)
    # floorf((i + 0.5) * scale): the product in double, rounded to float before the floor.
    src = np.floor(((np.arange(out_size) + 0.5) * np.float64(scale)).astype(np.float32)).astype(np.int64)
    return np.take(x, np.minimum(src, in_size - 1), axis=axis)


def resize_uint8(frames: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
    """(F, H, W, 3) uint8 -> (F, height, width, 3) uint8, as torchvision's CPU ``resize(antialias=True)``."""
    if frames.shape[1:3] == (height, width):
        return frames  # torchvision returns the input unchanged at the target size
    if mode == "nearest-exact":
        return _nearest_exact(_nearest_exact(frames, 1, height), 2, width)
    out = np.empty((frames.shape[0], height, width, 3), dtype=np.uint8)
    for start in range(0, frames.shape[0], _CHUNK_FRAMES):
        chunk = frames[start : start + _CHUNK_FRAMES]  # (f, H, W, 3)
        f, h, w, _ = chunk.shape
        if w != width:  # width first: its uint8 result is what the height pass reads
            rows = _resample_rows(chunk.transpose(2, 0, 1, 3).reshape(w, -1), width, mode)  # (width, f*H*3)
            chunk, w = rows.reshape(width, f, h, 3).transpose(1, 2, 0, 3), width  # (f, H, width, 3)
        if h != height:
            rows = _resample_rows(chunk.transpose(1, 0, 2, 3).reshape(h, -1), height, mode)  # (height, f*w*3)
            chunk = rows.reshape(height, f, w, 3).transpose(1, 0, 2, 3)  # (f, height, w, 3)
        out[start : start + _CHUNK_FRAMES] = chunk
    return out


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
            rgb = resize_uint8(np.ascontiguousarray(rgb), c.height, c.width, c.interpolation)  # (F, h, w, 3)
        video = np.ascontiguousarray(rgb.transpose(0, 3, 1, 2), dtype=np.float32)  # (F, 3, h, w), a new array
        if c.do_normalize:
            video -= self._mean
            video /= self._std
        elif c.do_rescale:
            video *= np.float32(c.rescale_factor)
        return video


__all__ = ["NumpyVideoPreprocessor", "axis_weights", "resize_uint8"]
