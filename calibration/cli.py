"""``holitom calibrate`` flags (they only fill in :class:`~holitom.calibration.config.CalibrationConfig`)."""

from __future__ import annotations

import argparse

from holitom.calibration.config import (
    ACTIVATION_TYPES,
    BLOCK_SIZES,
    DEFAULT_METHOD,
    DEFAULT_SCORE_PRECISION,
    FLOAT32,
    INT4,
    INT8,
    METHODS,
    SCORE_PRECISIONS,
    WEIGHT_BITS,
    DEFAULT_WEIGHT_BITS,
)

EXAMPLES = """examples:
  holitom calibrate out/default-onnx --out out/default-int8 --videos clips/
  holitom calibrate out/default-onnx --out out/default-int4 --videos clips/ --decoder int4 --method minmax --calibration-frames 128
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from holitom.cli import FRAMES, int_flag

    p.add_argument(
        "export_dir",
        metavar="EXPORT_DIR",
        help="a float32 export folder (`holitom export`): made with --attention onnxruntime for onnxruntime (its INT8 "
        "vision graph runs faster), with the standard form for TensorRT",
    )
    p.add_argument("--out", required=True, help="the quantized export folder to write (must not exist unless --force)")
    p.add_argument("--videos", required=True, help="folder of calibration videos (searched recursively), like the ones the model will see")
    p.add_argument("--calibration-frames", type=int_flag(1), default=64, help="at most this many frames calibrate the vision tower (default 64)")
    p.add_argument("--frames", type=FRAMES, default=8, help="frames sampled per video, as `holitom run --frames` (default 8)")
    p.add_argument("--method", choices=list(METHODS), default=DEFAULT_METHOD, help=f"activation range calibration (default {DEFAULT_METHOD})")
    p.add_argument("--vision", choices=[INT8, FLOAT32], default=INT8, help="vision encoder precision (default int8)")
    p.add_argument("--decoder", choices=[INT8, INT4, FLOAT32], default=INT8, help="decoder graphs' weight-only precision (default int8)")
    p.add_argument("--block-size", type=int, choices=BLOCK_SIZES, default=32, help="weight-only quantization block (default 32)")
    p.add_argument("--scores", choices=list(SCORE_PRECISIONS), default=DEFAULT_SCORE_PRECISION, help="precision of the last vision layer's attention scores, HoliTom's top-k input (default float32)")
    p.add_argument("--activations", choices=list(ACTIVATION_TYPES), default="int8", help="int8 symmetric (TensorRT-ready, default) or uint8 (onnxruntime on CPUs without VNNI)")
    p.add_argument("--weight-bits", type=int, choices=list(WEIGHT_BITS), default=DEFAULT_WEIGHT_BITS, help=f"vision weight bits: 7 avoids int16 saturation on CPUs without VNNI, still int8 for TensorRT (default {DEFAULT_WEIGHT_BITS})")
    p.add_argument("--preset", default=None, help="preset of the report's decision and answer agreement (default r10 if exported)")
    p.add_argument("--force", action="store_true", help="replace --out if it is an earlier export")
    p.add_argument("--no-png", action="store_true", help="skip the report figure (calibration_report.png in --out)")


def run_from_args(args) -> int:
    from holitom.calibration.calibrate import calibrate_export
    from holitom.calibration.config import CalibrationConfig

    config = CalibrationConfig(
        videos=args.videos,
        calibration_frames=args.calibration_frames,
        frames_per_clip=args.frames,
        method=args.method,
        vision=args.vision,
        decoder=args.decoder,
        block_size=args.block_size,
        score_precision=args.scores,
        activations=args.activations,
        weight_bits=args.weight_bits,
        preset=args.preset,
    )
    result = calibrate_export(args.export_dir, args.out, config, force=args.force, png=not args.no_png)
    print(result.summary())
    return 0
