"""Ranges of the numbers users pass, defined once for the configs and the command line.

The configs (runtime, export, generation, benchmark) validate with these, and the
CLI checks flags against the same ranges while parsing, before anything is
loaded or allocated, so a refused flag costs no model load and the message names
the flag. Import-light: no torch.
"""

from __future__ import annotations

import re

from holitom.errors import ConfigError

# Frames sampled from one video: the exported graphs and the memory of every stage scale with it.
MIN_FRAMES, MAX_FRAMES = 1, 512
# Seeds feed torch.Generator.manual_seed and numpy's PCG64, which take 64-bit values.
MIN_SEED, MAX_SEED = 0, 2**63 - 1
# Vocabularies of released video LLMs stay below 300k ids; 2**20 leaves room and refuses typos
# (2e9 ids x 3584 wide would be 7 TB of embedding) before anything is allocated.
MAX_VOCAB_SIZE = 2**20
# Devices the torch and onnxruntime backends run on.
DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?")


def check_int(value: object, name: str, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``low..high`` (``high`` None: no upper bound), else ConfigError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f">= {low}" + (f" and <= {high}" if high is not None else "")
        raise ConfigError(f"{name} must be an integer {bound}, got {value!r}.")
    return value


def check_device(device: object, name: str = "device") -> str:
    """'cpu', 'cuda' or 'cuda:N' (what the backends run on; 'meta' and others hold no data)."""
    if not isinstance(device, str) or not DEVICE_PATTERN.fullmatch(device):
        raise ConfigError(f"{name} {device!r} is not supported; use 'cpu' or 'cuda' (optionally 'cuda:N').")
    return device


__all__ = ["DEVICE_PATTERN", "MAX_FRAMES", "MAX_SEED", "MAX_VOCAB_SIZE", "MIN_FRAMES", "MIN_SEED", "check_device", "check_int"]
