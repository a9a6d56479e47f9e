"""A static, preallocated KV cache for eager decoding (gpt-fast style).

Each layer owns one key and one value buffer ``(1, Hkv, capacity, hd)``; a decode
step writes its new key/value in place at the layer's fill length and attends over
the filled prefix, instead of concatenating the whole cache every step. Layers keep
their own lengths, so the two KV groups (layers < K: the full prompt, layers >= K:
the merged one) need no bookkeeping beyond a length per layer.

:class:`FixedKVCache` is the same idea in a form a CUDA graph can replay: every
buffer has one capacity, the fill lengths are a device tensor the step reads and
advances itself, and attention runs over the whole capacity with a mask, so no
shape, index or branch of the step depends on the position (the lengths the host
needs are mirrored in Python ints, advanced by the caller after each step).

Exported graphs keep the functional form (``past_key_values.*`` in, ``present.*``
out, see :mod:`holitom.contracts`): these caches are for eager torch only.
"""

from __future__ import annotations

from typing import Sequence

import torch

from holitom.contracts import CACHE_ROOM
from holitom.errors import InputError

KV = tuple[torch.Tensor, torch.Tensor]


def _are_prefixes_of(past: Sequence[KV], buffers: Sequence[tuple[torch.Tensor, torch.Tensor, int]]) -> bool:
    """Whether each layer's ``past (key, value)`` is the first ``length`` positions of its ``(key, value, length)`` buffers."""
    return len(past) == len(buffers) and all(
        k.data_ptr() == kb.data_ptr() and v.data_ptr() == vb.data_ptr() and k.shape[2] == n == v.shape[2]
        for (k, v), (kb, vb, n) in zip(past, buffers)
    )


class StaticLayerCache:
    """One layer's key/value buffers and how much of them is filled."""

    def __init__(self, key: torch.Tensor, value: torch.Tensor, length: int):
        self.key = key  # (1, Hkv, capacity, hd)
        self.value = value  # (1, Hkv, capacity, hd)
        self.length = length

    @property
    def capacity(self) -> int:
        return self.key.shape[2]

    def write(self, key: torch.Tensor, value: torch.Tensor) -> KV:
        """Store ``key, value (1, Hkv, s, hd)`` after the filled prefix; return the new prefix views ``(1, Hkv, length, hd)``."""
        stop = self.length + key.shape[2]
        if stop > self.capacity:
            raise InputError(
                f"the static KV cache holds {self.capacity} positions and {self.length} are filled; it cannot take "
                f"{key.shape[2]} more. Build it with more room (StaticKVCache.from_present(..., room=...))."
            )
        self.key[:, :, self.length : stop].copy_(key)
        self.value[:, :, self.length : stop].copy_(value)
        self.length = stop
        return self.filled()

    def filled(self) -> KV:
        return self.key[:, :, : self.length], self.value[:, :, : self.length]  # views, no copy


class StaticKVCache:
    """Preallocated caches of every decoder layer; see the module docstring."""

    def __init__(self, layers: Sequence[StaticLayerCache]):
        self.layers = list(layers)

    @classmethod
    def from_present(cls, present: Sequence[KV], room: int) -> "StaticKVCache":
        """Copy each layer's ``(key, value) (1, Hkv, S_i, hd)`` into buffers with ``room`` free positions after it."""
        if room < 0:
            raise InputError(f"room must be >= 0 positions, got {room}.")
        layers = []
        for key, value in present:
            b, heads, length, head_dim = key.shape
            k_buf = key.new_empty((b, heads, length + room, head_dim))  # (1, Hkv, S_i + room, hd)
            v_buf = value.new_empty((b, heads, length + room, value.shape[3]))
            k_buf[:, :, :length].copy_(key)
            v_buf[:, :, :length].copy_(value)
            layers.append(StaticLayerCache(k_buf, v_buf, length))
        return cls(layers)

    @property
    def room(self) -> int:
        """Positions every layer can still take."""
        return min(layer.capacity - layer.length for layer in self.layers)

    def filled(self) -> list[KV]:
        """Every layer's filled prefix (views into the buffers)."""
        return [layer.filled() for layer in self.layers]

    def holds(self, past: Sequence[KV]) -> bool:
        """Whether ``past`` is exactly this cache's filled prefixes (as :meth:`filled` returned them)."""
        return _are_prefixes_of(past, [(layer.key, layer.value, layer.length) for layer in self.layers])


