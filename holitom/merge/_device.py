"""Which implementation runs a merge op: the one dispatch on device, with a default per op.

Each merge op has a default for CUDA tensors (:data:`KERNELS_ON_CUDA`): the
outer merge's stages (``"temporal"``, ``"dpc"``) run the Triton kernels of
:mod:`holitom.plugins_trt.kernels` (the same kernels the TensorRT plugins
launch); the inner merge (``"inner"``: plan and apply) runs the torch code,
which was measured 10x faster there. Everywhere else every op runs the torch
code of this package, which is also the oracle the kernels are tested against.
The hooks are single calls in ``temporal._stage1_device``, ``dpc._dpc_core`` and
``inner``'s plan / apply.

:func:`use_kernels` overrides those defaults for every op, for the scope of a
``with`` block (a context variable, so nothing leaks past it): ``use_kernels()``
routes any tensor to the kernels (the launchers in
:mod:`holitom.plugins_trt.kernels` use it to run this package's code around
their kernels; tests use it to run the kernels through Triton's CPU
interpreter, ``TRITON_INTERPRET=1``; the benchmark times the inner merge's
kernels with it), ``use_kernels(False)`` keeps CUDA tensors on the torch code
(the benchmark's reference rows).

Triton is imported only when a kernel is first needed (``import holitom.merge``
stays torch-only); a missing one raises :class:`MissingDependencyError`.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from types import ModuleType
from typing import Iterator

import torch

# Whether each merge op runs the kernels on CUDA tensors when no use_kernels() block says otherwise.
# "inner": torch, because on an H200 (scripts/bench_kernels.py, torch 2.11 + triton 3.6, L_v = 1000,
# D = 3584, sequential, medians of 30 runs, 2026-12-04) plan + apply took 8.97 ms on the kernels
# against 0.89 ms on the torch code in bfloat16 (8.98 vs 0.95 ms in float32). The outer merge's
# stages keep the kernels: the outer merge took 4.15 ms on them against 5.34 ms on torch (bfloat16).
KERNELS_ON_CUDA: dict[str, bool] = {"temporal": True, "dpc": True, "inner": False}

# None: each op's default (KERNELS_ON_CUDA on CUDA, torch elsewhere); True / False: inside use_kernels(enabled).
_OVERRIDE: ContextVar[bool | None] = ContextVar("holitom_merge_use_kernels", default=None)


def kernels_for(tensor: torch.Tensor, op: str) -> ModuleType | None:
    """:mod:`holitom.plugins_trt.kernels` if merge op ``op`` runs its kernels on ``tensor``, else None.

    ``op`` is a key of :data:`KERNELS_ON_CUDA`; :func:`use_kernels` overrides the default.
    """
    if op not in KERNELS_ON_CUDA:
        raise KeyError(f"unknown merge op {op!r} for the kernel dispatch; one of {sorted(KERNELS_ON_CUDA)}")
    override = _OVERRIDE.get()
    if not (tensor.device.type == "cuda" and KERNELS_ON_CUDA[op] if override is None else override):
        return None
    from holitom.plugins_trt import kernels

    return kernels


@contextmanager
def use_kernels(enabled: bool = True) -> Iterator[None]:
    """Inside this block, run every merge op's Triton kernels (``enabled``) or the torch code, whatever the device."""
    token = _OVERRIDE.set(bool(enabled))
    try:
        yield
    finally:
        _OVERRIDE.reset(token)


__all__ = ["KERNELS_ON_CUDA", "kernels_for", "use_kernels"]
