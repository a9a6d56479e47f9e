"""Ranges of the numbers users pass, defined once for the configs and the command line.

The configs (runtime, export, generation, benchmark) validate with these, and the
CLI checks flags against the same ranges while parsing, before anything is
loaded or allocated, so a refused flag costs no model load and the message names
the flag. Import-light: no torch.
"""

from __future__ import annotations

import numbers
import re

from holitom.errors import ConfigError

# The paper's retain ratios r, in percent: the presets r10..r25 and every competing method at the same budgets.
PAPER_RETAIN_PERCENTS: tuple[int, ...] = (10, 15, 20, 25)
# Frames sampled from one video: the exported graphs and the memory of every stage scale with it.
MIN_FRAMES, MAX_FRAMES = 1, 512
# Seeds feed torch.Generator.manual_seed and numpy's PCG64, which take 64-bit values.
MIN_SEED, MAX_SEED = 0, 2**63 - 1
# Vocabularies of released video LLMs stay below 300k ids; 2**20 leaves room and refuses typos
# (2e9 ids x 3584 wide would be 7 TB of embedding) before anything is allocated.
MAX_VOCAB_SIZE = 2**20
# Devices the torch and onnxruntime backends run on.
DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")
# Compute dtypes a model may run in (torch dtypes: holitom.models.loading.TORCH_DTYPES).
DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16")
# ONNX opsets of the exported graphs. 18 is the floor: torch.onnx's exporter writes opset-18
# operator forms (ReduceMax's noop_with_empty_axes) even when asked for 17, so a 17 graph fails
# onnx.checker; TensorRT 10 (JetPack 6: 10.3) reads 18. ONNX Runtime >= 1.14 runs the default.
DEFAULT_OPSET, MIN_OPSET, MAX_OPSET = 18, 18, 23


def check_int(
    value: object, name: str, low: int | None = None, high: int | None = None, error: type[Exception] = ConfigError
) -> int:
    """``value`` as an int in ``low..high`` (None: no bound on that side), else ``error`` naming ``name``.

    The one integer-field validator of the project: configs raise ConfigError, checks
    of user data (a video's size, a tensor's shape) pass ``error=InputError``. numpy
    integers are accepted (and returned as int); bools are refused.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or (low is not None and value < low)
        or (high is not None and value > high)
    ):
        bounds = [f">= {low}"] * (low is not None) + [f"<= {high}"] * (high is not None)
        raise error(f"{name} must be an integer{' ' if bounds else ''}{' and '.join(bounds)}, got {value!r}.")
    return int(value)


def check_dtype(value: object, name: str = "dtype") -> str:
    if value not in DTYPES:
        raise ConfigError(f"{name} {value!r} is not one of {list(DTYPES)}.")
    return str(value)


def check_opset(value: object, name: str = "opset") -> int:
    return check_int(value, name, MIN_OPSET, MAX_OPSET)


def check_device(device: object, name: str = "device") -> str:
    """'cpu', 'cuda' or 'cuda:N' (what the backends run on; 'meta' and others hold no data)."""
    if not isinstance(device, str) or not DEVICE_PATTERN.fullmatch(device):
        raise ConfigError(f"{name} {device!r} is not supported; use 'cpu' or 'cuda' (optionally 'cuda:N').")
    return device


__all__ = [
    "PAPER_RETAIN_PERCENTS",
    "DEFAULT_OPSET",
    "DEVICE_PATTERN",
    "DTYPES",
    "MAX_FRAMES",
    "MAX_OPSET",
    "MAX_SEED",
    "MAX_VOCAB_SIZE",
    "MIN_FRAMES",
    "MIN_OPSET",
    "MIN_SEED",
    "check_device",
    "check_dtype",
    "check_int",
    "check_opset",
]
