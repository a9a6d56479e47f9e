"""The decode step captured in a CUDA graph over static KV buffers, replayed once per token.

A decode step of a 7B decoder is a few hundred small kernels; launched one by one from
Python, the launches rather than the GPU can set the pace. Captured once in a CUDA graph, the whole
step is one launch. A graph replays fixed memory with fixed shapes, so the step runs on a
:class:`~holitom.models.kv_cache.FixedKVCache` (every buffer at one capacity, fill
lengths in a device tensor the step advances itself, attention masked over the whole
capacity) and reads its inputs from static tensors:

- static inputs: the token's embedding ``(1, 1, D)`` and position ``(1, 1)``, copied in
  before each replay (the pipeline embeds the token in its own stage, so the graph
  starts at the embedding, not at the token id);
- static state: the KV buffers and lengths, written in place by the step;
- static output: the logits ``(1, V)``, copied out after each replay.

One graph per cache capacity (the buffers' addresses are part of the graph): a new prompt
that fits an existing capacity is copied into that capacity's buffers and replays its
graph; one that needs another capacity gets its own buffers and capture, and a cache that
fills up moves to a larger capacity, its own buffers and graph dropped. Capacities are
multiples of :data:`ROOM` positions, with at least :data:`ROOM` free after the prompt, so an
answer captures one more graph per :data:`ROOM` tokens beyond its first capacity's room.

:class:`GraphedDecode` does the bookkeeping and takes the capture as a function, so the
bookkeeping runs on the CPU with an eager "replay" (tests); :func:`cuda_capture` is the
real capture, torch.cuda only, imported when a CUDA pipeline is built. Not yet run on a
GPU (no GPU was lent to this project): see the README's GPU section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from holitom.models.kv_cache import CACHE_ROOM as ROOM
from holitom.models.kv_cache import KV, FixedKVCache

WARMUP_STEPS = 3  # eager runs on a side stream before capture (cuBLAS handles, autotuned kernels)

Capture = Callable[[Callable[[], None]], Callable[[], None]]  # step -> replay


def capacity_for(longest: int, room: int = ROOM) -> int:
    """The capacity for a cache whose longest layer holds ``longest`` positions: at least ``room`` free, a multiple of ``room``."""
    return -(-(longest + room) // room) * room


@dataclass
class _Captured:
    """One capacity's static tensors and its replay."""

    cache: FixedKVCache
    embeds: torch.Tensor  # (1, 1, D)
    position: torch.Tensor  # (1, 1) int64
    logits: torch.Tensor  # (1, V)
    replay: Callable[[], None]


class GraphedDecode:
    """The decode step over fixed KV buffers, captured once per capacity by ``capture`` and replayed per token.

    Args:
        model: the :class:`~holitom.models.llava.LlavaModel`.
        capture: takes the step (a function of no arguments that reads the static inputs
            and writes the static output) and returns its replay; :func:`cuda_capture`
            on CUDA, the step itself for an eager run.
        room: see :data:`ROOM`.
    """

    def __init__(self, model, capture: Capture, room: int = ROOM):
        self.model = model
        self.capture = capture
        self.room = room
        self.captures = 0  # graphs captured so far (one per capacity seen)
        self._by_capacity: dict[int, _Captured] = {}
        self._current: _Captured | None = None

    def __call__(self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor, past: Sequence[KV]) -> tuple[torch.Tensor, list[KV]]:
        """One step: ``inputs_embeds (1, 1, D)``, ``position_ids (1, 1)``, ``past`` L ``(1, Hkv, S_i, hd)``.

        Returns a copy of the logits ``(1, V)`` and the filled prefixes (views of the
        static buffers; fed back as the next ``past``, they cost no copy).
        """
        entry = self._current
        if entry is None or not entry.cache.holds(past):
            entry = self._load(past)
        elif entry.cache.room == 0:
            # Full: move to a larger capacity and drop this one (its buffers and graph), so a
            # long answer holds one capacity's memory, not every capacity it passed through.
            full = entry.cache.capacity
            entry = self._load(past)
            del self._by_capacity[full]
        entry.embeds.copy_(inputs_embeds)
        entry.position.copy_(position_ids)
        entry.replay()
        entry.cache.advance_host()
        return entry.logits.clone(), entry.cache.filled()

    def _load(self, past: Sequence[KV]) -> _Captured:
        capacity = capacity_for(max(key.shape[2] for key, _ in past), self.room)
        entry = self._by_capacity.get(capacity)
        if entry is None:
            entry = self._by_capacity[capacity] = self._build(past, capacity)
        entry.cache.load(past)  # after the capture: warm-up steps only scribbled past the old lengths
        self._current = entry
        return entry

    def _build(self, past: Sequence[KV], capacity: int) -> _Captured:
        model = self.model
        cache = FixedKVCache.allocate(past, capacity)
        key = past[0][0]
        embeds = torch.zeros((1, 1, model.config.hidden_size), dtype=model.dtype, device=key.device)  # (1, 1, D)
        position = torch.zeros((1, 1), dtype=torch.int64, device=key.device)  # (1, 1)
        logits = torch.zeros((1, model.config.text.vocab_size), dtype=model.dtype, device=key.device)  # (1, V)

        def step() -> None:
            out, _ = model.decode_step(embeds, position, cache)  # (1, V)
            logits.copy_(out)

        replay = self.capture(step)
        self.captures += 1
        return _Captured(cache, embeds, position, logits, replay)

    def reset(self) -> None:
        """Drop every capture and buffer (the runner's deactivate)."""
        self._by_capacity.clear()
        self._current = None


def cuda_capture(device: torch.device, warmup: int = WARMUP_STEPS) -> Capture:
    """The capture for CUDA: warm up on a side stream, capture into one shared memory pool, replay."""
    pool = torch.cuda.graph_pool_handle()  # graphs of every capacity share one pool

    def capture(step: Callable[[], None]) -> Callable[[], None]:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                step()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            step()
        return graph.replay

    return capture


__all__ = ["ROOM", "GraphedDecode", "capacity_for", "cuda_capture"]
