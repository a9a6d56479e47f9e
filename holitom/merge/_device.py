"""Which implementation runs a merge op: the one dispatch on device.

On CUDA tensors the merge ops run the Triton kernels of
:mod:`holitom.plugins_trt.kernels` (the same kernels the TensorRT plugins
launch); everywhere else they run the torch code of this package, which is also
the oracle the kernels are tested against. The hooks are single calls in
``temporal._stage1_device``, ``dpc._dpc_core`` and ``inner``'s plan / apply.

:func:`use_kernels` overrides that choice for the scope of a ``with`` block (a
context variable, so nothing leaks past it): ``use_kernels()`` routes CPU
tensors to the kernels too (their launchers use it to run this package's code
around their kernels; tests use it to run the kernels through Triton's CPU
interpreter, ``TRITON_INTERPRET=1``), ``use_kernels(False)`` keeps CUDA tensors
on the torch code (the benchmark's reference rows).

Triton is imported only when a kernel is first needed (``import holitom.merge``
stays torch-only); a missing one raises :class:`MissingDependencyError`.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from types import ModuleType
from typing import Iterator

import torch

# None: by device (CUDA -> kernels); True / False: inside use_kernels(enabled).
_OVERRIDE: ContextVar[bool | None] = ContextVar("holitom_merge_use_kernels", default=None)


def kernels_for(tensor: torch.Tensor) -> ModuleType | None:
    """:mod:`holitom.plugins_trt.kernels` for a CUDA tensor (or as :func:`use_kernels` says), else None."""
    override = _OVERRIDE.get()
    if not (tensor.device.type == "cuda" if override is None else override):
        return None
    from holitom.plugins_trt import kernels

    return kernels


@contextmanager
def use_kernels(enabled: bool = True) -> Iterator[None]:
    """Inside this block, run the merge ops' Triton kernels (``enabled``) or the torch code, whatever the device."""
    token = _OVERRIDE.set(bool(enabled))
    try:
        yield
    finally:
        _OVERRIDE.reset(token)


__all__ = ["kernels_for", "use_kernels"]
