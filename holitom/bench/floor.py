"""Distance to the physical floor: how far each row's time is from what the hardware's matmuls allow.

The floor of a stage is its counted matmul FLOPs (what ran, 2 per multiply-add,
:mod:`holitom.flops`) divided by the device's matmul rate, measured once per
benchmark run on the benchmark's device, dtype and thread count with one GEMM at
the model's width (on a GPU, at the largest side: :func:`gemm_side`). A row's ``x floor`` is its measured time over that floor: 1.0
would be a stage that only ran matmuls, at the rate of one large GEMM.

- vision: the vision stage's counted FLOPs (tower + projector, the key-score pass included);
- prefill: the decoder prefill's counted FLOPs (every layer on the prompt that ran, lm_head);
- TTFT: the sum of both. Video decoding and the merge count no matmul FLOPs, so their
  time is all above the floor.

The counter counts attention over the full ``S x S`` square, causal or not (torch's
FlopCounterMode convention); a causal kernel that skips the masked half does less
work, so at long prompts a prefill may come in under its floor by up to that half.

Torch is imported only by :func:`measure_matmul_rate`.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from holitom.errors import ConfigError

# GEMM sides: the model's width rounded up to a multiple of 64, within these bounds (a tiny
# width measures launch latency, not the matmul rate; a huge one only costs time).
GEMM_ALIGN = 64
GEMM_MIN_SIDE = 512
GEMM_MAX_SIDE = 4096
RATE_WARMUP = 2
RATE_REPEATS = 5
FLOOR_STAGES = ("vision", "prefill")
NO_FLOPS_REASON = "no floor: FLOPs were not counted (--no-flops); the floor is counted FLOPs / the measured matmul rate"


def gemm_side(width: int, device: str = "cpu") -> int:
    """The side of the square GEMM that measures the rate for a model of this width on ``device``.

    A GPU takes the largest side whatever the width: a GEMM at a small width only times its launch there
    (H200, bfloat16: 39 TFLOP/s at 896^3 against 675 at 3584^3), while the prefill's matmuls, thousands of
    rows long, fill the device (floors from the 896 figure came out below the measured times).
    """
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ConfigError(f"gemm_side: width must be an int >= 1, got {width!r}.")
    if not device.startswith("cpu"):
        return GEMM_MAX_SIDE
    aligned = -(-width // GEMM_ALIGN) * GEMM_ALIGN
    return min(max(aligned, GEMM_MIN_SIDE), GEMM_MAX_SIDE)


@dataclass(frozen=True)
class MatmulRate:
    """One measurement of the device's matmul rate.

    Attributes:
        flops_per_s: ``2 * side^3`` over the median time of one ``(side, side) @ (side, side)`` product.
        side: the GEMM side; device, dtype, threads: where it ran.
        seconds: every timed product (after ``warmup`` untimed ones).
    """

    flops_per_s: float
    side: int
    device: str
    dtype: str
    threads: int | None
    warmup: int
    seconds: tuple[float, ...]

    def describe(self) -> str:
        threads = "" if self.threads is None else f", {self.threads} threads"
        return (
            f"measured matmul rate {self.flops_per_s / 1e12:.3g} TFLOP/s ({self.dtype} {self.side}^3 GEMM on "
            f"{self.device}{threads}, median of {len(self.seconds)} after {self.warmup} warm-up)"
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["seconds"] = list(self.seconds)
        out["method"] = "median wall time of a square GEMM, device synchronised around each on CUDA"
        return out


def measure_matmul_rate(
    device: str,
    dtype: str,
    side: int,
    repeats: int = RATE_REPEATS,
    warmup: int = RATE_WARMUP,
    clock: Callable[[], float] = time.perf_counter,
    sync: Callable[[], None] | None = None,
) -> MatmulRate:
    """Time ``(side, side) @ (side, side)`` in ``dtype`` on ``device``: the median of ``repeats`` after ``warmup``.

    Runs with torch's current thread count (the benchmark sets it before calling).
    ``clock`` and ``sync`` default to ``time.perf_counter`` and, on CUDA, a device
    synchronisation; tests pass their own.
    """
    import torch

    from holitom.bench.subjects import _synchronizer
    from holitom.limits import check_device, check_dtype, check_int
    from holitom.models.loading import TORCH_DTYPES

    where = torch.device(check_device(device, "matmul rate device"))
    torch_dtype = TORCH_DTYPES[check_dtype(dtype)]
    check_int(repeats, "matmul rate repeats", 1)
    check_int(warmup, "matmul rate warm-up", 0)
    sync = sync or _synchronizer(where)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(side, side, generator=generator).to(where, torch_dtype)  # (side, side)
    b = torch.randn(side, side, generator=generator).to(where, torch_dtype)
    out = torch.empty(side, side, device=where, dtype=torch_dtype)
    seconds = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            sync()
            start = clock()
            torch.mm(a, b, out=out)
            sync()
            elapsed = clock() - start
            if i >= warmup:
                seconds.append(elapsed)
    median = statistics.median(seconds)
    if median <= 0:
        raise ConfigError(f"the matmul rate measurement read a median of {median} s; the clock does not advance.")
    return MatmulRate(
        flops_per_s=2 * side**3 / median,
        side=side,
        device=device,
        dtype=dtype,
        threads=torch.get_num_threads() if where.type == "cpu" else None,
        warmup=warmup,
        seconds=tuple(seconds),
    )


def row_floor(timings_ms: dict[str, float], flops: dict[str, int | None], rate: float | None, reason: str | None = None) -> dict[str, Any]:
    """A row's floor block: per stage (``vision``, ``prefill``, ``ttft``) its floor in ms and measured / floor.

    Args:
        timings_ms: the row's measured ``vision``, ``prefill`` and ``ttft``.
        flops: counted FLOPs per floor stage (``vision``, ``prefill``); None where not counted.
        rate: the matmul rate in FLOP/s; None when it was not measured.
        reason: why there is no floor, when the caller knows (``--no-flops``).
    """
    stages = {name: flops.get(name) for name in FLOOR_STAGES}
    if reason is None and rate is None:
        reason = "no floor: the matmul rate was not measured"
    if reason is None and any(value is None for value in stages.values()):
        missing = [name for name, value in stages.items() if value is None]
        reason = f"no floor: the {' and '.join(missing)} FLOPs were not counted for this row"
    if reason is not None:
        return {"flops": stages, "floor_ms": None, "x_floor": None, "reason": reason}
    floor_ms = {name: 1e3 * value / rate for name, value in stages.items()}
    floor_ms["ttft"] = sum(floor_ms[name] for name in FLOOR_STAGES)
    x_floor = {name: (timings_ms[name] / ms if ms > 0 else None) for name, ms in floor_ms.items()}
    return {"flops": stages, "floor_ms": floor_ms, "x_floor": x_floor, "reason": None}


__all__ = [
    "FLOOR_STAGES",
    "GEMM_MAX_SIDE",
    "GEMM_MIN_SIDE",
    "NO_FLOPS_REASON",
    "MatmulRate",
    "gemm_side",
    "measure_matmul_rate",
    "row_floor",
]
