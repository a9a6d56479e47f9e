"""The onnxruntime backend's vision stage against the torch backend's, in one process, interleaved.

The subjects run the same preprocessed frames of a generated clip, through each backend's own
vision runner: the torch backend's with and without the key scores (it computes them only for the
methods that read them, e.g. HoliTom) and the onnxruntime backend's exported vision graph (which
always yields them) fed ``--chunks`` frames per call, ``--workers`` calls at once. Each repeat runs
every subject once, in turn, so load from other jobs falls on all of them alike; the figures are
medians over ``--repeats``.
With ``--threads 1`` (the default) every subject computes on the calling thread and its thread CPU
time is the work it did, whatever else the machine runs, and the ratios compare it; with more threads
the ratios compare wall time (process CPU time is printed too: torch's idle OpenMP threads spin, which counts).
A worker count above 1 runs the chunks concurrently on one session with one intra-op thread per call, as the
backend does (``SessionSettings.vision_workers``); with such a row every ratio compares wall time.

    python scripts/bench_ort_vision.py [--model default] [--export DIR] [--frames 32] [--threads 1]
        [--chunks 1,2,4] [--workers 1] [--repeats 5]

``--export``: an export folder of ``--model`` (default: the onnxruntime backend's own export of it,
made and cached as ``holitom run`` does). ``--workers 1,0`` adds the backend's default (0: one worker per
CPU this process may use) to the sequential rows. Ratios are against the torch runner that computes the same
outputs (with scores) and against the one that computes features only (what torch runs for vanilla).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path


def torch_runners(model: str, frames: int) -> dict:
    """The torch backend's vision runner without scores (preset none) and with them (HoliTom r10)."""
    from holitom import contracts as C
    from holitom.runtime import RuntimeConfig, load_pipeline

    runners = {}
    for label, preset in (("torch, features only", "none"), ("torch, with scores", "r10")):
        pipe = load_pipeline(model, RuntimeConfig(backend="torch", preset=preset, num_frames=frames)).activate()
        runners[label] = pipe.stages.runners[C.VISION]
    return runners


