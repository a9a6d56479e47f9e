"""Why the onnxruntime backend builds its sessions as it does: each session setting against its alternative.

Every variant runs in a fresh child process (load time, peak memory and onnxruntime's thread pools are
per process), on one export folder and one generated clip: the time to load and activate every session,
TTFT and decode tokens/s of one answer after a warm-up, and the peak resident memory of that answer
(``VmHWM`` reset after loading, as ``holitom bench`` does). Ratios are against the defaults, in one run.

    python scripts/bench_ort_session.py --export DIR [--frames 16] [--tokens 32]

``cold load`` is the first load with an empty optimized-graph cache (the optimization passes run and
the optimized graphs are written); every other row finds the cache filled, except ``no optimized cache``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

VARIANTS = {
    "defaults": {},
    "cold load": {},
    "no optimized cache": {"optimized_cache": False},
    "memory arena on": {"memory_arena": True},
    "memory pattern on": {"memory_pattern": True},
    "optimization extended": {"optimization": "extended"},
    "optimization basic": {"optimization": "basic"},
    "io binding": {"io_binding": True},
    "spinning": {"spinning": True},
    "1 thread": {"threads": 1},
    "vision in one call": {"vision_chunk": 0},
    "vision 4 frames per call": {"vision_chunk": 4},
    "vision frames in turn": {"vision_workers": 1},
}

CHILD = r"""
import json, sys, time
from pathlib import Path
args = json.loads(sys.argv[1])
from holitom.runtime.backends.onnxruntime import loader
loader.DEFAULT_SESSION_SETTINGS = loader.SessionSettings(**args["settings"])
from holitom.runtime import GenerationConfig, RuntimeConfig, load_pipeline

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
start = time.perf_counter()
pipe = load_pipeline(args["export"], RuntimeConfig(backend="onnxruntime", preset=args["preset"], num_frames=args["frames"])).activate()
load_s = time.perf_counter() - start
pipe.run(args["clip"], "What happens?", args["frames"], GenerationConfig(max_new_tokens=2))
base = status("VmRSS")
Path("/proc/self/clear_refs").write_text("5")
result = pipe.run(args["clip"], "What happens?", args["frames"], GenerationConfig(max_new_tokens=args["tokens"], stop_token_ids=()))
peak = status("VmHWM")
print(json.dumps({"load_s": load_s, "ttft_ms": result.timings_ms["ttft"], "tok_s": result.decode_tokens_per_s,
                  "peak_mb": (peak - base) / 2**20, "token_ids": result.token_ids}))
"""


def run_variant(settings: dict, export: Path, clip: Path, args, cache: Path) -> dict:
    payload = {"settings": settings, "export": str(export), "clip": str(clip), "frames": args.frames, "tokens": args.tokens, "preset": args.preset}
    env = dict(os.environ, HOLITOM_CACHE=str(cache))
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(payload)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"variant {settings} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", required=True, help="an export folder (holitom export)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32, help="decode tokens per answer")
    parser.add_argument("--preset", default="r10")
    args = parser.parse_args()
    from holitom.runtime.backends.onnxruntime.loader import SessionSettings
    from holitom.video import make_frames, write_video

    print("defaults:", json.dumps(dataclasses.asdict(SessionSettings())), f"| {args.frames} frames, preset {args.preset}, {args.tokens} tokens")
    with tempfile.TemporaryDirectory(prefix="holitom-bench-ort-") as tmp:
        clip = write_video(Path(tmp) / "clip.mp4", make_frames(args.frames * 2, 240, 320, seed=0, scene_cut_at=args.frames), fps=8)
        rows = {}
        for name, settings in VARIANTS.items():
            cache = Path(tmp) / ("cold-cache" if name == "cold load" else "cache")
            if name == "defaults":  # fill the shared cache first, so every other row loads warm
                run_variant(settings, Path(args.export), clip, args, cache)
            rows[name] = run_variant(settings, Path(args.export), clip, args, cache)
    ref = rows["defaults"]
    print(f"{'variant':24s} {'load s':>8s} {'TTFT ms':>9s} {'tok/s':>7s} {'peak MB':>8s}   vs defaults: load, TTFT, tok/s, peak")
    for name, r in rows.items():
        same = "" if r["token_ids"] == ref["token_ids"] else "  (other tokens!)"
        print(
            f"{name:24s} {r['load_s']:8.2f} {r['ttft_ms']:9.1f} {r['tok_s']:7.1f} {r['peak_mb']:8.1f}   "
            f"{r['load_s'] / ref['load_s']:.2f}x {r['ttft_ms'] / ref['ttft_ms']:.2f}x {r['tok_s'] / ref['tok_s']:.2f}x {r['peak_mb'] / max(ref['peak_mb'], 1e-9):.2f}x{same}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
