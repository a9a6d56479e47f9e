"""A static, preallocated KV cache for eager decoding (gpt-fast style).

Each layer owns one key and one value buffer ``(1, Hkv, capacity, hd)``; a decode
step writes its new key/value in place at the layer's fill length and attends over
the filled prefix, instead of concatenating the whole cache every step. Layers keep
their own lengths, so the two KV groups (layers < K: the full prompt, layers >= K:
the merged one) need no bookkeeping beyond a length per layer.

Exported graphs keep the functional form (``past_key_values.*`` in, ``present.*``
out, see :mod:`holitom.contracts`): this cache is for eager torch only.
"""

from __future__ import annotations

from typing import Sequence

import torch

from holitom.errors import InputError

KV = tuple[torch.Tensor, torch.Tensor]


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
        if len(past) != len(self.layers):
            return False
        return all(
            k.data_ptr() == layer.key.data_ptr()
            and v.data_ptr() == layer.value.data_ptr()
            and k.shape[2] == layer.length == v.shape[2]
            for (k, v), layer in zip(past, self.layers)
        )


__all__ = ["StaticKVCache", "StaticLayerCache"]
