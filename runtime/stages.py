"""A backend's set of stage runners plus what the pipeline needs to drive them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from holitom import contracts as C
from holitom.contracts import ModelDims
from holitom.errors import BackendError
from holitom.runtime.base import Runner


@dataclass
class StageSet:
    """Everything one backend built for a model: runners keyed by stage name, tokenizer, preprocessor.

    ``inner_merge_enabled`` says whether the pipeline calls the inner-merge stage
    (the decoder is always split at ``dims.inner_layer``; without the inner merge
    the tail simply sees every token). ``arrays`` is the runners' array type
    (:mod:`holitom.runtime.arrays`): numpy for onnxruntime, torch tensors on a
    device for the torch and tensorrt backends.
    """

    backend: str
    preset: str
    runners: dict[str, Runner]
    dims: ModelDims
    tokenizer: Any
    preprocessor: Callable
    video_token_id: int
    stop_token_ids: tuple[int, ...]
    inner_merge_enabled: bool
    context_length: int  # positions the decoder takes: prompt plus generated tokens
    arrays: Any  # NumpyArrays | TorchArrays

    def __post_init__(self):
        required = [s for s in C.STAGE_ORDER if s != C.INNER_MERGE or self.inner_merge_enabled]
        missing = [s for s in required if s not in self.runners]
        if missing:
            raise BackendError(f"backend '{self.backend}' built no runner for stages {missing}.")

    def activate(self) -> None:
        for runner in self.runners.values():
            runner.activate()

    def deactivate(self) -> None:
        for runner in self.runners.values():
            runner.deactivate()

    def to_device(self, array):
        """Move to the runners' device; floating arrays also take the compute dtype."""
        return self.arrays.to_device(array)

    def synchronize(self) -> None:
        self.arrays.synchronize()
