"""A runner over one TensorRT engine, through Polygraphy's ``TrtRunner`` (imported on activate)."""

from __future__ import annotations

from typing import Mapping

import torch

from holitom.runtime.base import Runner


class TensorrtRunner(Runner):
    """Feeds torch tensors on the engine's device and returns torch tensors there (no host copies).

    ``engine_loader`` is a lazy callable returning a deserialized ``trt.ICudaEngine``
    (a Polygraphy loader): nothing is loaded until :meth:`activate`. Polygraphy picks
    each input's shape within the engine's optimization profile, so the decode step
    binds its two KV groups (``past_head`` for layers < K, ``past_tail`` for the rest)
    at their own lengths on every call.
    """

    backend = "tensorrt"

    def __init__(self, spec, engine_loader, device: torch.device, check_inputs: bool = True):
        super().__init__(spec, check_inputs)
        self._load = engine_loader
        self.device = device
        self._runner = None
        self._input_names: set[str] = set()

    def _activate(self) -> None:
        from polygraphy.backend.trt import TrtRunner

        self._runner = TrtRunner(self._load(), name=self.name)
        self._runner.activate()
        self._input_names = set(self._runner.get_input_metadata().keys())

    def _deactivate(self) -> None:
        self._runner.deactivate()
        self._runner = None

    def _infer(self, feed: Mapping) -> dict:
        # Inputs the exporter dropped as unused are not engine inputs either.
        tensors = {name: value.to(self.device).contiguous() for name, value in feed.items() if name in self._input_names}
        # Polygraphy runs the engine on its own stream (and synchronizes it before returning): make that stream
        # wait for the torch work that produced the inputs, without a host sync.
        torch.cuda.ExternalStream(self._runner.stream.ptr, device=self.device).wait_stream(torch.cuda.current_stream(self.device))
        out = self._runner.infer(tensors, copy_outputs_to_host=False)
        # Polygraphy reuses its output buffers on the next call, and a KV output is fed back as an input:
        # clone so a later call never overwrites a tensor the pipeline still holds.
        return {name: out[name].clone() for name in self.spec.output_names}
