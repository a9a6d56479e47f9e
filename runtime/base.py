"""The one backend protocol of the runtime (Polygraphy-style runners).

A runner executes one pipeline stage. It is activated once (sessions built,
weights moved), called with ``infer(feed)`` any number of times with named
tensors in and out, and deactivated. Input checks against the stage contract
(:mod:`holitom.contracts`) live here in the base class, so every backend
rejects bad inputs with the same typed, descriptive error.

Interchange type: ``torch.Tensor`` on the CPU or the runner's device. The
onnxruntime runner converts to and from numpy without copies on the CPU.
"""

from __future__ import annotations

import abc
from typing import Mapping

from holitom.contracts import StageSpec
from holitom.errors import BackendError


class Runner(abc.ABC):
    """Runs one stage. Subclasses implement ``_activate``, ``_infer`` and optionally ``_deactivate``."""

    #: the backend name this runner belongs to (e.g. "torch", "onnxruntime")
    backend: str = ""

    def __init__(self, spec: StageSpec, check_inputs: bool = True):
        self.spec = spec
        self.check_inputs_enabled = check_inputs
        self.is_active = False

    @property
    def name(self) -> str:
        return f"{self.backend}:{self.spec.name}"

    def activate(self) -> "Runner":
        if not self.is_active:
            self._activate()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate()
            self.is_active = False

    def infer(self, feed: Mapping) -> dict:
        """Run the stage on ``feed`` (name -> tensor); returns name -> tensor for every declared output."""
        if not self.is_active:
            raise BackendError(f"runner {self.name} is not active; call activate() (or use it as a context manager) first.")
        if self.check_inputs_enabled:
            self.spec.check_inputs(dict(feed))
        out = self._infer(feed)
        missing = [n for n in self.spec.output_names if n not in out]
        if missing:
            raise BackendError(f"runner {self.name} did not produce outputs {missing}; this is a bug in the backend.")
        return out

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    @abc.abstractmethod
    def _activate(self) -> None: ...

    @abc.abstractmethod
    def _infer(self, feed: Mapping) -> dict: ...

    def _deactivate(self) -> None:
        pass
