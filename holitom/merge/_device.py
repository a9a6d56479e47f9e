"""Which implementation runs a merge op: the one dispatch on device.

On CUDA tensors the merge ops run the Triton kernels of
:mod:`holitom.plugins_trt.kernels` (the same kernels the TensorRT plugins
launch); everywhere else they run the torch code of this package, which is also
the oracle the kernels are tested against. The hooks are single calls in
``temporal._stage1_device``, ``dpc._dpc_core`` and ``inner``'s plan / apply.

:func:`forced_kernels` routes CPU tensors to the kernels too, for the scope of
a ``with`` block (a context variable, so nothing leaks past it): the kernels'
launchers use it to run this package's code around their kernels, and tests use
it to run the kernels through Triton's CPU interpreter (``TRITON_INTERPRET=1``).

Triton is imported only when a kernel is first needed (``import holitom.merge``
stays torch-only); a missing one raises :class:`MissingDependencyError`.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from types import ModuleType
from typing import Iterator

import torch

_FORCED: ContextVar[bool] = ContextVar("holitom_merge_forced_kernels", default=False)


def kernels_for(tensor: torch.Tensor) -> ModuleType | None:
    """:mod:`holitom.plugins_trt.kernels` for a CUDA tensor (or inside :func:`forced_kernels`), else None."""
    if tensor.device.type != "cuda" and not _FORCED.get():
        return None
    from holitom.plugins_trt import kernels

    return kernels


@contextmanager
def forced_kernels() -> Iterator[None]:
    """Run the merge ops' Triton kernels whatever the tensors' device, inside this block."""
    token = _FORCED.set(True)
    try:
        yield
    finally:
        _FORCED.reset(token)


__all__ = ["forced_kernels", "kernels_for"]
