"""INT8 vision encoder against float32 on onnxruntime (CPU): speed, and the accuracy of each calibration choice.

    .venv/bin/python scripts/bench_calibration.py --model llava-ov-0.5b --vision-layers 2 --frames 8
    .venv/bin/python scripts/bench_calibration.py --model default --frames 8,32 --methods minmax,entropy,percentile --scores float32,int8

For each model: export it once (float32, preset r10, no validation: this measures, the
tests validate), run its pipeline on generated clips to record what the runtime feeds
the vision graph, quantize the vision graph once per (method, score precision,
activation type) asked, then report per variant: features / attention cosine against
float32, HoliTom decision agreement on the clips (windows identical, kept-token
overlap), and the median time of the float32 and INT8 graphs on ``--frames`` frames,
timed alternately in one process (ratios measured in one run). ``--model`` takes
``default``, an architecture preset of ``holitom bench`` (random weights at real
widths; ``--vision-layers`` shrinks the depth, not the width) or a float32 export folder.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _export(model: str, vision_layers: int | None, work: Path) -> Path:
    from holitom.export import ExportConfig, export_model
    from holitom.sources import resolve_source

    if Path(model).is_dir() and resolve_source(model).is_export:
        return Path(model)
    from holitom.bench.archs import default_vocab_floor, get_arch, materialize

    floor = default_vocab_floor()
    spec = get_arch(model).with_overrides(vision_layers=vision_layers, text_layers=2, vocab_size=max(floor, 4096) if model != "default" else None, min_vocab_size=floor)
    ckpt = materialize(spec)
    out = work / "float32"
    print(f"exporting {model} ({spec.overrides or 'as is'}) to {out} ...", file=sys.stderr)
    export_model(str(ckpt), out, ExportConfig(presets=("r10",), num_frames=2, progress=False))
    return out


def _clips(folder: Path, count: int) -> list[Path]:
    from holitom.video import make_frames, write_video

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(count):
        path = folder / f"clip{seed}.mp4"
        write_video(path, make_frames(48, 240, 320, seed=seed, scene_cut_at=24), fps=8)
        paths.append(path)
    return paths


def prepare(model: str, vision_layers: int | None, work: Path, clips: int, clip_frames: int):
    """(export folder, its manifest, the report preset, the float32 pipeline's recording on generated clips)."""
    from holitom.calibration.data import record_pipeline
    from holitom.export.manifest import read_manifest

    export = _export(model, vision_layers, work)
    manifest = read_manifest(export)
    preset = "r10" if "r10" in manifest.outer_merge else next(iter(manifest.outer_merge))
    return export, manifest, preset, record_pipeline(export, _clips(work / "clips", clips), clip_frames, preset, 1, False, "float32 run")


def _run_ms(session, feed: dict) -> float:
    start = time.perf_counter()
    session.run(None, feed)
    return (time.perf_counter() - start) * 1e3


def time_pair(first, second, feed: dict, repeats: int) -> tuple[float, float]:
    """Median ms of two sessions on ``feed`` after one warm-up each, timed alternately (load changes hit both alike)."""
    first.run(None, feed), second.run(None, feed)
    a, b = [], []
    for _ in range(repeats):
        a.append(_run_ms(first, feed))
        b.append(_run_ms(second, feed))
    return statistics.median(a), statistics.median(b)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="default, llava-ov-0.5b, llava-ov-7b, or a float32 export folder")
    p.add_argument("--vision-layers", type=int, default=None, help="vision layers kept (architecture presets)")
    p.add_argument("--frames", default="8", help="comma list of frame counts to time")
    p.add_argument("--clips", type=int, default=2, help="generated calibration clips")
    p.add_argument("--clip-frames", type=int, default=8, help="frames sampled per calibration clip")
    p.add_argument("--methods", default="minmax")
    p.add_argument("--scores", default="float32", help="comma list: float32 (score path kept float) and/or int8")
    p.add_argument("--activations", default="int8", help="comma list: int8 (TensorRT-ready) and/or uint8")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", default=None, help="folder for the export and clips (default: a temporary one)")
    args = p.parse_args(argv)

    import onnxruntime as ort
    import torch

    from holitom import contracts as C
    from holitom.calibration.compare import cosine
    from holitom.calibration.data import FrameBatches
    from holitom.calibration.quantize import quantize_vision
    from holitom.calibration.report import decision_agreement
    from holitom.merge import MergeConfig
    from holitom.runtime.backends.onnxruntime.loader import providers_for, session_from_file

    with tempfile.TemporaryDirectory(prefix="bench-calibration-") as tmp:
        work = Path(args.work or tmp)
        export, manifest, preset, recording = prepare(args.model, args.vision_layers, work, args.clips, args.clip_frames)
        merge = MergeConfig.from_dict(manifest.outer_merge[preset]["merge"])
        float_file = export / manifest.graphs[C.VISION].file
        providers = providers_for("cpu")
        float_session = session_from_file(float_file, providers)
        print(f"model {args.model} (export {export}), vision width {manifest.model_config['vision']['hidden_size']}, "
              f"{manifest.model_config['vision'].get('num_layers', '?')} layers; onnxruntime {ort.__version__}, {args.clips} clips x {args.clip_frames} frames")
        header = f"{'method':10s} {'scores':7s} {'act':5s} {'feat cos':>9s} {'attn cos':>9s} {'windows':>8s} {'kept':>6s}"
        frames = [int(f) for f in args.frames.split(",")]
        print(header + "".join(f"  {'F=' + str(f) + ' fp32/int8 ms':>22s} {'x':>5s}" for f in frames))
        for method in args.methods.split(","):
            for scores in args.scores.split(","):
                for act in args.activations.split(","):
                    out = work / f"vision.{method}.{scores}.{act}.onnx"
                    quantize_vision(float_file, out, FrameBatches(recording, 10**9, False), method, scores == "float32", act)
                    session = session_from_file(out, providers)
                    pairs = []
                    for clip in recording.clips:
                        feed, want = clip.calls[C.VISION][0]
                        values = session.run(["features", "attention"], {"pixel_values": feed["pixel_values"].numpy()})
                        got = {name: torch.from_numpy(v) for name, v in zip(("features", "attention"), values)}
                        pairs.append((want, got))
                    fcos = min(cosine(g["features"], w["features"]) for w, g in pairs)
                    acos = min(cosine(g["attention"], w["attention"]) for w, g in pairs)
                    windows, kept = decision_agreement(pairs, merge, manifest.grid, manifest.layout)
                    line = f"{method:10s} {scores:7s} {act:5s} {fcos:9.5f} {acos:9.5f} {windows:8.0%} {kept:6.1%}"
                    for f in frames:
                        size = manifest.dims.image_size
                        feed = {"pixel_values": np.random.default_rng(0).standard_normal((f, 3, size, size), dtype=np.float32)}
                        a, b = time_pair(float_session, session, feed, args.repeats)
                        line += f"  {a:10.0f} / {b:9.0f} {a / b:5.2f}"
                    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
