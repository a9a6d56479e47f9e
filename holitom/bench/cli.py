"""Command-line front end of the benchmark, shared by ``holitom bench`` and ``scripts/bench_latency.py``.

Flags only fill in a :class:`~holitom.bench.config.BenchConfig`; every check
lives there, so a bad value is one :class:`~holitom.errors.ConfigError` line
on stderr and exit status 2 in both entry points. Importing this module is
light (no torch): ``holitom --help`` builds the parser through it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from holitom.errors import ConfigError, run_reporting_errors

EXAMPLES = """\
examples:
  holitom bench                                        # embedded default model, generated clip, all rows
  holitom bench --model llava-ov-0.5b --vision-layers 3 --text-layers 3 --ratios 0.1 --out bench-out
  holitom bench --model llava-ov-7b --device cuda --dtype float16 --backends transformers,torch --out bench-7b
  holitom bench --model /path/to/llava-onevision-qwen2-0.5b-ov-hf --video clip.mp4 --json > result.json
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's flags (no ``choices=``: the config refuses bad values with one clear line)."""
    from holitom.models.config import PRESET_NAMES

    p.add_argument("--model", default="default", help=f"a model preset ({', '.join(PRESET_NAMES)}; random weights except the default) or a llava-hf checkpoint folder")
    p.add_argument("--video", default=None, help="video file; default: a generated clip (moving shapes, one scene cut)")
    p.add_argument("--prompt", default=None, help="question about the video")
    from holitom.cli import FRAMES, SEED, int_flag
    from holitom.limits import MAX_VOCAB_SIZE

    p.add_argument("--frames", type=FRAMES, default=32, help="frames sampled from the video (default 32, as the paper)")
    p.add_argument("--image-size", type=int, default=None, help="arch presets: input resolution (384 real; 192 -> 13x13 patches -> 7x7 tokens)")
    p.add_argument("--vision-layers", type=int, default=None, help="arch presets: SigLIP layers to keep (26 real)")
    p.add_argument("--text-layers", type=int, default=None, help="arch presets: decoder layers to keep (24 / 28 real)")
    p.add_argument("--vocab-size", type=int_flag(1, MAX_VOCAB_SIZE), default=None, help="arch presets: vocabulary (only the lm_head and embedding memory depend on it)")
    p.add_argument("--backends", default=None, help="comma list of transformers, torch, onnxruntime (default: all three)")
    p.add_argument("--methods", default=None, help="comma list of vanilla, holitom-outer, holitom and any competing method registered as a merge preset family (default: the three HoliTom settings)")
    p.add_argument("--ratios", default=None, help="comma list of retain ratios r (default 0.1,0.15,0.2,0.25)")
    p.add_argument("--repeats", type=int, default=3, help="measured runs per row (medians are reported)")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured runs per row first")
    p.add_argument("--decode-tokens", type=int, default=16, help="tokens generated per run (stop tokens ignored)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--dtype", default="float32", help="float32, float16 or bfloat16 (onnxruntime rows need float32)")
    p.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None, help="torch rows: decode step as a CUDA graph (default: on with --device cuda); --no-cuda-graph decodes eagerly")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core); 1 is steadier on a shared machine")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the generated clip and of an arch preset's random weights")
    p.add_argument("--no-flops", action="store_true", help="skip counting FLOPs with FlopCounterMode")
    p.add_argument("--no-memory", action="store_true", help="skip the per-row memory probes (fresh child processes)")
    p.add_argument("--one-backend-at-a-time", action="store_true", help="measure backend by backend with only its models loaded (large models); default: all rows loaded, measured round-robin")
    p.add_argument("--no-projection", action="store_true", help="layer-trimmed presets: skip the second run at another depth that projects every row to the real depth")
    p.add_argument("--export", default=None, help="an export folder of the same model (e.g. an INT8 one from `holitom calibrate`): adds its onnxruntime rows, labelled with its precision, beside the float32 ones")
    p.add_argument("--out", default=None, help="folder for bench.json and the PNG plots")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout (instead of the table)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def split_list(value: str | None, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise ConfigError(f"--{what} is empty; give a comma-separated list.")
    return items


def parse_ratios(value: str | None) -> tuple[float, ...] | None:
    items = split_list(value, "ratios")
    if items is None:
        return None
    try:
        return tuple(float(v) for v in items)
    except ValueError:
        raise ConfigError(f"--ratios must be numbers such as 0.1,0.25, got '{value}'.") from None


def config_from_args(args: argparse.Namespace):
    """Fill a BenchConfig from parsed flags (the config validates)."""
    from holitom.bench.config import BenchConfig

    kwargs = dict(
        model=args.model,
        video=args.video,
        frames=args.frames,
        image_size=args.image_size,
        vision_layers=args.vision_layers,
        text_layers=args.text_layers,
        vocab_size=args.vocab_size,
        repeats=args.repeats,
        warmup=args.warmup,
        decode_tokens=args.decode_tokens,
        device=args.device,
        dtype=args.dtype,
        seed=args.seed,
        threads=args.threads,
        count_flops=not args.no_flops,
        measure_memory=not args.no_memory,
        interleave=not args.one_backend_at_a_time,
        project_full_depth=not args.no_projection,
        export=args.export,
        cuda_graph=args.cuda_graph,
    )
    if args.prompt is not None:
        kwargs["prompt"] = args.prompt
    for key, value in (("backends", split_list(args.backends, "backends")), ("methods", split_list(args.methods, "methods")), ("ratios", parse_ratios(args.ratios))):
        if value is not None:
            kwargs[key] = value
    return BenchConfig(**kwargs)


def run_and_report(args: argparse.Namespace, run: Callable, config, print_table: Callable, write_outputs: Callable) -> int:
    """Run ``run(config, log=...)`` and report it as the flags ask (table or --json, files with --out, progress unless --quiet).

    Shared by ``holitom bench`` and ``holitom eval``.
    """
    if args.out:
        from holitom.paths import check_writable_dir

        check_writable_dir(args.out, "--out")  # before the measurement: an output error must not cost it
    log = None if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    result = run(config, log=log)
    # The results are printed first, so they survive a failure to write --out (a full disk, a vanished folder).
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        print_table(result)
        sys.stdout.flush()
    if args.out:
        written = write_outputs(result, args.out)
        if not args.quiet:
            print("wrote " + ", ".join(str(p) for p in written.values()), file=sys.stderr)
    return 0


def run_from_args(args: argparse.Namespace) -> int:
    """Run the benchmark for parsed flags; HolitomError propagates (the callers print it as one line)."""
    from holitom.bench.report import print_table, write_outputs
    from holitom.bench.runner import run_bench

    return run_and_report(args, run_bench, config_from_args(args), print_table, write_outputs)


def script_main(argv: list[str] | None, prog: str, description: str, examples: str, add: Callable, run: Callable) -> int:
    """A script's entry point: parse ``argv`` with the flags ``add`` declares, ``run`` them, errors as one line (exit 2)."""
    from holitom.cli import OneLineParser

    parser = OneLineParser(prog=prog, description=description, epilog=examples, formatter_class=argparse.RawDescriptionHelpFormatter)
    add(parser)
    args = parser.parse_args(argv)
    return run_reporting_errors(prog, lambda: run(args))


DESCRIPTION = "HoliTom latency benchmark: TTFT breakdown, decode speed, memory and FLOPs against the transformers baseline."


def main(argv: list[str] | None = None, prog: str = "bench_latency") -> int:
    return script_main(argv, prog, DESCRIPTION, EXAMPLES, add_arguments, run_from_args)


__all__ = [
    "DESCRIPTION",
    "EXAMPLES",
    "add_arguments",
    "config_from_args",
    "main",
    "parse_ratios",
    "run_and_report",
    "run_from_args",
    "script_main",
    "split_list",
]
