"""The onnxruntime attention form against the standard one, on the onnxruntime backend, in one run.

The two exports of one checkpoint differ in three places (``holitom.models.export_attention``):
the decoder prefill (GroupQueryAttention), the decode step (GroupQueryAttention writing into
preallocated KV buffers bound as both past and present, instead of concatenating the cache into a
fresh output every step) and the vision layers without scores (MultiHeadAttention). For each clip
and preset this prints the greedy tokens of both exports and of the torch backend (they must be
identical) and, per export, the vision time, TTFT and decode tokens/s (median of ``--repeats``
answers after a warm-up, every answer ``--tokens`` tokens long), with the ratios in one run.

    python scripts/bench_ort_attention.py [--model default] [--frames 32] [--tokens 32] [--repeats 3]
        [--standard DIR --onnxruntime DIR]   # reuse exports of the same checkpoint

Exports of the model are made into a temporary folder unless both folders are given.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

PROMPTS = ("What happens in the video?", "Describe the scene.")
PRESETS = ("none", "r10")
CLIP_SEEDS = (0, 1, 2)


def export(model: str, out: Path, attention: str, frames: int) -> Path:
    from holitom.export import ExportConfig, export_model
    from holitom.runtime.validate import validate_export

    export_model(model, out, ExportConfig(num_frames=min(frames, 8), presets=PRESETS, attention=attention, progress=False), validator=validate_export)
    return out


def answer(pipe, clip: Path, prompt: str, frames: int, tokens: int):
    from holitom.runtime import GenerationConfig

    return pipe.run(clip, prompt, frames, GenerationConfig(max_new_tokens=tokens, stop_token_ids=()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="checkpoint folder or 'default'")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=32, help="decode tokens per answer (stop tokens ignored)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--standard", type=Path, help="an --attention standard export of --model")
    parser.add_argument("--onnxruntime", type=Path, help="an --attention onnxruntime export of --model")
    args = parser.parse_args()
    from holitom.runtime import RuntimeConfig, load_pipeline
    from holitom.video import make_frames, write_video

    with tempfile.TemporaryDirectory(prefix="holitom-bench-attention-") as tmp:
        folders = {
            "standard": args.standard or export(args.model, Path(tmp) / "standard", "standard", args.frames),
            "onnxruntime": args.onnxruntime or export(args.model, Path(tmp) / "onnxruntime", "onnxruntime", args.frames),
        }
        clips = [write_video(Path(tmp) / f"clip{s}.mp4", make_frames(args.frames * 2, 240, 320, seed=s, scene_cut_at=args.frames), fps=8) for s in CLIP_SEEDS]
        mismatches = 0
        for preset in PRESETS:
            pipes = {name: load_pipeline(str(folder), RuntimeConfig(backend="onnxruntime", preset=preset)).activate() for name, folder in folders.items()}
            pipes["torch"] = load_pipeline(args.model, RuntimeConfig(backend="torch", preset=preset)).activate()
            for clip in clips:
                for prompt in PROMPTS:
                    tokens = {name: answer(pipe, clip, prompt, args.frames, args.tokens).token_ids for name, pipe in pipes.items()}
                    same = tokens["standard"] == tokens["onnxruntime"] == tokens["torch"]
                    mismatches += not same
                    print(f"greedy tokens {preset:5s} {clip.name} {prompt!r}: {'identical' if same else 'DIFFER'} {tokens if not same else ''}")
            timings: dict[str, list] = {name: [] for name in folders}
            for name in folders:
                answer(pipes[name], clips[0], PROMPTS[0], args.frames, args.tokens)  # warm-up
            for _ in range(args.repeats):
                for name in folders:  # interleaved: both exports see the same machine load
                    r = answer(pipes[name], clips[0], PROMPTS[0], args.frames, args.tokens)
                    timings[name].append((r.timings_ms["vision"], r.timings_ms["ttft"], r.decode_tokens_per_s))
            for pipe in pipes.values():
                pipe.deactivate()
            med = {name: [statistics.median(col) for col in zip(*rows)] for name, rows in timings.items()}
            s, o = med["standard"], med["onnxruntime"]
            print(
                f"{preset}: vision ms {s[0]:.1f} -> {o[0]:.1f} ({s[0] / o[0]:.2f}x faster), TTFT ms {s[1]:.1f} -> {o[1]:.1f} "
                f"({s[1] / o[1]:.2f}x), decode tok/s {s[2]:.1f} -> {o[2]:.1f} ({o[2] / s[2]:.2f}x)  [standard -> onnxruntime form, "
                f"median of {args.repeats}, {args.frames} frames, {args.tokens} tokens, load average {_load():.1f}]"
            )
    return 1 if mismatches else 0


def _load() -> float:
    import os

    return os.getloadavg()[0]


if __name__ == "__main__":
    sys.exit(main())
