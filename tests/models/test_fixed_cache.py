"""The fixed-capacity KV cache (the CUDA-graph form): same tokens as the concatenating path, capture-safe structure.

No GPU here: the capture-safety check traces the step with TorchDynamo (``fullgraph=True``,
with scalar outputs and data-dependent output shapes not captured, so that ``.item()``,
``int(tensor)`` and ``nonzero`` break the graph), which then refuses host syncs,
data-dependent Python branches and anything else it cannot put in one graph, and counts
the traces: one trace for every position and fill length means no shape in the step
depends on them.
"""

from __future__ import annotations

import pytest
import torch

from holitom.errors import InputError
from holitom.models.kv_cache import FixedKVCache
from holitom.models.loading import load_llava
from holitom.runtime.backends.torch.cuda_graph import GraphedDecode, capacity_for
from greedy import two_kv_groups
from tiny_llava import max_diff

STEP_ATOL = 1e-5
STEPS = 9  # more than the 4..7 free positions a room of 4 gives: the small-room case must grow once


@pytest.fixture(scope="module")
def model(onevision_ckpt):
    return load_llava(onevision_ckpt.path).eval()


@pytest.fixture(scope="module")
def two_groups(model):
    """(present, first token, next position): layers < K hold the full prompt, layers >= K the merged one."""
    return two_kv_groups(model)[:3]


def _concat_greedy(model, present, token, position, steps):
    tokens, logits_seen = [], []
    with torch.no_grad():
        for i in range(steps):
            logits, present = model.decode_step(model.embed(torch.tensor([[token]])), torch.tensor([[position + i]]), present)
            token = int(logits[0].argmax())
            tokens.append(token)
            logits_seen.append(logits)
    return tokens, logits_seen


def _graphed_greedy(model, graphed, present, token, position, steps):
    tokens, logits_seen, past = [], [], present
    with torch.inference_mode():
        for i in range(steps):
            logits, past = graphed(model.embed(torch.tensor([[token]])), torch.tensor([[position + i]]), past)
            token = int(logits[0].argmax())
            tokens.append(token)
            logits_seen.append(logits)
    return tokens, logits_seen, past


# Host reads of device values become graph breaks (newer torch captures them as symbolic scalars by default).
STRICT = {"capture_scalar_outputs": False, "capture_dynamic_output_shape_ops": False}


def _eager(step):
    return step  # the "replay" is the eager step itself


@pytest.mark.parametrize("room", [4, 256])
def test_graphed_bookkeeping_decodes_like_the_concatenating_path(model, two_groups, room):
    # room=4 fills the first capacity within STEPS tokens: the cache moves to a larger capacity (a second capture).
    present, first, position = two_groups
    graphed = GraphedDecode(model, _eager, room=room)
    tokens, logits, past = _graphed_greedy(model, graphed, present, first, position, STEPS)
    ref_tokens, ref_logits = _concat_greedy(model, present, first, position, STEPS)
    assert tokens == ref_tokens
    assert len(set(tokens)) > 1, f"degenerate generation {tokens}: the parity check would be weak"
    for a, b in zip(logits, ref_logits):
        assert max_diff(a, b) <= STEP_ATOL
    assert [k.shape[2] for k, _ in past] == [k.shape[2] + STEPS for k, _ in present]
    first_capacity = capacity_for(present[0][0].shape[2], room)
    if room == 4:
        assert graphed.captures == 2 and graphed._current.cache.capacity == capacity_for(first_capacity, room)
        assert list(graphed._by_capacity) == [graphed._current.cache.capacity]  # the full one was dropped
    else:
        assert graphed.captures == 1 and graphed._current.cache.capacity == first_capacity
    # The device lengths and their host mirror agree after every step.
    assert graphed._current.cache.lengths.tolist() == graphed._current.cache.host_lengths == [k.shape[2] for k, _ in past]


def test_a_new_prompt_of_the_same_capacity_reuses_its_capture(model, two_groups):
    present, first, position = two_groups
    graphed = GraphedDecode(model, _eager)
    a = _graphed_greedy(model, graphed, present, first, position, 3)[0]
    b = _graphed_greedy(model, graphed, present, first, position, 3)[0]  # the prompt again: copied into the same buffers
    assert a == b and graphed.captures == 1


