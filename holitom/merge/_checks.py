"""Input checks shared by the merge stages (typed errors, never ``assert``).

Shape and dtype checks are free (host metadata). Finiteness needs the values: on
CUDA that is a device sync, so stage I folds the features' finiteness flag into
the one copy it makes for the DP anyway (``temporal.plan_temporal``), and the
entry points that check finiteness say so in their docstrings.
"""

from __future__ import annotations

import torch

from holitom.errors import InputError

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_tensor(name: str, x: object, ndim: int | tuple[int, ...], *, floating: bool = True) -> torch.Tensor:
    """``x`` must be a torch tensor of rank ``ndim`` (one of them, if a tuple) and a float dtype."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    ranks = (ndim,) if isinstance(ndim, int) else ndim
    if x.dim() not in ranks:
        raise InputError(f"{name} must have rank {' or '.join(map(str, ranks))}, got shape {tuple(x.shape)}.")
    if floating and x.dtype not in FLOAT_DTYPES:
        raise InputError(
            f"{name} must be float32, float16, bfloat16 or float64, got {x.dtype}; convert it with .float()."
        )
    return x


def all_finite(x: torch.Tensor) -> bool:
    """Whether every value of ``x`` is finite (one device sync on CUDA).

    A finite sum proves it (an Inf or NaN anywhere makes the sum Inf or NaN) in
    one read of ``x``; ``isfinite(x).all()`` makes three (measured 9 ms against
    0.3 ms for a 1000 x 3584 float32 tensor on 2 CPU cores). Only when the sum
    is not finite, which large finite values can also cause, does the exact
    element-wise test decide.
    """
    total = x.sum(dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)  # float32 accumulation for half types
    return bool(torch.isfinite(total)) or bool(torch.isfinite(x).all())


def check_finite(name: str, x: torch.Tensor) -> None:
    """Raise InputError if ``x`` holds NaN or Inf (one device sync on CUDA)."""
    if not all_finite(x):
        raise InputError(f"{name} holds NaN or Inf values; the merge needs finite inputs.")


def is_index(value: object) -> bool:
    """A Python int (not bool) or a ``torch.SymInt`` (what sizes become under ``torch.export``)."""
    return isinstance(value, (int, torch.SymInt)) and not isinstance(value, bool)


def check_span(name: str, span: object, length: int) -> tuple[int, int]:
    """``span`` must be a ``(start, end)`` pair of ints with ``0 <= start <= end <= length``."""
    if not isinstance(span, (tuple, list)) or len(span) != 2 or not all(is_index(v) for v in span):
        raise InputError(f"{name} must be a (start, end) pair of ints, got {span!r}.")
    start, end = span
    if not 0 <= start <= end <= length:
        raise InputError(f"{name} {tuple(span)} must satisfy 0 <= start <= end <= S = {length}.")
    return start, end


def raise_non_finite(name: str) -> None:
    raise InputError(f"{name} holds NaN or Inf values (or values so large that their squared norm overflows float32).")
