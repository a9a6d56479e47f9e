"""The decode step over preallocated KV buffers, behind the plain decode step's contract.

An ``--attention onnxruntime`` export's decode graph (``holitom.contracts.kv_buffer_decode_spec``)
takes each layer's KV buffer ``(1, Hkv, capacity, hd)`` and the filled length of each layer
group, and returns the same buffers with the new position written. Bound to one OrtValue as
both ``past`` and ``present`` (IO binding), GroupQueryAttention writes that position in place:
a step reads the cache once and copies none of it.

The pipeline keeps the plain contract (``past`` of the filled lengths in, ``present`` one
longer out, as every backend's decode step): :class:`KVBufferDecoder` returns ``present`` as
views of its buffers, and when the next call's ``past`` are exactly those views it only
binds the small inputs. Any other ``past`` (the prefill's caches, a validator's reference
inputs) is copied into fresh buffers with :data:`ROOM` free positions; a full buffer is
copied into one with more room, so the copies are O(log n) over an answer.
"""

from __future__ import annotations

import numpy as np

from holitom import contracts as C
from holitom.errors import InputError

# Free positions given to the buffers when a new cache is copied in (and added when they fill up).
ROOM = C.CACHE_ROOM


class KVBufferDecoder:
    """Runs one session of the KV-buffer decode graph; owns the buffers and the reused logits buffer."""

    def __init__(self, session, spec: C.StageSpec):
        import onnxruntime as ort

        self._ort = ort
        self.session = session
        self.spec = spec  # the plain decode step's contract (what callers feed and get)
        graph = C.kv_buffer_decode_spec(spec)
        heads = {t.name for t in graph.inputs if C.HEAD_CAPACITY in t.shape}
        self.num_layers = sum(1 for t in spec.inputs if t.name.startswith("past_key_values.") and t.name.endswith(".key"))
        self.head_layers = sum(1 for i in range(self.num_layers) if C.past_key_name(i) in heads)
        self._binding = session.io_binding()
        self._keys: list[np.ndarray] = []  # per layer (1, Hkv, capacity, hd)
        self._values: list[np.ndarray] = []
        self._lengths = np.zeros(2, np.int64)  # filled positions of the head and the tail group
        self._returned = False  # whether the last call returned views of the current buffers
        logits = next(t for t in spec.outputs if t.name == "logits")
        self._logits = np.empty(logits.shape, np.dtype(logits.dtype))  # (1, V), rewritten by every call

    def _group(self, layer: int) -> int:
        return int(layer >= self.head_layers)

    def _holds(self, feed: dict) -> bool:
        """Whether ``feed``'s past are the views this decoder returned last (nothing to copy)."""
        if not self._returned:
            return False
        for i in range(self.num_layers):
            for name, buffer in ((C.past_key_name(i), self._keys[i]), (C.past_value_name(i), self._values[i])):
                past = feed[name]
                if not isinstance(past, np.ndarray) or not _same_start(past, buffer) or past.shape[2] != self._lengths[self._group(i)]:
                    return False
        return True

    def _allocate(self, past: list[tuple[np.ndarray, np.ndarray]], room: int) -> None:
        """Copy every layer's filled ``(key, value) (1, Hkv, S_group, hd)`` into buffers with ``room`` free positions."""
        lengths = [k.shape[2] for k, _ in past]
        groups = [[n for i, n in enumerate(lengths) if self._group(i) == g] for g in (0, 1)]
        if any(len(set(g)) > 1 for g in groups):
            raise InputError(
                f"{C.DECODE_STEP}: the KV caches of one layer group (layers < {self.head_layers}, then the rest) must have "
                f"one length, got lengths {lengths}; feed the decoder head's and tail's present caches as they are."
            )
        self._lengths = np.array([g[0] if g else 0 for g in groups], np.int64)
        self._keys, self._values = [], []
        for key, value in past:
            b, heads, length, head_dim = key.shape
            for source, store in ((key, self._keys), (value, self._values)):
                buffer = np.empty((b, heads, length + room, head_dim), source.dtype)  # (1, Hkv, capacity, hd)
                buffer[:, :, :length] = source
                store.append(buffer)
        bind = self._binding
        bind.clear_binding_inputs()
        bind.clear_binding_outputs()
        for i in range(self.num_layers):
            for buffer, past_name, present_name in (
                (self._keys[i], C.past_key_name(i), C.present_key_name(i)),
                (self._values[i], C.past_value_name(i), C.present_value_name(i)),
            ):
                value = self._ort.OrtValue.ortvalue_from_numpy(buffer)  # wraps the buffer's memory
                bind.bind_ortvalue_input(past_name, value)
                bind.bind_ortvalue_output(present_name, value)  # the same memory: written in place
        bind.bind_output("logits", "cpu", 0, self._logits.dtype, self._logits.shape, self._logits.ctypes.data)

    def __call__(self, feed: dict) -> dict:
        """``feed``: the plain contract's inputs (numpy); returns ``logits`` and ``present`` views of the buffers."""
        if not self._holds(feed):
            past = [(np.asarray(feed[C.past_key_name(i)]), np.asarray(feed[C.past_value_name(i)])) for i in range(self.num_layers)]
            self._allocate(past, ROOM)
        elif any(k.shape[2] <= self._lengths[self._group(i)] for i, k in enumerate(self._keys)):
            # Full: copy into buffers with more room (half as much again as they hold, at least ROOM).
            past = [(k[:, :, : self._lengths[self._group(i)]], v[:, :, : self._lengths[self._group(i)]]) for i, (k, v) in enumerate(zip(self._keys, self._values))]
            self._allocate(past, max(ROOM, int(self._lengths.max()) // 2))
        bind = self._binding
        embeds = np.ascontiguousarray(feed["inputs_embeds"])
        positions = np.ascontiguousarray(feed["position_ids"])
        lengths = self._lengths.copy()  # (2,) kept alive until the run
        bind.bind_cpu_input("inputs_embeds", embeds)
        bind.bind_cpu_input("position_ids", positions)
        bind.bind_cpu_input(C.KV_LENGTHS, lengths)
        self.session.run_with_iobinding(bind)
        self._lengths += 1
        out = {"logits": self._logits}
        for i in range(self.num_layers):
            filled = int(self._lengths[self._group(i)])
            out[C.present_key_name(i)] = self._keys[i][:, :, :filled]  # (1, Hkv, S + 1, hd) views
            out[C.present_value_name(i)] = self._values[i][:, :, :filled]
        self._returned = True
        return out


def _same_start(view: np.ndarray, buffer: np.ndarray) -> bool:
    """Whether ``view`` is the leading-positions view of ``buffer`` (same memory, same strides)."""
    return view.__array_interface__["data"][0] == buffer.__array_interface__["data"][0] and view.strides == buffer.strides
