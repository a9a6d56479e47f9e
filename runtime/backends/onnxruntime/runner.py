"""A runner over one onnxruntime InferenceSession."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from holitom.runtime.base import Runner


class OnnxrtRunner(Runner):
    """Feeds torch tensors to a session and returns torch tensors (zero-copy on the CPU).

    ``session_loader`` is a lazy callable returning an ``onnxruntime.InferenceSession``:
    nothing is loaded until :meth:`activate`.
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
        values = self.session.run(names, arrays)
        return {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in zip(names, values)}


def _to_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().contiguous().numpy()
    return np.ascontiguousarray(value)
