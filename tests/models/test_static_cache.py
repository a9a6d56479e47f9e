"""Decoding into the static, preallocated KV cache against the concatenating path and transformers."""

from __future__ import annotations

import pytest
import torch

from holitom.errors import InputError
from holitom.models.baseline import TransformersBaseline
from holitom.models.kv_cache import StaticKVCache
from holitom.models.loading import load_llava
from greedy import greedy_generate, two_kv_groups
from tiny_llava import frames, max_diff, prompt_ids

STEP_ATOL = 1e-5


@pytest.fixture(scope="module")
def model(onevision_ckpt):
    return load_llava(onevision_ckpt.path)


def _greedy_steps(model, past, token: int, position: int, steps: int):
    """Greedy decode from ``past`` (a list of pairs or a StaticKVCache): tokens, logits and the last caches."""
    tokens, logits_seen = [], []
    for i in range(steps):
        logits, present = model.decode_step(model.embed(torch.tensor([[token]])), torch.tensor([[position + i]]), past)
        past = past if isinstance(past, StaticKVCache) else present
        token = int(logits[0].argmax())
        tokens.append(token)
        logits_seen.append(logits)
    return tokens, logits_seen, present


@torch.no_grad()
def test_two_kv_groups_of_different_lengths_decode_like_the_concatenating_path(model):
    # Layers < K hold the full prompt, layers >= K the merged one: the static cache keeps a length per layer.
    present, first, position, _ = two_kv_groups(model)
    lengths = [k.shape[2] for k, _ in present]

    cache = StaticKVCache.from_present(present, room=6)
    static_tokens, static_logits, static_present = _greedy_steps(model, cache, first, position, 6)
    concat_tokens, concat_logits, concat_present = _greedy_steps(model, present, first, position, 6)
    assert static_tokens == concat_tokens
    for a, b in zip(static_logits, concat_logits):
        assert max_diff(a, b) <= STEP_ATOL
    assert [k.shape[2] for k, _ in static_present] == [n + 6 for n in lengths]
    for (k, v), (k_ref, v_ref), n in zip(static_present, concat_present, lengths):
        assert torch.equal(k[:, :, :n], k_ref[:, :, :n]) and torch.equal(v[:, :, :n], v_ref[:, :, :n])  # the prompt, copied
        # The written positions hold the concatenated path's keys/values (grouped decode attention
        # rounds differently from the head-expanded one, so to float32 round-off).
        assert max_diff(k, k_ref) <= STEP_ATOL and max_diff(v, v_ref) <= STEP_ATOL
    assert cache.room == 0 and cache.holds(static_present)


@torch.no_grad()
@pytest.mark.parametrize("num_frames", [1, 3])
def test_static_greedy_tokens_equal_the_old_path_and_transformers(model, onevision_ckpt, num_frames):
    ids = prompt_ids(4, 3, seed=50 + num_frames)
    pixels = frames(num_frames, 56, seed=50 + num_frames)
    embeds, _ = model.splice_video(ids, model.unmerged_video_tokens(model.encode_video(pixels).features))
    static = greedy_generate(model, embeds, max_new_tokens=12)
    concat = greedy_generate(model, embeds, max_new_tokens=12, static_cache=False)
    baseline = TransformersBaseline(onevision_ckpt.hf, model.config)
    ref = baseline.generate(baseline.expand_video_placeholder(ids, num_frames), pixels, max_new_tokens=12)
    assert static == concat == ref.tokens
    assert len(set(static)) > 2, f"degenerate generation {static}: the parity check would be weak"


def test_a_full_cache_refuses_another_token():
    key = torch.zeros(1, 2, 3, 4)
    cache = StaticKVCache.from_present([(key, key.clone())], room=1)
    cache.layers[0].write(torch.ones(1, 2, 1, 4), torch.ones(1, 2, 1, 4))
    with pytest.raises(InputError, match="cannot take 1 more"):
        cache.layers[0].write(torch.ones(1, 2, 1, 4), torch.ones(1, 2, 1, 4))
    with pytest.raises(InputError, match="room must be >= 0"):
        StaticKVCache.from_present([(key, key)], room=-1)


def test_holds_only_its_own_filled_prefix():
    key = torch.randn(1, 2, 3, 4)
    cache = StaticKVCache.from_present([(key, key.clone())], room=2)
    assert cache.holds(cache.filled())
    assert not cache.holds([(key, key)])  # equal values, other storage: a new prompt
    k, v = cache.layers[0].write(torch.ones(1, 2, 1, 4), torch.zeros(1, 2, 1, 4))
    assert cache.holds([(k, v)]) and not cache.holds([(k[:, :, :3], v[:, :, :3])])
    assert torch.equal(k[:, :, :3], key) and torch.equal(k[:, :, 3], torch.ones(1, 2, 4))