def test_the_step_is_capture_safe(model, two_groups):
    # TorchDynamo traces the exact step a CUDA graph captures; fullgraph=True fails on any host sync or
    # data-dependent branch, and one trace for all positions means no shape depends on them.
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    present, first, position = two_groups

    def traced(step):
        return torch.compile(step, backend=counter, fullgraph=True, dynamic=False)

    graphed = GraphedDecode(model, traced, room=4)  # two capacities: two captures, each traced once
    with torch._dynamo.config.patch(**STRICT):
        tokens, logits, _ = _graphed_greedy(model, graphed, present, first, position, STEPS)
    ref_tokens, ref_logits = _concat_greedy(model, present, first, position, STEPS)
    assert tokens == ref_tokens
    for a, b in zip(logits, ref_logits):
        assert max_diff(a, b) <= STEP_ATOL
    assert graphed.captures == 2
    assert counter.frame_count == 2, f"{counter.frame_count} traces for 2 captures: the step retraced for a new position"
    torch._dynamo.reset()


# Aten ops that read device memory on the host (a sync on CUDA) or whose output shape depends on values.
HOST_SYNC_OPS = {"_local_scalar_dense", "item", "is_nonzero", "nonzero", "equal", "masked_select", "unique", "_unique2", "repeat_interleave"}


class HostSyncRecorder:
    """Records every aten op a call dispatches, by name; ``syncs`` are those in :data:`HOST_SYNC_OPS`."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        recorder = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                recorder.ops.append(func.overloadpacket.__name__)
                return func(*args, **(kwargs or {}))

        self.ops: list[str] = []
        self.mode = Mode

    def __call__(self, fn):
        def recorded():
            with self.mode():
                return fn()

        return recorded

    @property
    def syncs(self) -> set[str]:
        return set(self.ops) & HOST_SYNC_OPS


def test_the_step_makes_no_host_sync(model, two_groups):
    present, first, position = two_groups
    recorder = HostSyncRecorder()
    graphed = GraphedDecode(model, recorder, room=4)
    tokens, _, _ = _graphed_greedy(model, graphed, present, first, position, STEPS)
    assert tokens == _concat_greedy(model, present, first, position, STEPS)[0]
    assert "index_copy_" in recorder.ops  # the recorder saw the step's ops (the in-place KV writes)
    assert recorder.syncs == set(), f"host syncs in the captured step: {recorder.syncs}"


def test_the_host_sync_check_can_fail(model, two_groups):
    # The same recorder on a step with a host read of a device length reports it.
    present, first, position = two_groups
    cache = FixedKVCache.allocate(present, capacity_for(present[0][0].shape[2]))
    cache.load(present)
    embeds = model.embed(torch.tensor([[first]]))
    recorder = HostSyncRecorder()

    def synced_step():
        model.decode_step(embeds, torch.tensor([[position]]), cache)
        return int(cache.lengths[0])

    with torch.inference_mode():
        recorder(synced_step)()
    assert recorder.syncs & {"item", "_local_scalar_dense"}


def test_the_trace_count_check_can_fail(model, two_groups):
    # A step whose shapes follow the fill length (the eager StaticKVCache's filled-prefix views) retraces per position.
    from torch._dynamo.testing import CompileCounter

    from holitom.models.kv_cache import StaticKVCache

    present, first, position = two_groups
    cache = StaticKVCache.from_present(present, room=4)
    embeds = model.embed(torch.tensor([[first]]))
    torch._dynamo.reset()
    counter = CompileCounter()
    step = torch.compile(lambda p: model.decode_step(embeds, p, cache)[0], backend=counter, dynamic=False)
    with torch.inference_mode():
        for i in range(3):
            step(torch.tensor([[position + i]]))
    assert counter.frame_count > 1
    torch._dynamo.reset()


def test_fixed_cache_load_and_views():
    key = torch.randn(1, 2, 3, 4)
    short = torch.randn(1, 2, 2, 4)
    cache = FixedKVCache.allocate([(key, key), (short, short)], capacity=5)
    cache.load([(key, key.clone()), (short, short.clone())])
    assert cache.host_lengths == [3, 2] and cache.lengths.tolist() == [3, 2] and cache.room == 2
    assert cache.holds(cache.filled()) and not cache.holds([(key, key), (short, short)])
    layer = cache.layers()[1]
    k, v, mask = layer.write(torch.ones(1, 2, 1, 4), torch.zeros(1, 2, 1, 4))
    assert v.shape == k.shape == (1, 2, 5, 4) and torch.equal(v[:, :, 2], torch.zeros(1, 2, 4))
    assert k.shape == (1, 2, 5, 4) and torch.equal(k[:, :, 2], torch.ones(1, 2, 4)) and torch.equal(k[:, :, :2], short)
    assert mask.shape == (1, 1, 1, 5) and mask.flatten().tolist() == [True, True, True, False, False]
    with pytest.raises(InputError, match="cannot take"):
        cache.load([(torch.zeros(1, 2, 6, 4),) * 2, (short, short)])
