"""Split execution (decoder_head / decoder_tail / decode_step) against prefill and transformers' Qwen2 layers."""

from __future__ import annotations

import pytest
import torch

from holitom.errors import InputError
from holitom.models.baseline import TransformersBaseline
from holitom.models.loading import load_llava
from tiny_llava import IMAGE_TOKEN, VIDEO_TOKEN, frames, max_diff, prompt_ids

NUM_LAYERS = 4
SPLIT_ATOL = 1e-5
LOGITS_ATOL = 1e-4
ATTENTION_ATOL = 1e-6


@pytest.fixture(scope="module")
def setup(onevision_ckpt):
    """Our model, the spliced prompt (3 frames, text on both sides) and its visual span."""
    model = load_llava(onevision_ckpt.path)
    ids = prompt_ids(4, 5, seed=7)
    pixels = frames(3, 56, seed=7)
    with torch.no_grad():
        embeds, span = model.splice_video(ids, model.unmerged_video_tokens(model.encode_video(pixels).features))
    positions = torch.arange(embeds.shape[1])[None]
    return model, ids, pixels, embeds, positions, span


def _decode(model, past, token: int, position: int, steps: int = 3) -> list[torch.Tensor]:
    """Greedy-free decode: feed the same fixed tokens, collect logits."""
    out = []
    for i in range(steps):
        emb = model.embed(torch.tensor([[token + i]]))
        logits, past = model.decode_step(emb, torch.tensor([[position + i]]), past)
        out.append(logits)
    return out


@torch.no_grad()
@pytest.mark.parametrize("K", range(1, NUM_LAYERS + 1))
def test_head_plus_tail_equals_prefill_at_every_split(setup, K):
    model, _, _, embeds, positions, span = setup
    full_logits, full_present = model.prefill(embeds, positions)
    head = model.decoder_head(embeds, positions, K, span)
    tail = model.decoder_tail(head.hidden, positions, K)
    assert head.hidden.shape == embeds.shape
    assert len(head.present) == K and len(tail.present) == NUM_LAYERS - K
    assert head.attn_row.shape == (span[1] - span[0],) and head.attn_row.dtype == torch.float32
    assert tail.logits.shape == (1, 128)
    assert max_diff(tail.logits, full_logits[:, -1]) <= SPLIT_ATOL
    for (k, v), (k_ref, v_ref) in zip(head.present + tail.present, full_present):
        assert k.shape == k_ref.shape == (1, 2, embeds.shape[1], 16)
        assert max_diff(k, k_ref) <= SPLIT_ATOL and max_diff(v, v_ref) <= SPLIT_ATOL

    # Decoding from the split caches equals decoding from the unsplit ones.
    s = embeds.shape[1]
    split = _decode(model, head.present + tail.present, token=11, position=s)
    unsplit = _decode(model, full_present, token=11, position=s)
    for a, b in zip(split, unsplit):
        assert max_diff(a, b) <= SPLIT_ATOL


@torch.no_grad()
def test_attn_row_equals_transformers_eager_attention(setup, onevision_ckpt):
    model, ids, pixels, embeds, positions, span = setup
    hf_eager = onevision_ckpt.hf_eager()
    expanded = TransformersBaseline(hf_eager, model.config).expand_video_placeholder(ids, 3)
    out = hf_eager(input_ids=expanded, pixel_values_videos=pixels[None], output_attentions=True)
    assert len(out.attentions) == NUM_LAYERS
    for K in range(1, NUM_LAYERS + 1):
        row = model.decoder_head(embeds, positions, K, span).attn_row
        ref = out.attentions[K - 1][0, :, -1, span[0] : span[1]].mean(dim=0)  # (L_v,)
        assert max_diff(row, ref) <= ATTENTION_ATOL, f"K={K}"
    # visual_span=None gives the row over every key (for exporters that slice at run time).
    full_row = model.decoder_head(embeds, positions, 2, None).attn_row
    assert max_diff(full_row, out.attentions[1][0, :, -1].mean(dim=0)) <= ATTENTION_ATOL


