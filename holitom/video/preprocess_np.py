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

import numbers
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from itertools import pairwise

import numpy as np

from holitom.errors import InputError
from holitom.host import usable_cpus
from holitom.video.clip import VideoClip, as_rgb_frames
from holitom.video.preprocess_config import VideoPreprocessConfig

# Filter half-widths at scale 1 (torch's interp_size / 2).
_SUPPORT = {"bicubic": 2.0, "bilinear": 1.0}
_CUBIC_A = -0.5  # Keys' cubic as PIL (and torch's antialiased kernel) use it
_MAX_PRECISION = 22
# Outputs per dense block of an axis's weights: few enough that the zeros around each output's taps stay few (with a
# handful of taps per output, a product's cost is mostly its output traffic, so wasted multiply-adds are what to
# avoid), enough for BLAS to run at speed. Measured (thread CPU time, one frame at a time, 32 frames 256x320 ->
# 384x384 bicubic): width 16 / height 8 took 15 + 13 ms against 20 + 23 ms for 64 / 32.
_WIDTH_BLOCK = 16
_HEIGHT_BLOCK = 8

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


class _FrameResizer:
    """One frame ``(H, W, 3)`` uint8 -> its planes ``(height, 3, width)`` as exact floats, in working arrays it reuses.

    Planes interleaved by row (``(H, 3, W)``, a transpose of the small uint8 input): the width pass multiplies the
    rows of all three planes at once on the right, the height pass all three planes side by side on the left (one
    product per block of outputs), and the result is a transposed view of ``pixel_values``' ``(3, height, width)``.
    One frame at a time keeps the working arrays in the CPU caches and, for frames of a few hundred pixels, each
    product under the size from which OpenBLAS spreads one over its own threads (about 2**18 multiply-adds), so
    the threads that share the frames (each with its own resizer) do not also wait on BLAS's.
    """

    def __init__(self, in_size: tuple[int, int], out_size: tuple[int, int], mode: str):
        (h, w), (height, width) = in_size, out_size
        self._by_width = _axis_plan(w, width, mode, _WIDTH_BLOCK) if w != width else None
        self._by_height = _axis_plan(h, height, mode, _HEIGHT_BLOCK) if h != height else None
        dtype = np.result_type(*(plan[1] for plan in (self._by_width, self._by_height) if plan is not None))
        self._rows = np.empty((h, 3, w), dtype=dtype)  # (H, 3, W)
        self._wide = np.empty((h, 3, width), dtype=dtype) if self._by_width else self._rows  # (H, 3, width)
        self._tall = np.empty((height, 3, width), dtype=dtype) if self._by_height else self._wide  # (height, 3, width)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        np.copyto(self._rows, frame.transpose(0, 2, 1))  # (H, 3, W) from (H, W, 3) uint8
        if self._by_width:  # width first: its uint8 result is what the height pass reads
            precision, _, blocks = self._by_width
            rows = self._rows.reshape(-1, self._rows.shape[2])  # (H * 3, W)
            wide = self._wide.reshape(-1, self._wide.shape[2])  # (H * 3, width)
            for lo, first, count, dense in blocks:
                np.matmul(rows[:, first : first + count], dense.T, out=wide[:, lo : lo + dense.shape[0]])  # (H * 3, outputs)
            _round_shift(wide, precision)
        if self._by_height:
            precision, _, blocks = self._by_height
            cols = self._wide.reshape(self._wide.shape[0], -1)  # (H, 3 * width)
            tall = self._tall.reshape(self._tall.shape[0], -1)  # (height, 3 * width)
            for lo, first, count, dense in blocks:
                np.matmul(dense, cols[first : first + count], out=tall[lo : lo + dense.shape[0]])  # (outputs, 3 * width)
            _round_shift(tall, precision)
        return self._tall


def _nearest_exact_source(in_size: int, out_size: int) -> np.ndarray:
    """The source index of each output of one axis, as torch's ``nearest-exact``: ``(out,)`` int64."""
    scale = np.float32(in_size) / np.float32(out_size)
    # floorf((i + 0.5) * scale): the product in double, rounded to float before the floor.
    src = np.floor(((np.arange(out_size) + 0.5) * np.float64(scale)).astype(np.float32)).astype(np.int64)
    return np.minimum(src, in_size - 1)


def _frame_resizer(in_size: tuple[int, int], out_size: tuple[int, int], mode: str) -> Callable[[np.ndarray], np.ndarray]:
    """A callable: frame ``(H, W, 3)`` uint8 -> planes ``(height, 3, width)`` holding torchvision's CPU
    ``resize(antialias=True)`` uint8 values (uint8 or exact float; valid until its next call)."""
    if in_size == out_size:
        return lambda frame: frame.transpose(0, 2, 1)  # torchvision returns the input unchanged at the target size
    if mode == "nearest-exact":
        rows, cols = (_nearest_exact_source(i, o) for i, o in zip(in_size, out_size))
        return lambda frame: frame[rows][:, cols].transpose(0, 2, 1)
    return _FrameResizer(in_size, out_size, mode)


