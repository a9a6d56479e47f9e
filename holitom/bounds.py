"""Enumerations and bounds that several configs and commands share, with their validators, defined once.

Import-light (no torch): the CLI parses arguments with these before loading anything.
"""

from __future__ import annotations

from holitom.errors import ConfigError

DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16")  # compute dtypes a model may run in
FRAMES_RANGE = (1, 512)  # frames sampled from one video
DEFAULT_OPSET = 18  # ONNX Runtime >= 1.14, TensorRT 10
# 18 is the floor: torch.onnx's exporter writes opset-18 operator forms (ReduceMax's noop_with_empty_axes)
# even when asked for 17, so a 17 graph fails onnx.checker; TensorRT 10 (JetPack 6: 10.3) reads 18.
OPSET_RANGE = (18, 23)


def check_int_range(name: str, value: object, bounds: tuple[int, int]) -> int:
    """``value`` must be an int (not a bool) in ``bounds`` (inclusive); ConfigError naming ``name`` otherwise."""
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer in {low}..{high}; got {name}={value!r}.")
    return value


def check_frames(name: str, value: object) -> int:
    return check_int_range(name, value, FRAMES_RANGE)


def check_dtype(name: str, value: object) -> str:
    if value not in DTYPES:
        raise ConfigError(f"{name} {value!r} is not one of {list(DTYPES)}.")
    return str(value)


def check_opset(name: str, value: object) -> int:
    return check_int_range(name, value, OPSET_RANGE)


__all__ = ["DEFAULT_OPSET", "DTYPES", "FRAMES_RANGE", "OPSET_RANGE", "check_dtype", "check_frames", "check_int_range", "check_opset"]
