"""The ``holitom`` command line.

Subcommands only fill in the typed config objects and call the Python API.
Errors of the toolkit (:class:`holitom.errors.HolitomError`) are printed as one
line on stderr and the process exits with status 2; nothing is half-written.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from holitom.errors import EXIT_USAGE, require_extra, run_reporting_errors
from holitom.limits import DTYPES, MAX_FRAMES, MAX_OPSET, MAX_SEED, MIN_FRAMES, MIN_OPSET, MIN_SEED


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors on one stderr line (exit 2), like every other error of the CLI."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def int_flag(low: int, high: int | None = None):
    """An argparse ``type``: an integer in ``low..high``, checked while parsing (before anything loads)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}" + (f" and <= {high}" if high is not None else "") + f", got {text}")
        return value

    parse.__name__ = "integer"
    return parse


FRAMES = int_flag(MIN_FRAMES, MAX_FRAMES)
SEED = int_flag(MIN_SEED, MAX_SEED)


def _add_model_args(p: argparse.ArgumentParser, allow_export: bool = True) -> None:
    what = "DIR|default|EXPORT_DIR" if allow_export else "DIR|default"
    p.add_argument("--model", default="default", metavar=what, help="checkpoint folder (llava-hf layout), 'default' (embedded tiny model)" + (", or a holitom export folder" if allow_export else ""))


def _add_merge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None, help="merge preset (see `holitom presets`); default r15")
    p.add_argument("--no-inner-merge", action="store_true", help="skip the inner-LLM merge (outer merge only)")