class FixedLayerCache:
    """One layer's view of a :class:`FixedKVCache`: its buffers and its fill length as a ``(1,)`` device tensor."""

    def __init__(self, key: torch.Tensor, value: torch.Tensor, length: torch.Tensor):
        self.key = key  # (1, Hkv, capacity, hd)
        self.value = value  # (1, Hkv, capacity, hd)
        self.length = length  # (1,) int64, a view of the cache's lengths

    def write(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Store one position ``key, value (1, Hkv, 1, hd)`` at the fill length, on the device.

        Returns the whole buffers ``(1, Hkv, capacity, hd)`` and the mask ``(1, 1, 1, capacity)``
        of the positions the new token attends to (the filled ones and itself). No host sync:
        the index and the mask come from the length tensor.
        """
        self.key.index_copy_(2, self.length, key)
        self.value.index_copy_(2, self.length, value)
        positions = torch.arange(self.key.shape[2], device=self.key.device)  # (capacity,)
        mask = (positions <= self.length)[None, None, None]  # (1, 1, 1, capacity)
        return self.key, self.value, mask


class FixedKVCache:
    """Every layer's KV buffers at one capacity, fill lengths on the device and mirrored on the host.

    ``lengths (L,)`` int64 lives on the device: :meth:`layers` hands each layer a view,
    and the decode step advances all of them in place. ``host_lengths`` are the same
    counts as Python ints, for the host's bookkeeping (views, room); the caller
    advances them with :meth:`advance_host` after each step, never by reading the
    device.
    """

    def __init__(self, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor], lengths: torch.Tensor):
        self.keys = list(keys)  # L x (1, Hkv, capacity, hd)
        self.values = list(values)
        self.lengths = lengths  # (L,) int64
        self.host_lengths = [0] * len(self.keys)

    @classmethod
    def allocate(cls, like: Sequence[KV], capacity: int) -> "FixedKVCache":
        """Zeroed buffers of ``capacity`` positions with the head count, head size, dtype and device of ``like``'s layers."""
        keys, values = [], []
        for key, value in like:
            b, heads, _, head_dim = key.shape
            keys.append(key.new_zeros((b, heads, capacity, head_dim)))  # (1, Hkv, capacity, hd)
            values.append(value.new_zeros((b, heads, capacity, value.shape[3])))
        lengths = torch.zeros(len(keys), dtype=torch.int64, device=keys[0].device if keys else None)
        return cls(keys, values, lengths)

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    @property
    def room(self) -> int:
        """Positions every layer can still take."""
        return self.capacity - max(self.host_lengths)

    def load(self, present: Sequence[KV]) -> None:
        """Copy each layer's ``(key, value) (1, Hkv, S_i, hd)`` to the start of its buffers and set the lengths."""
        lengths = [key.shape[2] for key, _ in present]
        if len(present) != len(self.keys) or max(lengths) > self.capacity:
            raise InputError(
                f"a fixed KV cache of {len(self.keys)} layers x {self.capacity} positions cannot take {len(present)} layers "
                f"of up to {max(lengths)} positions; allocate one with more room."
            )
        for (key, value), k_buf, v_buf in zip(present, self.keys, self.values):
            k_buf[:, :, : key.shape[2]].copy_(key)
            v_buf[:, :, : value.shape[2]].copy_(value)
        self.lengths.copy_(torch.tensor(lengths, dtype=torch.int64))
        self.host_lengths = lengths

    def layers(self) -> list[FixedLayerCache]:
        return [FixedLayerCache(k, v, self.lengths[i : i + 1]) for i, (k, v) in enumerate(zip(self.keys, self.values))]

    def advance_host(self) -> None:
        """Mirror one decode step (which advanced the device lengths) in ``host_lengths``."""
        self.host_lengths = [n + 1 for n in self.host_lengths]

    def filled(self) -> list[KV]:
        """Every layer's filled prefix by the host lengths (views into the buffers)."""
        return [(k[:, :, :n], v[:, :, :n]) for k, v, n in zip(self.keys, self.values, self.host_lengths)]

    def holds(self, past: Sequence[KV]) -> bool:
        """Whether ``past`` is exactly this cache's filled prefixes (as :meth:`filled` returned them)."""
        return _are_prefixes_of(past, list(zip(self.keys, self.values, self.host_lengths)))


__all__ = ["CACHE_ROOM", "FixedKVCache", "FixedLayerCache", "StaticKVCache", "StaticLayerCache"]
