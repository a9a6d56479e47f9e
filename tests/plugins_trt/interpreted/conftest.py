"""The kernel tests of this folder run on CPU tensors through Triton's interpreter.

``triton.jit`` reads ``TRITON_INTERPRET`` when a function is decorated, and
triton decorates its own ``triton.language`` helpers when it is first imported,
so the variable must be set before the process imports triton at all. These
tests therefore run in a process of their own that starts with it set:
``tests/plugins_trt/test_interpreted_kernels.py`` launches
``TRITON_INTERPRET=1 python -m pytest tests/plugins_trt/interpreted`` as a
subprocess (run that command directly to see each test). A pytest process
without the variable skips collecting this folder, so the variable never leaks
into the rest of the suite and the rest of the suite never imports triton here.

``poisoned`` makes every buffer the launchers allocate (outputs and scratch)
start as garbage, in two patterns: an element no kernel writes then differs
from the reference in at least one of them.
"""

from __future__ import annotations

import os

import pytest
import torch

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
collect_ignore_glob = [] if INTERPRETED else ["test_*.py"]


@pytest.fixture(scope="session")
def kernels():
    """:mod:`holitom.plugins_trt.kernels`, imported in this interpreted process."""
    from holitom.plugins_trt import kernels

    return kernels


POISONS = {
    # pattern: (float fill, integer fill, bool fill)
    "nan-high": (float("nan"), 123_456_789, True),
    "inf-low": (float("-inf"), -987_654_321, False),
}


@pytest.fixture(params=sorted(POISONS))
def poisoned(request, kernels, monkeypatch):
    """The kernels with every buffer they allocate filled with a poison pattern first."""
    float_fill, int_fill, bool_fill = POISONS[request.param]

    def empty(shape, dtype, device):
        out = torch.empty(shape, dtype=dtype, device=device)
        if dtype.is_floating_point:
            return out.fill_(float_fill)
        return out.fill_(bool_fill if dtype == torch.bool else int_fill)

    monkeypatch.setattr(kernels, "_empty", empty)
    return kernels
