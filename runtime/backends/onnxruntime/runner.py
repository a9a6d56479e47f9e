"""A runner over one onnxruntime InferenceSession: numpy arrays in and out (no torch)."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from holitom.runtime.base import Runner


class OnnxrtRunner(Runner):
    """Feeds numpy arrays to a session and returns numpy arrays.

    ``session_loader`` is a lazy callable returning an ``onnxruntime.InferenceSession``:
    nothing is loaded until :meth:`activate`. A torch tensor in the feed (the export
    validator's reference inputs) is read through numpy without a copy on the CPU.
    """

    backend = "onnxruntime"

    def __init__(self, spec, session_loader, check_inputs: bool = True):
        super().__init__(spec, check_inputs)
        self._load = session_loader
        self.session = None
        self._input_names: set[str] = set()

    def _activate(self) -> None:
        self.session = self._load()
        self._input_names = {i.name for i in self.session.get_inputs()}

    def _deactivate(self) -> None:
        self.session = None

    def _infer(self, feed: Mapping) -> dict:
        # Inputs the graph dropped as unused (e.g. a constant-folded position) are not fed.
        arrays = {name: _to_numpy(value) for name, value in feed.items() if name in self._input_names}
        names = self.spec.output_names
        return dict(zip(names, self.session.run(names, arrays)))


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; torch itself is not imported here
        value = value.detach().cpu().contiguous().numpy()
    return np.ascontiguousarray(value)
