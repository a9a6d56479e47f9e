"""What to calibrate and how: one validated config; the CLI flags only fill it in.

Precisions are per graph kind. The vision encoder takes static INT8 (activations
calibrated on video frames, Q/DQ nodes placed for TensorRT's explicit
quantization); the decoder graphs take weight-only INT8 or INT4 (block-wise,
onnxruntime's MatMulNBits). Every other graph (token embedding, the merge graphs)
stays float32: the merges select tokens, and an embedding lookup has no matmul
to quantize.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from holitom import contracts as C
from holitom.errors import ConfigError
from holitom.limits import MAX_FRAMES, MIN_FRAMES, check_int

FLOAT32 = "float32"
INT8 = "int8"
INT4 = "int4"
DECODER_STAGES = (C.DECODER_HEAD, C.DECODER_TAIL, C.DECODE_STEP)
# Graph -> precisions it can take (the first is the float32 it was exported in).
PRECISIONS: dict[str, tuple[str, ...]] = {
    C.VISION: (FLOAT32, INT8),
    C.EMBED: (FLOAT32,),
    **{stage: (FLOAT32, INT8, INT4) for stage in DECODER_STAGES},
}

# Activation calibration methods (onnxruntime.quantization.CalibrationMethod member names).
METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
# Chosen by measurement (scripts/bench_calibration.py --model DEFAULT_EXPORT --clips 3 --methods minmax,entropy,percentile
# --scores float32,int8): on the default model percentile kept features at cosine 0.992 and 81.6% of the kept tokens,
# against 0.975 / 76.5% for minmax and 0.976 / 77.1% for entropy; windows were identical for all three. Again with
# MatMul outputs left float (2026-12-04, AVX-512 VNNI CPU, `--model default --frames 8 --clips 4`): percentile
# 0.99966 / 96.4%, entropy 0.99952 / 95.7%, minmax 0.99843 / 93.5%.
DEFAULT_METHOD = "percentile"
# Where the vision tower's last-layer attention scores (HoliTom's top-k input) are computed:
# "float32" keeps that score path out of INT8 (nodes_to_exclude), "int8" quantizes it like the rest.
# Measured in the same run: float32 scores gave attention cosine 0.996 / 0.989 / 0.989 (percentile / minmax /
# entropy) against 0.995 / 0.977 / 0.982 with int8 scores, and equal or higher kept-token overlap each time.
SCORE_PRECISIONS = (FLOAT32, INT8)
DEFAULT_SCORE_PRECISION = FLOAT32
ACTIVATION_TYPES = ("int8", "uint8")
# Vision weights in 8 bits, or 7 (onnxruntime's reduce_range: still int8 symmetric, so still a TensorRT input).
# x86 CPUs without VNNI multiply uint8 x int8 pairs into int16 sums (onnxruntime rewrites int8 activations to
# uint8 there), which saturate with 8-bit weights: scripts/profile_vision_int8.py at SigLIP-so400m's width measured
# features cosine 0.977 (int8 activations) / 0.982 (uint8) with 8-bit weights against 0.999 with 7-bit, same speed.
WEIGHT_BITS = (8, 7)
DEFAULT_WEIGHT_BITS = 7
# MatMulNBits block sizes onnxruntime implements.
BLOCK_SIZES = (16, 32, 64, 128, 256)
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".gif", ".mpg", ".mpeg", ".ts")


@dataclass(frozen=True)
class CalibrationConfig:
    """How to quantize an export folder.

    ``videos``: a folder of video files (searched recursively) whose frames feed the
    calibration, sampled ``frames_per_clip`` per video exactly as ``holitom run``
    samples them; at most ``calibration_frames`` frames in all (whole clips).
    """

    videos: Path
    calibration_frames: int = 64
    frames_per_clip: int = 8
    method: str = DEFAULT_METHOD
    vision: str = INT8
    decoder: str = INT8
    block_size: int = 32
    score_precision: str = DEFAULT_SCORE_PRECISION
    activations: str = "int8"  # "uint8": faster on CPUs without VNNI, not a TensorRT input (holitom.calibration.quantize.ACTIVATIONS)
    weight_bits: int = DEFAULT_WEIGHT_BITS
    preset: str | None = None  # preset the report's decision and answer agreement use (default: r10, else the export's first)
    report_tokens: int = 8  # greedy tokens compared end to end per clip
    progress: bool = True
    precisions: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        check_int(self.calibration_frames, "calibration_frames (--calibration-frames)", 1)
        check_int(self.frames_per_clip, "frames_per_clip (--frames)", MIN_FRAMES, MAX_FRAMES)
        check_int(self.report_tokens, "report_tokens", 1)
        if self.method not in METHODS:
            raise ConfigError(f"unknown calibration method {self.method!r}; choose one of {list(METHODS)}.")
        if self.block_size not in BLOCK_SIZES:
            raise ConfigError(f"block size {self.block_size} is not one onnxruntime's MatMulNBits implements; choose one of {list(BLOCK_SIZES)}.")
        if self.score_precision not in SCORE_PRECISIONS:
            raise ConfigError(f"score precision {self.score_precision!r} is not one of {list(SCORE_PRECISIONS)}.")
        if self.weight_bits not in WEIGHT_BITS:
            raise ConfigError(f"vision weight bits {self.weight_bits!r} is not one of {list(WEIGHT_BITS)}.")
        if self.activations not in ACTIVATION_TYPES:
            raise ConfigError(f"activation type {self.activations!r} is not one of {list(ACTIVATION_TYPES)}.")
        wanted = {C.VISION: self.vision, **{stage: self.decoder for stage in DECODER_STAGES}}
        for stage, precision in wanted.items():
            check_precision(stage, precision)
        if all(p == FLOAT32 for p in wanted.values()):
            raise ConfigError("every graph would stay float32: ask for --vision int8 and/or --decoder int8|int4.")
        object.__setattr__(self, "precisions", {stage: wanted.get(stage, FLOAT32) for stage in PRECISIONS})

    @property
    def num_clips(self) -> int:
        """Clips needed for ``calibration_frames`` frames (whole clips: the report needs whole videos)."""
        return -(-self.calibration_frames // self.frames_per_clip)


def check_precision(stage: str, precision: str) -> str:
    """``precision`` if graph ``stage`` can take it, else ConfigError naming what it can take."""
    allowed = PRECISIONS.get(stage, (FLOAT32,))
    if precision not in allowed:
        raise ConfigError(f"the {stage} graph cannot be quantized to {precision!r}; it takes {list(allowed)}.")
    return precision


def precision_label(quantization: dict | None) -> str:
    """A short name of an export's precision for tables: ``float32``, ``int8`` (every quantized graph int8), or
    ``VISION+DECODER`` when they differ (``int8+int4``: INT8 vision tower, INT4 decoders)."""
    if not quantization:
        return FLOAT32
    graphs = quantization["graphs"]
    vision, decoder = (graphs.get(stage, {}).get("precision", FLOAT32) for stage in (C.VISION, C.DECODER_HEAD))
    return vision if vision == decoder else f"{vision}+{decoder}"
