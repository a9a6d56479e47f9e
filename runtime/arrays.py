"""The array type a backend's runners exchange, and the few operations the pipeline does on it.

The pipeline's own arithmetic is small (token ids and positions, splicing the
visual tokens into the prompt, slicing the attention row, handing logits to
the token selector), so it is written once against this interface:
:class:`NumpyArrays` for the edge runtime (onnxruntime over an export folder:
no torch anywhere), :class:`TorchArrays` for the backends whose runners take
torch tensors on a device (torch, tensorrt).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


class NumpyArrays:
    """Host numpy arrays; nothing to move and nothing to wait for."""

    def int64(self, data) -> np.ndarray:
        return np.asarray(data, dtype=np.int64)

    def concat(self, parts: Sequence[np.ndarray], axis: int) -> np.ndarray:
        return np.concatenate(parts, axis=axis)

    def contiguous(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array)

    def like(self, array: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """``array`` in the dtype of ``reference``."""
        return array.astype(reference.dtype, copy=False)

    def to_device(self, array):
        return array

    def to_host(self, array) -> np.ndarray:
        return np.asarray(array)

    def synchronize(self) -> None:
        pass


class TorchArrays:
    """torch tensors on ``device``; floating inputs take ``dtype`` (the model's compute dtype)."""

    def __init__(self, device: Any = "cpu", dtype: Any = None):
        import torch

        self._torch = torch
        self.device = torch.device(device)
        self.dtype = torch.float32 if dtype is None else dtype

    def int64(self, data):
        return self._torch.tensor(data, dtype=self._torch.int64, device=self.device)

    def concat(self, parts, axis: int):
        return self._torch.cat(list(parts), dim=axis)

    def contiguous(self, tensor):
        return tensor.contiguous()

    def like(self, tensor, reference):
        return tensor.to(reference.dtype)

    def to_device(self, array):
        tensor = array if isinstance(array, self._torch.Tensor) else self._torch.from_numpy(np.ascontiguousarray(array))
        dtype = self.dtype if tensor.is_floating_point() else tensor.dtype
        return tensor.to(self.device, dtype=dtype, non_blocking=True)

    def to_host(self, tensor) -> np.ndarray:
        # float32 on the host: numpy has no bfloat16, and the token selector reads float32 logits.
        return tensor.detach().to("cpu", self._torch.float32 if tensor.is_floating_point() else tensor.dtype).numpy()

    def synchronize(self) -> None:
        # The one deliberate host sync of the pipeline, used only to read timers.
        if self.device.type == "cuda":
            self._torch.cuda.synchronize(self.device)


__all__ = ["NumpyArrays", "TorchArrays"]