def _resize_each(frames: np.ndarray, out_size: tuple[int, int], mode: str, store: Callable[[int, np.ndarray], None], threads: int) -> None:
    """Resize each frame of ``frames`` (F, H, W, 3) uint8 and call ``store(index, planes (height, 3, width))``, on up to
    ``threads`` threads, each with its own resizer over a contiguous run of frames (numpy and BLAS release the GIL)."""
    count = frames.shape[0]

    def run(indices: range) -> None:
        resize = _frame_resizer(frames.shape[1:3], out_size, mode)
        for i in indices:
            store(i, resize(frames[i]))

    workers = max(1, min(threads, count))
    if workers == 1:
        run(range(count))
        return
    bounds = [count * k // workers for k in range(workers + 1)]
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(run, [range(a, b) for a, b in pairwise(bounds)]):  # re-raises a worker's error
            pass


def resize_uint8(frames: np.ndarray, height: int, width: int, mode: str, threads: int = 1) -> np.ndarray:
    """(F, H, W, 3) uint8 -> (F, height, width, 3) uint8, as torchvision's CPU ``resize(antialias=True)``."""
    out = np.empty((frames.shape[0], height, width, 3), dtype=np.uint8)

    def store(i: int, planes: np.ndarray) -> None:
        np.copyto(out[i].transpose(0, 2, 1), planes, casting="unsafe")  # exact: the planes hold uint8 values

    _resize_each(frames, (height, width), mode, store, threads)
    return out


class NumpyVideoPreprocessor:
    """Turn RGB frames into ``pixel_values``: float32 numpy ``(F, 3, H, W)``, without torch.

    Same config and same output as :class:`holitom.video.VideoPreprocessor` on the CPU. ``threads``: how many
    threads share the frames (default: one per CPU this process may use, as torch's intra-op threads).
    """

    def __init__(self, config: VideoPreprocessConfig | None = None, threads: int | None = None):
        self.config = config if config is not None else VideoPreprocessConfig()
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1):
            raise InputError(f"threads must be a positive integer or None (one per CPU), got {threads!r}.")
        self.threads = int(threads) if threads is not None else usable_cpus()
        c = self.config
        # The fused constants as transformers computes them: a float32 tensor times a Python float (in float32).
        factor = np.float32(1.0 / c.rescale_factor) if c.do_rescale and c.do_normalize else np.float32(1.0)
        self._mean = (np.asarray(c.image_mean, dtype=np.float32) * factor).reshape(3, 1, 1)  # (3, 1, 1)
        self._std = (np.asarray(c.image_std, dtype=np.float32) * factor).reshape(3, 1, 1)

    @classmethod
    def from_pretrained(cls, checkpoint_dir: str | os.PathLike, threads: int | None = None) -> "NumpyVideoPreprocessor":
        return cls(VideoPreprocessConfig.from_pretrained(checkpoint_dir), threads)

    def __repr__(self) -> str:
        return f"NumpyVideoPreprocessor({self.config}, threads={self.threads})"

    def _store(self, out: np.ndarray, i: int, planes: np.ndarray) -> None:
        """Write one frame's resized planes ``(h, 3, w)`` into ``out[i]`` (3, h, w), rescaled and normalised in float32
        as transformers does (the planes' uint8 values convert exactly, whatever their array type)."""
        c = self.config
        src, dst = planes.transpose(1, 0, 2), out[i]  # (3, h, w): a strided read, a contiguous write (the faster way round)
        if c.do_normalize:
            np.subtract(src, self._mean, out=dst, dtype=np.float32, casting="same_kind")
            np.divide(dst, self._std, out=dst)
        elif c.do_rescale:
            np.multiply(src, np.float32(c.rescale_factor), out=dst, dtype=np.float32, casting="same_kind")
        else:
            np.copyto(dst, src, casting="same_kind")

    def __call__(self, frames) -> np.ndarray:
        """Preprocess a :class:`VideoClip` or in-memory frames (any form :func:`holitom.video.as_rgb_frames` takes)."""
        rgb = frames.frames if isinstance(frames, VideoClip) else as_rgb_frames(frames)  # (F, H, W, 3) uint8
        c = self.config
        size = (c.height, c.width) if c.do_resize else rgb.shape[1:3]
        out = np.empty((rgb.shape[0], 3, *size), dtype=np.float32)  # (F, 3, h, w)
        _resize_each(rgb, size, c.interpolation, lambda i, planes: self._store(out, i, planes), self.threads)
        return out


__all__ = ["NumpyVideoPreprocessor", "axis_weights", "resize_uint8"]