class HFLayers:
    """Reference: transformers' own Qwen2 decoder layers applied one by one with explicit positions and a cache."""

    def __init__(self, hf):
        self.lm = hf.model.language_model
        self.head = hf.lm_head
        self.cache = transformers_cache()

    def run(self, hidden: torch.Tensor, positions: torch.Tensor, layers: range) -> torch.Tensor:
        cos_sin = self.lm.rotary_emb(hidden, positions)
        for i in layers:
            # attention_mask=None: transformers' SDPA path is causal for >1 query and unmasked for one.
            hidden = self.lm.layers[i](
                hidden, attention_mask=None, position_embeddings=cos_sin, position_ids=positions,
                past_key_values=self.cache, use_cache=True,
            )
        return hidden

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(self.lm.norm(hidden[:, -1]))


def transformers_cache():
    from transformers import DynamicCache

    return DynamicCache()


@torch.no_grad()
@pytest.mark.parametrize("K", [1, 2, 3])
def test_tail_on_merged_sequence_keeps_original_positions(setup, onevision_ckpt, K):
    """Drop every other visual token after layer K-1; layers K.. and decoding match transformers' layers
    run on the kept subsequence with gapped position ids and per-layer cache lengths."""
    model, _, _, embeds, positions, span = setup
    s = embeds.shape[1]
    keep = torch.tensor([i for i in range(s) if not (span[0] <= i < span[1]) or (i - span[0]) % 2 == 0])
    assert len(keep) < s
    head = model.decoder_head(embeds, positions, K, span)
    kept_hidden = head.hidden[:, keep]  # (1, S', D)
    kept_pos = positions[:, keep]  # gapped original positions
    tail = model.decoder_tail(kept_hidden, kept_pos, K)

    ref = HFLayers(onevision_ckpt.hf)
    ref_hidden = ref.run(embeds, positions, range(K))
    assert max_diff(head.hidden, ref_hidden) <= SPLIT_ATOL
    ref_tail = ref.run(ref_hidden[:, keep], kept_pos, range(K, NUM_LAYERS))
    assert max_diff(tail.logits, ref.logits(ref_tail)) <= LOGITS_ATOL

    # Positions matter: the same kept tokens renumbered 0..S'-1 give different logits.
    renumbered = model.decoder_tail(kept_hidden, torch.arange(len(keep))[None], K)
    assert max_diff(renumbered.logits, tail.logits) > 1e-3

    # Cache lengths per layer group: full prompt below K, kept tokens from K on.
    past = head.present + tail.present
    assert [kv[0].shape[2] for kv in past] == [s] * K + [len(keep)] * (NUM_LAYERS - K)
    for step in range(3):
        token = torch.tensor([[17 + step]])
        position = torch.tensor([[s + step]])  # decoding continues at the FULL prompt length
        logits, past = model.decode_step(model.embed(token), position, past)
        ref_logits = ref.logits(ref.run(model.embed(token), position, range(NUM_LAYERS)))
        assert max_diff(logits, ref_logits) <= LOGITS_ATOL
    assert [kv[0].shape[2] for kv in past] == [s + 3] * K + [len(keep) + 3] * (NUM_LAYERS - K)


@torch.no_grad()
def test_tail_without_drops_equals_prefill(setup):
    model, _, _, embeds, positions, span = setup
    full_logits, _ = model.prefill(embeds, positions)
    head = model.decoder_head(embeds, positions, 2, span)
    assert max_diff(model.decoder_tail(head.hidden, positions, 2).logits, full_logits[:, -1]) <= SPLIT_ATOL


@torch.no_grad()
def test_decoder_inputs_are_not_modified(setup):
    model, _, _, embeds, positions, span = setup
    before = embeds.clone()
    head = model.decoder_head(embeds, positions, 2, span)
    hidden_before = head.hidden.clone()
    past = [(k.clone(), v.clone()) for k, v in head.present]
    model.decoder_tail(head.hidden, positions, 2)
    tail = model.decoder_tail(head.hidden, positions, 2)
    model.decode_step(model.embed(torch.tensor([[3]])), torch.tensor([[embeds.shape[1]]]), head.present + tail.present)
    assert torch.equal(embeds, before) and torch.equal(head.hidden, hidden_before)
    assert all(torch.equal(k, k0) and torch.equal(v, v0) for (k, v), (k0, v0) in zip(head.present, past))


