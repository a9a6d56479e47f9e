"""Command-line front end of the evaluation, shared by ``holitom eval`` and ``scripts/eval_fidelity.py``.

Same flag style as ``holitom bench``: flags fill an :class:`~holitom.eval.config.EvalConfig`,
which refuses bad values with one line and exit status 2. Importing this module is light.
"""

from __future__ import annotations

import argparse

from holitom.bench.cli import parse_ratios, run_and_report, script_main, split_list

EXAMPLES = """\
examples:
  holitom eval                                         # embedded default model, 140 held-out items, every row
  holitom eval --items 14 --methods vanilla,holitom --ratios 0.1 --backends torch
  holitom eval --model /path/to/export --backends onnxruntime --out eval-out
  holitom eval --model /path/to/export --export /path/to/int8-export --methods holitom --ratios 0.1   # float32 vs INT8 rows
  holitom eval --json > eval.json
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from holitom.cli import FRAMES, int_flag

    p.add_argument("--model", default="default", help="'default', a llava-hf checkpoint folder, or a holitom export folder (onnxruntime only)")
    p.add_argument("--split", default="test", help="benchmark split: test (held out, default), val or train")
    p.add_argument("--items", type=int_flag(1), default=None, help="items to evaluate (default 140: 20 per question type)")
    p.add_argument("--start", type=int_flag(0), default=0, help="index of the first item")
    p.add_argument("--frames", type=FRAMES, default=None, help="frames sampled per clip (default 8, what the default model was trained on)")
    p.add_argument("--backends", default=None, help="comma list of torch, onnxruntime (default: both; an export: onnxruntime)")
    p.add_argument("--methods", default=None, help="comma list of vanilla, holitom-outer, holitom and the competing methods (default: all)")
    p.add_argument("--ratios", default=None, help="comma list of retain ratios r (default 0.1,0.15,0.2,0.25)")
    p.add_argument("--export", default=None, help="an export folder of the same model (e.g. an INT8 one from `holitom calibrate`): adds its onnxruntime rows, labelled with its precision")
    p.add_argument("--max-new-tokens", type=int_flag(1), default=8, help="answer length limit")
    p.add_argument("--threads", type=int_flag(1), default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", default=None, help="folder for eval.json and accuracy_vs_flops.png")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout (instead of the table)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def config_from_args(args: argparse.Namespace):
    from holitom.eval.config import EvalConfig

    kwargs = dict(model=args.model, split=args.split, start=args.start, max_new_tokens=args.max_new_tokens, threads=args.threads, export=args.export)
    for key, value in (
        ("items", args.items),
        ("frames", args.frames),
        ("backends", split_list(args.backends, "backends")),
        ("methods", split_list(args.methods, "methods")),
        ("ratios", parse_ratios(args.ratios)),
    ):
        if value is not None:
            kwargs[key] = value
    return EvalConfig(**kwargs)


def run_from_args(args: argparse.Namespace) -> int:
    """Run the evaluation for parsed flags; HolitomError propagates (the callers print it as one line)."""
    from holitom.eval.report import print_table, write_outputs
    from holitom.eval.runner import run_eval

    return run_and_report(args, run_eval, config_from_args(args), print_table, write_outputs)


DESCRIPTION = "HoliTom fidelity: accuracy on the generated video-QA benchmark for vanilla, HoliTom and the competing methods."


def main(argv: list[str] | None = None, prog: str = "eval_fidelity") -> int:
    return script_main(argv, prog, DESCRIPTION, EXAMPLES, add_arguments, run_from_args)


__all__ = ["DESCRIPTION", "EXAMPLES", "add_arguments", "config_from_args", "main", "run_from_args"]