def onnxruntime_runners(export: Path, threads: int, chunks: list[int], workers: list[int]) -> dict:
    """The onnxruntime backend's vision runner over the export's graph, one per chunk size and worker count."""
    from dataclasses import replace

    from holitom import contracts as C
    from holitom.export.manifest import read_manifest
    from holitom.runtime.backends.onnxruntime.loader import (
        DEFAULT_SESSION_SETTINGS,
        providers_for,
        session_from_file,
        vision_settings,
        vision_workers,
    )
    from holitom.runtime.backends.onnxruntime.runner import OnnxrtRunner

    manifest = read_manifest(export)
    spec = C.stage_specs(manifest.dims, manifest.precision)[C.VISION]
    providers = providers_for("cpu")

    def count(w: int) -> int:  # 0: the backend's own choice (one per usable CPU)
        return vision_workers(replace(DEFAULT_SESSION_SETTINGS, vision_workers=w), providers)

    default = (DEFAULT_SESSION_SETTINGS.vision_chunk, count(DEFAULT_SESSION_SETTINGS.vision_workers))
    runners = {}
    for w in dict.fromkeys(count(w) for w in workers):
        settings = vision_settings(replace(DEFAULT_SESSION_SETTINGS, threads=threads), w)
        load = partial(session_from_file, export / manifest.graphs[C.VISION].file, providers, spec, settings)
        for c in chunks:
            name = f"onnxruntime, {c} frame(s) per call" + (f", {w} workers" if w > 1 else "") + (" (default)" if (c, w) == default else "")
            runners[name] = OnnxrtRunner(spec, load, chunk=c, workers=w).activate()
    return runners


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="checkpoint folder or 'default' (the torch side)")
    parser.add_argument("--export", type=Path, help="an export folder of --model (default: the backend's own, cached)")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of both runtimes")
    parser.add_argument("--chunks", default="1,2,4", help="frames per onnxruntime call, comma-separated")
    parser.add_argument("--workers", default="1", help="onnxruntime calls at once, comma-separated (0: one per usable CPU)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    chunks = [int(c) for c in args.chunks.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    if args.frames < 1 or args.threads < 1 or args.repeats < 1 or min(chunks) < 1:
        parser.error("--frames, --threads, --repeats and every --chunks value must be >= 1")
    if min(workers) < 0:
        parser.error("every --workers value must be >= 0 (0: one per usable CPU)")

    import numpy as np
    import torch

    from holitom.export.cache import ensure_export
    from holitom.runtime.validate import tolerance_for, validate_export
    from holitom.sources import resolve_source
    from holitom.video import make_frames, write_video
    from holitom.video.reader import read_video

    torch.set_num_threads(args.threads)
    export = args.export or ensure_export(resolve_source(args.model), validator=validate_export)
    subjects = {**torch_runners(args.model, args.frames), **onnxruntime_runners(export, args.threads, chunks, workers)}
    with tempfile.TemporaryDirectory(prefix="holitom-bench-vision-") as tmp:
        clip = write_video(Path(tmp) / "clip.mp4", make_frames(args.frames * 2, 240, 320, seed=0, scene_cut_at=args.frames), fps=8)
        from holitom.video.preprocess_np import NumpyVideoPreprocessor

        pixels = NumpyVideoPreprocessor.from_pretrained(export)(read_video(clip, args.frames).frames)  # (F, 3, H, W)
    feeds = {name: {"pixel_values": torch.from_numpy(pixels) if name.startswith("torch") else pixels} for name in subjects}

    # Concurrent workers compute on threads of their own: only wall time compares them.
    one_thread = args.threads == 1 and all(getattr(runner, "workers", 1) == 1 for runner in subjects.values())
    clock = time.thread_time if one_thread else time.process_time
    outputs = {name: runner.infer(feeds[name]) for name, runner in subjects.items()}  # warm-up, and the parity check
    cpu: dict[str, list[float]] = {name: [] for name in subjects}
    wall: dict[str, list[float]] = {name: [] for name in subjects}
    load_start = os.getloadavg()
    for _ in range(args.repeats):
        for name, runner in subjects.items():
            c, w = clock(), time.perf_counter()
            runner.infer(feeds[name])
            cpu[name].append(1e3 * (clock() - c))
            wall[name].append(1e3 * (time.perf_counter() - w))
    load_end = os.getloadavg()

    reference = outputs["torch, with scores"]
    print(
        f"vision stage, {args.frames} frames, {args.threads} thread(s), median of {args.repeats} interleaved repeats; "
        f"load average {load_start[0]:.2f} -> {load_end[0]:.2f}; {'thread' if one_thread else 'process'} CPU time"
    )
    # The ratios compare the work (CPU time) on one thread, the latency (wall time) on several.
    timed = cpu if one_thread else wall
    base = {key: statistics.median(timed[label]) for key, label in (("scores", "torch, with scores"), ("features", "torch, features only"))}
    print(
        f"{'subject':52s} {'CPU ms':>8s} {'wall ms':>8s}  {'CPU' if one_thread else 'wall'} vs torch with scores / features only   "
        "max |diff| to torch: features, attention (ok: within the export validator's tolerance)"
    )
    for name in subjects:
        ms = statistics.median(timed[name])
        diffs = ""
        for o in ("features", "attention"):
            if o in outputs[name]:
                error = float(np.abs(np.asarray(outputs[name][o]) - reference[o].numpy()).max())
                diffs += f"  {error:.1e} {'ok' if error <= tolerance_for(o, reference[o]) else 'OVER'}"
        print(
            f"{name:52s} {statistics.median(cpu[name]):8.1f} {statistics.median(wall[name]):8.1f}  "
            f"{ms / base['scores']:6.2f}x / {ms / base['features']:.2f}x{diffs}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