@torch.no_grad()
def test_layer_continuation_with_several_new_tokens_matches_one_pass(setup):
    """A layer given a cache and several new tokens (the masked branch) equals running them all at once."""
    model, _, _, embeds, positions, _ = setup
    from holitom.models.ops import rope_cos_sin

    t = model.config.text
    cos, sin = rope_cos_sin(positions, t.head_dim, t.rope_theta, embeds.dtype)
    split = 11
    x_full, x_a, x_b = embeds, embeds[:, :split], embeds[:, split:]
    for layer in model.decoder.layers:
        x_full, kv_full, _ = layer(x_full, cos, sin)
        x_a, kv_a, _ = layer(x_a, cos[:, :split], sin[:, :split])
        x_b, kv_b, _ = layer(x_b, cos[:, split:], sin[:, split:], kv_a)
        assert max_diff(kv_b[0], kv_full[0]) <= SPLIT_ATOL and max_diff(kv_b[1], kv_full[1]) <= SPLIT_ATOL
    # The residual stream reaches |x| ~ 100 here, so compare what leaves the model: logits at every position.
    assert max_diff(model._logits(torch.cat((x_a, x_b), dim=1)), model._logits(x_full)) <= LOGITS_ATOL


def test_splice_video_rejects_wrong_placeholder_counts(setup):
    model = setup[0]
    video = torch.zeros(5, 64)
    with pytest.raises(InputError, match="found 0"):
        model.splice_video(torch.tensor([1, 2, 3]), video)
    with pytest.raises(InputError, match="found 2"):
        model.splice_video(torch.tensor([1, VIDEO_TOKEN, 2, VIDEO_TOKEN]), video)
    with pytest.raises(InputError, match="image placeholders"):
        model.splice_video(torch.tensor([IMAGE_TOKEN, VIDEO_TOKEN]), video)
    with pytest.raises(InputError, match=r"video_embeds must be \(N, 64\)"):
        model.splice_video(torch.tensor([VIDEO_TOKEN]), torch.zeros(5, 32))
    embeds, span = model.splice_video(torch.tensor([7, VIDEO_TOKEN, 8]), video)
    assert embeds.shape == (1, 7, 64) and span == (1, 6)
    assert torch.equal(embeds[0, 1:6], video) and torch.equal(embeds[0, 0], model.embed_tokens.weight[7])


def test_decoder_methods_reject_bad_arguments(setup):
    model, _, _, embeds, positions, span = setup
    with pytest.raises(InputError, match="split layer K must be an int in 1..4, got 0"):
        model.decoder_head(embeds, positions, 0, span)
    with pytest.raises(InputError, match="split layer K"):
        model.decoder_tail(embeds, positions, 5)
    with pytest.raises(InputError, match="position_ids must be an integer tensor of shape"):
        model.prefill(embeds, positions[:, :-1])
    with pytest.raises(InputError, match="visual_span"):
        model.decoder_head(embeds, positions, 2, (3, embeds.shape[1] + 1))
    with pytest.raises(InputError, match="dtype"):
        model.prefill(embeds.double(), positions)
    with pytest.raises(InputError, match="one \\(key, value\\) pair per layer \\(4\\), got 3"):
        past = [(torch.zeros(1, 2, 3, 16), torch.zeros(1, 2, 3, 16))] * 3
        model.decode_step(embeds[:, :1], positions[:, :1], past)
    with pytest.raises(InputError, match="one token"):
        model.decode_step(embeds[:, :2], positions[:, :2], [])
    with pytest.raises(InputError, match=r"pixel_values must be \(F, 3, 56, 56\)"):
        model.encode_video(torch.zeros(2, 3, 64, 64))
