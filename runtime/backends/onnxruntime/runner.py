"""A runner over one onnxruntime InferenceSession: numpy arrays in and out (no torch)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Mapping

import numpy as np

from holitom.errors import ConfigError
from holitom.runtime.base import Runner


class OnnxrtRunner(Runner):
    """Feeds numpy arrays to a session and returns numpy arrays.

    ``session_loader`` is a lazy callable returning an ``onnxruntime.InferenceSession``:
    nothing is loaded until :meth:`activate`. With ``output_shapes`` (feed -> {output: shape}) the
    runner binds its inputs and outputs (IO binding) and writes every output into buffers it keeps
    and reuses, so a call returns arrays that stay valid until the call after next. With ``chunk`` the
    inputs are fed ``chunk`` rows (axis 0) at a time and the outputs concatenated; with ``workers`` > 1 too, that many
    threads run the chunks concurrently on the one session (``InferenceSession.run`` is thread-safe and releases the
    GIL), from a pool that lives from :meth:`activate` to :meth:`deactivate`, and the outputs are concatenated in row
    order, the same bytes as one chunk after another. A decode step whose graph takes
    preallocated KV buffers (``kv_lengths`` among its inputs) runs through
    :class:`~holitom.runtime.backends.onnxruntime.kv_buffers.KVBufferDecoder`: its ``logits`` are rewritten by the
    next call. A torch tensor in the feed (the export
    validator's reference inputs) is read through numpy without a copy on the CPU.
    """

    backend = "onnxruntime"

    def __init__(
        self,
        spec,
        session_loader,
        check_inputs: bool = True,
        output_shapes: Callable[[dict], dict] | None = None,
        chunk: int = 0,
        workers: int = 1,
    ):
        super().__init__(spec, check_inputs)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"workers must be a positive integer (1: one chunk after another), got {workers!r}.")
        self._load = session_loader
        self._output_shapes = output_shapes
        self._chunk = chunk
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self.session = None
        self._input_names: set[str] = set()
        self._binding = None
        self._kv_decoder = None
        self._buffers: dict[str, list[np.ndarray]] = {}  # output name -> two flat buffers, used in turn
        self._turn = 0

    @property
    def workers(self) -> int:
        """How many chunks run at once (1: one after another)."""
        return self._workers

    def _activate(self) -> None:
        from holitom import contracts as C

        self.session = self._load()
        self._input_names = {i.name for i in self.session.get_inputs()}
        if C.KV_LENGTHS in self._input_names:  # an --attention onnxruntime decode step: preallocated KV buffers
            from holitom.runtime.backends.onnxruntime.kv_buffers import KVBufferDecoder

            self._kv_decoder = KVBufferDecoder(self.session, self.spec)
        elif self._output_shapes is not None:
            self._binding = self.session.io_binding()
        elif self._workers > 1 and self._chunk:
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix=f"holitom-{self.spec.name}")

    def _deactivate(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)  # its threads end here, not at interpreter exit
        self.session = self._binding = self._kv_decoder = self._pool = None
        self._buffers = {}

    def _infer(self, feed: Mapping) -> dict:
        if self._kv_decoder is not None:
            return self._kv_decoder({name: _as_numpy(value) for name, value in feed.items()})
        # Inputs the graph dropped as unused (e.g. a constant-folded position) are not fed.
        arrays = {name: _to_numpy(value) for name, value in feed.items() if name in self._input_names}
        names = self.spec.output_names
        if self._binding is not None:
            return self._infer_bound(arrays)
        rows, step = len(next(iter(arrays.values()))), self._chunk
        if not step or rows <= step:
            return dict(zip(names, self.session.run(names, arrays)))
        # A stage whose rows are independent (the vision tower's frames) runs a few rows at a time: its
        # activations (attention scores of every layer) then peak at a chunk's size (times the workers), not the
        # whole input's.
        def run(start: int) -> list[np.ndarray]:
            return self.session.run(names, {k: v[start : start + step] for k, v in arrays.items()})

        starts = range(0, rows, step)
        # pool.map yields in the order of starts (and re-raises a worker's error), so the rows come back in order.
        parts = list(self._pool.map(run, starts)) if self._pool is not None else [run(s) for s in starts]
        return {name: np.concatenate([p[j] for p in parts]) for j, name in enumerate(names)}

    def _infer_bound(self, arrays: dict) -> dict:
        """Inputs bound where they lie; outputs written into this runner's own buffers (no per-call allocation).

        Two buffers per output, used in turn: a call's outputs (the decode step's KV caches) are the next
        call's inputs, so they must survive one more call; they are overwritten by the call after it.
        """
        binding = self._binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        for name, array in arrays.items():
            binding.bind_cpu_input(name, array)
        shapes = self._output_shapes(arrays)
        dtypes = {t.name: np.dtype(t.dtype) for t in self.spec.outputs}
        out = {}
        for name in self.spec.output_names:
            out[name] = self._buffer(name, shapes[name], dtypes[name])
            binding.bind_output(name, "cpu", 0, out[name].dtype, out[name].shape, out[name].ctypes.data)
        self.session.run_with_iobinding(binding)
        self._turn ^= 1
        return out

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        pair = self._buffers.setdefault(name, [np.empty(0, dtype), np.empty(0, dtype)])
        size = int(np.prod(shape))
        if pair[self._turn].size < size:
            # Grow by half again: a KV cache gains one position per call, so this reallocates O(log n) times.
            pair[self._turn] = np.empty(max(size, pair[self._turn].size * 3 // 2), dtype)
        return pair[self._turn][:size].reshape(shape)


def _as_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; torch itself is not imported here
        return value.detach().cpu().contiguous().numpy()
    return np.asarray(value)


def _to_numpy(value) -> np.ndarray:
    return np.ascontiguousarray(_as_numpy(value))
