#!/usr/bin/env python
"""Benchmark: the edge runtime's numpy preprocessor against the torch one, on the same decoded frames.

Decodes ``--frames`` frames of a clip with :func:`holitom.video.read_video` (both backends' first step;
by default the clip ``holitom bench`` generates: 64 frames of 256x320, 8 fps, a scene cut), checks that
:class:`~holitom.video.preprocess_np.NumpyVideoPreprocessor` (the onnxruntime backend's) gives the same
``pixel_values`` bytes as :class:`~holitom.video.VideoPreprocessor` (the torch backend's), then times
both in interleaved repeats (the order alternates, so a load change on a shared machine hits both) and
prints the numpy / torch ratio of the median and of the minimum wall-clock time (issue 13's target:
<= 1.0x), with ``read_video`` for scale. Threads: torch's intra-op threads and the numpy preprocessor's
threads are both ``--threads`` (default: each one's own default, one per CPU).

Usage::

    python scripts/bench_preprocess.py                       # generated clip, 32 frames, 384x384 bicubic
    python scripts/bench_preprocess.py --video clip.mp4 --threads 1 --repeats 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_merge import (  # the sibling script's argument types (the script's folder is on sys.path)
    non_negative_int,
    positive_int,
)

from holitom.video import VideoPreprocessor, make_frames, read_video, write_video
from holitom.video.preprocess_np import NumpyVideoPreprocessor

TARGET_RATIO = 1.0


def _bench_clip(folder: Path) -> Path:
    # What holitom bench generates (holitom.bench.runner.prepare_video) for 32 frames.
    return write_video(folder / "bench_clip.mp4", make_frames(64, 256, 320, seed=0, scene_cut_at=32), fps=8)


def _interleaved_ms(fns: dict, warmup: int, repeats: int) -> dict[str, list[float]]:
    """Wall-clock milliseconds of each function, the functions taking turns (in alternating order) per repeat."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for rep in range(repeats):
        for name in names if rep % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            fns[name]()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, default=None, help="a video file (default: the clip holitom bench generates)")
    ap.add_argument("--frames", type=positive_int, default=32)
    ap.add_argument("--threads", type=positive_int, default=None, help="threads of both preprocessors (default: each one's default)")
    ap.add_argument("--warmup", type=non_negative_int, default=2)
    ap.add_argument("--repeats", type=positive_int, default=10)
    args = ap.parse_args()
    if args.video is not None and not args.video.is_file():
        ap.error(f"--video {args.video}: no such file")
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        video = args.video if args.video is not None else _bench_clip(Path(tmp))
        clip = read_video(video, args.frames)
        torch_pre, numpy_pre = VideoPreprocessor(), NumpyVideoPreprocessor(threads=args.threads)
        expected = torch_pre(clip.frames).numpy()
        got = numpy_pre(clip.frames)
        if not np.array_equal(got.view(np.uint32), expected.view(np.uint32)):
            raise SystemExit(f"the preprocessors disagree: max abs diff {np.abs(got - expected).max():.3g}")
        times = _interleaved_ms(
            {"read_video": lambda: read_video(video, args.frames), "torch": lambda: torch_pre(clip.frames), "numpy": lambda: numpy_pre(clip.frames)},
            args.warmup,
            args.repeats,
        )

    load = tuple(round(a, 2) for a in os.getloadavg()) if hasattr(os, "getloadavg") else None
    f, h, w, _ = clip.frames.shape
    print(
        f"{f} frames {h}x{w} -> {tuple(got.shape[2:])} {numpy_pre.config.interpolation}; torch {torch.get_num_threads()} threads, "
        f"numpy {numpy_pre.threads} threads; {args.repeats} interleaved repeats; load average {load}; identical bytes"
    )
    for name, label in (("read_video", "decode + sample (read_video)"), ("torch", "torch preprocessor"), ("numpy", "numpy preprocessor")):
        print(f"{label:30s} {statistics.median(times[name]):8.1f} ms (min {min(times[name]):.1f})")
    median = statistics.median(times["numpy"]) / statistics.median(times["torch"])
    verdict = "met" if median <= TARGET_RATIO else "NOT met"
    print(f"numpy / torch preprocessing: {median:.2f}x (median; min {min(times['numpy']) / min(times['torch']):.2f}x); target <= {TARGET_RATIO}x: {verdict}")


if __name__ == "__main__":
    main()