def _add_generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int_flag(1), default=32, help="at most this many tokens (also bounded by the model's context length)")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int_flag(0), default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=SEED, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="holitom", description="HoliTom video-token merging: export and run fast video LLMs.")
    parser.add_argument("--version", action="store_true", help="print the toolkit version and exit")
    sub = parser.add_subparsers(dest="command")

    demo = sub.add_parser("demo", help="embedded default model on a generated benchmark clip: its answer, token counts and TTFT with and without HoliTom")
    demo.add_argument("--backend", default="torch")
    demo.add_argument("--frames", type=FRAMES, default=None, help="frames sampled from the clip (default 8, what the default model was trained on)")
    demo.add_argument("--preset", default=None, help="HoliTom preset to compare with vanilla (default r15)")
    demo.add_argument("--max-new-tokens", type=int_flag(1), default=16)
    demo.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    run = sub.add_parser("run", help="answer a question about a video")
    _add_model_args(run)
    run.add_argument("--video", required=True, help="video file (anything PyAV/FFmpeg decodes)")
    run.add_argument("--prompt", required=True, help="the question; put <video> in it to place the video, else it goes first")
    run.add_argument("--backend", default=None, help="torch | onnxruntime | tensorrt (an export folder with engines); default: onnxruntime for an export folder, else torch")
    run.add_argument("--device", default="cpu")
    run.add_argument("--dtype", default="float32", choices=DTYPES)
    run.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None, help="torch backend: decode step as a CUDA graph (default: on with --device cuda)")
    run.add_argument("--frames", type=FRAMES, default=None, help="frames sampled from the video (default 32, LLaVA-OneVision's; 8 with --model default, what it was trained on)")
    run.add_argument("--no-chat-template", action="store_true", help="send --prompt verbatim (it must contain exactly one <video>)")
    _add_merge_args(run)
    _add_generation_args(run)
    run.add_argument("--json", action="store_true", help="print one JSON object with answer, token counts and timings")

    export = sub.add_parser("export", help="export a checkpoint to ONNX graphs plus a manifest")
    _add_model_args(export, allow_export=False)
    export.add_argument("--out", required=True, help="output folder (must not exist unless --force)")
    export.add_argument("--frames", type=FRAMES, default=32, help="frames of the example input used for tracing and validation")
    export.add_argument("--preset", action="append", default=None, help="merge preset(s) to build outer-merge graphs for (repeatable; default: all paper presets)")
    export.add_argument("--opset", type=int_flag(MIN_OPSET, MAX_OPSET), default=None)
    export.add_argument(
        "--attention",
        choices=["standard", "onnxruntime"],
        default="standard",
        help="decoder prefill attention in the graphs: standard ONNX ops (any runtime, TensorRT) or onnxruntime's "
        "fused GroupQueryAttention (flash kernels), with its MultiHeadAttention and FastGelu in the vision tower "
        "(onnxruntime only). Default: standard",
    )
    export.add_argument("--force", action="store_true", help="replace --out if it exists")
    export.add_argument("--no-validate", action="store_true", help="skip the stage-by-stage validation against PyTorch")

    engines = sub.add_parser("build-engines", help="build TensorRT engines for an export folder, on the GPU that will run them")
    engines.add_argument("export_dir", metavar="EXPORT_DIR")
    engines.add_argument("--precision", choices=["fp16", "bf16", "fp32"], default="fp16", help="model stages' precision (merge stages stay fp32; Q/DQ graphs add int8). Default: fp16")
    engines.add_argument("--plugins", choices=["aot", "jit", "none"], default="aot", help="HoliTom ops as AOT Triton plugins (TensorRT 10.9+, no Python at run time), JIT Python plugins, or none (their ONNX local functions; TensorRT < 10.9). Default: aot")
    engines.add_argument("--max-frames", type=int, default=64, help="largest frame count the engines accept (profile 1..MAX, opt 32 or less)")
    engines.add_argument("--force", action="store_true", help="rebuild engines the export already has")

    check = sub.add_parser("check-ops", help="check every operator of an export against TensorRT 10.3's ONNX operator list (JetPack 6)")
    check.add_argument("export_dir", metavar="EXPORT_DIR")

    compare = sub.add_parser("compare", help="Polygraphy comparison of each stage's TensorRT engine against onnxruntime")
    compare.add_argument("export_dir", metavar="EXPORT_DIR")
    compare.add_argument("--preset", default=None, help="outer-merge preset whose graphs to compare (default r15)")
    compare.add_argument("--frames", type=int, default=8)

    sub.add_parser("presets", help="list the merge presets")

    import importlib

    for name, module, help_text in (
        ("bench", "holitom.bench.cli", "latency benchmark: TTFT breakdown, decode speed, memory and FLOPs vs the transformers baseline"),
        ("eval", "holitom.eval.cli", "fidelity: held-out accuracy of vanilla, HoliTom and the competing methods on the generated video-QA benchmark"),
        ("calibrate", "holitom.calibration.cli", "quantize a float32 export: INT8 vision tower calibrated on videos (QDQ), weight-only INT8/INT4 decoders"),
    ):
        tool = importlib.import_module(module)  # light: no torch until a command runs
        tool.add_arguments(sub.add_parser(name, help=help_text, epilog=tool.EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


def _generation(args):
    from holitom.runtime.generation import GenerationConfig

    return GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        do_sample=args.sample,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    )


def _cmd_presets(args) -> int:
    from holitom.merge import available_preset_names
    from holitom.merge.config import get_preset

    for name in available_preset_names():
        print(f"{name:12s} {json.dumps(get_preset(name).to_dict())}")
    return 0


def _default_backend(model: str) -> str:
    # An export folder runs on onnxruntime (the edge install has no torch); a checkpoint on torch.
    from holitom.sources import MANIFEST_NAME

    return "onnxruntime" if model != "default" and (Path(model) / MANIFEST_NAME).is_file() else "torch"


def _cmd_run(args) -> int:
    from holitom.prompting import check_text
    from holitom.runtime import RuntimeConfig, load_pipeline
    from holitom.runtime.config import DEFAULT_PRESET

    check_text(args.prompt, "prompt (--prompt)")  # before anything loads
    if args.frames is None:
        args.frames = _default_frames(args.model)
    config = RuntimeConfig(
        backend=args.backend or _default_backend(args.model),
        preset=args.preset or DEFAULT_PRESET,
        inner_merge=not args.no_inner_merge,
        device=args.device,
        dtype=args.dtype,
        num_frames=args.frames,
        cuda_graph=args.cuda_graph,
    )
    generation = _generation(args)  # validate before loading anything
    # Text mode streams the answer; --json mode shows a decode progress bar on a terminal's stderr.
    stream = None if args.json else (lambda text: print(text, end="", flush=True))
    from tqdm.auto import tqdm

    with load_pipeline(args.model, config) as pipeline, tqdm(
        total=generation.max_new_tokens, desc="decode", unit="tok", disable=not (args.json and sys.stderr.isatty()), leave=False
    ) as bar:
        result = pipeline.run(
            args.video,
            args.prompt,
            args.frames,
            generation,
            chat_template=not args.no_chat_template,
            on_text=stream,
            progress=lambda n: bar.update(n - bar.n),
        )
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print()
        t = result.tokens
        print(
            f"[{result.backend} {result.preset}] visual tokens {t.visual_in} (tower) -> {t.after_outer} (LLM, newline included) -> {t.after_inner} (inner merge); "
            f"TTFT {result.timings_ms['ttft']:.1f} ms; "
            + (f"decode {result.decode_tokens_per_s:.1f} tok/s" if result.decode_tokens_per_s else "no decode steps"),
            file=sys.stderr,
        )
    return 0


def _default_frames(model: str) -> int:
    """Frames to sample when --frames is not given: what the embedded model was trained on, else the runtime's default."""
    from holitom.default_model import DEFAULT_MODEL_NAME

    if model == DEFAULT_MODEL_NAME:
        from holitom.eval.videoqa import NUM_FRAMES

        return NUM_FRAMES
    from holitom.runtime.config import DEFAULT_FRAMES

    return DEFAULT_FRAMES


# The demo's clip and question: an item of the benchmark's held-out split, chosen among those the shipped
# model answers right with and without HoliTom (README, "Fidelity": HoliTom r=0.10 keeps about half of its answers).
DEMO_ITEM = ("test", 17)  # "Does the yellow circle appear or disappear?"


def _cmd_demo(args) -> int:
    from holitom.default_model import DEFAULT_MODEL_NAME, default_model_training
    from holitom.eval.videoqa import is_correct, make_item, write_clip
    from holitom.runtime import RuntimeConfig, load_pipeline
    from holitom.runtime.config import DEFAULT_PRESET
    from holitom.runtime.generation import GenerationConfig

    preset = args.preset or DEFAULT_PRESET
    if args.frames is None:
        args.frames = _default_frames(DEFAULT_MODEL_NAME)
    generation = GenerationConfig(max_new_tokens=args.max_new_tokens)
    item = make_item(*DEMO_ITEM)
    # Every config is built (validated) before the clip is generated: nothing is allocated for a refused run.
    configs = [RuntimeConfig(backend=args.backend, preset=name, num_frames=args.frames) for name in ("none", preset)]
    results = []
    with tempfile.TemporaryDirectory(prefix="holitom-demo-") as tmp:
        clip = write_clip(item, tmp)
        for config in configs:
            with load_pipeline("default", config) as pipeline:
                pipeline.run(clip, item.prompt, args.frames, GenerationConfig(max_new_tokens=2))  # warm-up
                results.append(pipeline.run(clip, item.prompt, args.frames, generation))
    training = default_model_training()
    val_accuracy = None if training is None else training["val_accuracy"]
    if args.json:
        runs = [{**r.to_dict(), "correct": is_correct(item, r.answer)} for r in results]
        print(json.dumps({"item": item.item_id, "question": item.prompt, "expected": item.answer, "model_val_accuracy": val_accuracy, "runs": runs}))
        return 0
    print(f"embedded default model, generated clip {item.item_id} ({item.qtype}), {args.frames} frames, backend {args.backend}")
    if val_accuracy is not None:
        print(f"(a tiny model trained on the generated benchmark: {val_accuracy:.0%} of its validation questions right; `holitom eval` measures more)")
    print(f"question: {item.prompt}")
    print(f"expected answer: {item.reply}")
    for r in results:
        t = r.tokens
        label = "vanilla" if r.preset == "none" else f"HoliTom {r.preset}"
        verdict = "correct" if is_correct(item, r.answer) else "WRONG"
        print(f"\n{label}:\n  answer: {r.answer!r} ({verdict})")
        # visual_in counts the tower's tokens; the LLM's also hold the newline token(s) LLaVA-OneVision appends
        print(f"  visual tokens: {t.visual_in} from the tower -> {t.after_outer} entering the LLM (newline included) -> {t.after_inner} after the inner merge")
        print(f"  TTFT {r.timings_ms['ttft']:.1f} ms (vision {r.timings_ms['vision']:.1f}, merge {r.timings_ms.get('merge', 0):.1f}, prefill {r.timings_ms['prefill']:.1f})")
    base, fast = results
    print(f"\nTTFT speed-up: {base.timings_ms['ttft'] / fast.timings_ms['ttft']:.2f}x (the default model is tiny: most time is in the vision tower)")
    return 0


def _cmd_export(args) -> int:
    require_extra("export", "holitom export")
    from holitom.export import ExportConfig, export_model
    from holitom.runtime.validate import validate_export

    config = ExportConfig(
        num_frames=args.frames,
        presets=tuple(args.preset) if args.preset else None,
        opset=args.opset,
        attention=args.attention,
        force=args.force,
    )
    result = export_model(args.model, args.out, config, validator=None if args.no_validate else validate_export)
    print(result.summary())
    return 0


def _cmd_build_engines(args) -> int:
    from holitom.export.engines import ProfileConfig, build_engines

    profile = ProfileConfig(opt_frames=min(ProfileConfig.opt_frames, args.max_frames), max_frames=args.max_frames)
    manifest = build_engines(args.export_dir, precision=args.precision, plugins=args.plugins, config=profile, force=args.force)
    t = manifest.engines.target
    print(f"built {len(manifest.engines.files)} engines in {args.export_dir} for TensorRT {t.tensorrt_version} on {t.device_name} (sm {t.compute_capability})")
    return 0


def _cmd_check_ops(args) -> int:
    require_extra("export", "holitom check-ops")
    from holitom.export.trt_ops import OperatorTable, check_export, format_reports

    table = OperatorTable.load()
    reports = check_export(args.export_dir, table)
    print(format_reports(reports, table))
    return 0 if all(r.ok for r in reports) else 1


def _cmd_compare(args) -> int:
    from holitom.runtime.backends.tensorrt.compare import compare_engines

    return 0 if compare_engines(args.export_dir, args.preset, args.frames) else 1


def _cmd_bench(args) -> int:
    require_extra("bench", "holitom bench")
    from holitom.bench.cli import run_from_args

    return run_from_args(args)


def _cmd_eval(args) -> int:
    require_extra("export", "holitom eval")
    from holitom.eval.cli import run_from_args

    return run_from_args(args)


def _cmd_calibrate(args) -> int:
    require_extra("calibrate", "holitom calibrate")
    from holitom.calibration.cli import run_from_args

    return run_from_args(args)


COMMANDS = {
    "run": _cmd_run,
    "demo": _cmd_demo,
    "export": _cmd_export,
    "build-engines": _cmd_build_engines,
    "check-ops": _cmd_check_ops,
    "compare": _cmd_compare,
    "presets": _cmd_presets,
    "bench": _cmd_bench,
    "eval": _cmd_eval,
    "calibrate": _cmd_calibrate,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from holitom import __version__

        print(__version__)
        return 0
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    return run_reporting_errors(f"holitom {args.command}", lambda: COMMANDS[args.command](args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
