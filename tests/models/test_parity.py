"""Parity of our model code with transformers' LlavaOnevisionForConditionalGeneration (same weights, float32)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from holitom.models.baseline import TransformersBaseline
from greedy import greedy_generate
from holitom.models.loading import load_llava
from tiny_llava import VIDEO_TOKEN, frames, max_diff, prompt_ids, write_checkpoint

FEATURE_ATOL = 1e-5
ATTENTION_ATOL = 1e-6
LOGITS_ATOL = 1e-4


def hf_vision_attention(hf_eager, pixels: torch.Tensor, layer: int) -> torch.Tensor:
    """Oracle a[t, n]: eager SigLIP attention of ``layer``, mean over heads then over queries -> (F, N)."""
    with torch.no_grad():
        out = hf_eager.model.vision_tower(pixels, output_attentions=True)
    probs = out.attentions[layer]  # (F, H, N, N)
    return probs.mean(dim=1).mean(dim=1)


@pytest.mark.parametrize("num_frames", [1, 3, 7])
def test_onevision_features_and_attention_match_transformers(onevision_ckpt, num_frames):
    ours = load_llava(onevision_ckpt.path)
    hf_eager = onevision_ckpt.hf_eager()
    pixels = frames(num_frames, 56, seed=num_frames)
    vf = ours.encode_video(pixels)

    with torch.no_grad():
        ref = onevision_ckpt.hf.model.get_video_features(pixels[None]).pooler_output  # (1, F*P + 1, D)
        ref_attention = hf_eager.model.apply_pooling(hf_vision_attention(hf_eager, pixels, layer=2)[..., None])[..., 0]
    assert vf.grid == (2, 2) and ours.grid == (2, 2) and ours.layout == "onevision"
    assert vf.features.shape == (num_frames, 4, 64)
    assert vf.attention.shape == (num_frames, 4) and vf.attention.dtype == torch.float32
    assert max_diff(vf.features.flatten(0, 1), ref[0, :-1]) <= FEATURE_ATOL
    # transformers appends the newline last; we expose it instead of inserting it.
    assert max_diff(ours.image_newline, ref[0, -1]) == 0.0
    assert max_diff(ours.unmerged_video_tokens(vf.features), ref[0]) <= FEATURE_ATOL
    assert max_diff(vf.attention, ref_attention) <= ATTENTION_ATOL
    # Attention each key receives, averaged over queries, sums to 1 per frame before pooling;
    # a constant map would make the comparison above weak.
    assert vf.attention.std() > 1e-3


def test_real_geometry_27x27_pools_to_14x14_and_13x13(geometry_ckpt):
    pixels = frames(2, 384, seed=5)
    ours = load_llava(geometry_ckpt.path)
    hf_eager = geometry_ckpt.hf_eager()
    vf = ours.encode_video(pixels)
    with torch.no_grad():
        ref = geometry_ckpt.hf.model.get_video_features(pixels[None]).pooler_output  # (1, 2*196 + 1, D)
        raw_attention = hf_vision_attention(hf_eager, pixels, layer=1)  # (2, 729)
        ref_attention = hf_eager.model.apply_pooling(raw_attention[..., None])[..., 0]
    assert raw_attention.shape == (2, 729)
    assert vf.grid == (14, 14) and ours.config.tokens_per_frame == 196
    assert vf.features.shape == (2, 196, 64)
    assert max_diff(vf.features.flatten(0, 1), ref[0, :-1]) <= FEATURE_ATOL
    assert max_diff(vf.attention, ref_attention) <= ATTENTION_ATOL

    video = load_llava(geometry_ckpt.path, variant="llava_video")
    vv = video.encode_video(pixels)
    assert vv.grid == (13, 13) and video.layout == "llava_video"
    assert vv.features.shape == (2, 169, 64) and vv.attention.shape == (2, 169)
    # avg pool stride 2 drops the 27th row/column: pooled cell (12, 12) averages patches 24..25 x 24..25.
    cell = raw_attention.reshape(2, 27, 27)[:, 24:26, 24:26].mean(dim=(1, 2))
    assert max_diff(vv.attention[:, -1], cell) <= ATTENTION_ATOL


@pytest.mark.parametrize("feature_layer, built", [(-2, 2), (1, 1)])
def test_vision_feature_layer_runs_only_needed_layers(tmp_path, feature_layer, built):
    ckpt = write_checkpoint(tmp_path / "ckpt", feature_layer=feature_layer, seed=3)
    ours = load_llava(ckpt.path)  # the checkpoint still stores all 3 SigLIP layers + post_layernorm
    assert len(ours.vision.layers) == built
    assert ours.config.vision_attention_layer == built - 1
    pixels = frames(2, 56, seed=4)
    hf_eager = ckpt.hf_eager()
    vf = ours.encode_video(pixels)
    with torch.no_grad():
        ref = ckpt.hf.model.get_video_features(pixels[None]).pooler_output
        ref_attention = hf_eager.model.apply_pooling(hf_vision_attention(hf_eager, pixels, layer=built - 1)[..., None])[..., 0]
    assert max_diff(vf.features.flatten(0, 1), ref[0, :-1]) <= FEATURE_ATOL
    assert max_diff(vf.attention, ref_attention) <= ATTENTION_ATOL


def literal_avg_pool(grid: torch.Tensor) -> torch.Tensor:
    """(F, g, g, C) -> (F, g//2 * g//2, C) by explicit 2x2 block means, row-major."""
    num_frames, g, _, c = grid.shape
    out = []
    for t in range(num_frames):
        cells = []
        for r in range(g // 2):
            for col in range(g // 2):
                block = [grid[t, 2 * r + i, 2 * col + j] for i in range(2) for j in range(2)]
                cells.append(sum(block) / 4)
        out.append(torch.stack(cells))
    return torch.stack(out)


@pytest.mark.parametrize("num_frames", [1, 3])
def test_llava_video_tower_projector_pooling_and_row_newlines(llava_video_ckpt, num_frames):
    ours = load_llava(llava_video_ckpt.path)  # variant from config.json's holitom_variant
    assert ours.layout == "llava_video" and ours.grid == (3, 3)
    hf_eager = llava_video_ckpt.hf_eager()
    pixels = frames(num_frames, 84, seed=10 + num_frames)
    vf = ours.encode_video(pixels)
    with torch.no_grad():
        out = hf_eager.model.vision_tower(pixels, output_hidden_states=True, output_attentions=True)
        projected = hf_eager.model.multi_modal_projector(out.hidden_states[-1])  # (F, 36, D)
    ref_features = literal_avg_pool(projected.reshape(num_frames, 6, 6, -1))  # (F, 9, D)
    ref_attention = literal_avg_pool(out.attentions[2].mean(1).mean(1).reshape(num_frames, 6, 6, 1))[..., 0]
    assert max_diff(vf.features, ref_features) <= FEATURE_ATOL
    assert max_diff(vf.attention, ref_attention) <= ATTENTION_ATOL

    tokens = ours.unmerged_video_tokens(vf.features)
    literal = []
    for t in range(num_frames):
        for r in range(3):
            literal.extend(vf.features[t, r * 3 + c] for c in range(3))
            literal.append(ours.image_newline)
    assert tokens.shape == (num_frames * 3 * 4, 64) == (ours.config.num_video_tokens(num_frames), 64)
    assert torch.equal(tokens, torch.stack(literal))


def _hf_logits(hf, ids: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf(input_ids=ids, pixel_values_videos=pixels[None]).logits  # (1, S, V)


@pytest.mark.parametrize(
    "num_frames, before, after",
    [(1, 3, 4), (3, 5, 2), (7, 2, 6), (3, 0, 5)],  # the last prompt starts with the video
)
def test_prefill_logits_match_transformers(onevision_ckpt, num_frames, before, after):
    ours = load_llava(onevision_ckpt.path)
    baseline = TransformersBaseline(onevision_ckpt.hf, ours.config)
    ids = prompt_ids(before, after, seed=num_frames)
    pixels = frames(num_frames, 56, seed=num_frames)
    with torch.no_grad():
        embeds, span = ours.splice_video(ids, ours.unmerged_video_tokens(ours.encode_video(pixels).features))
        logits, present = ours.prefill(embeds, torch.arange(embeds.shape[1])[None])
    expanded = baseline.expand_video_placeholder(ids, num_frames)
    assert span == (before, before + num_frames * 4 + 1)
    assert embeds.shape[1] == expanded.shape[1]
    ref = _hf_logits(onevision_ckpt.hf, expanded, pixels)
    assert logits.shape == ref.shape == (1, expanded.shape[1], 128)
    assert max_diff(logits, ref) <= LOGITS_ATOL
    assert len(present) == 4 and present[0][0].shape == (1, 2, expanded.shape[1], 16)


@pytest.mark.parametrize("num_frames", [1, 3, 7])
def test_greedy_generation_matches_transformers_generate(onevision_ckpt, num_frames):
    ours = load_llava(onevision_ckpt.path)
    baseline = TransformersBaseline(onevision_ckpt.hf, ours.config)
    ids = prompt_ids(4, 3, seed=20 + num_frames)
    pixels = frames(num_frames, 56, seed=20 + num_frames)
    with torch.no_grad():
        embeds, _ = ours.splice_video(ids, ours.unmerged_video_tokens(ours.encode_video(pixels).features))
    tokens = greedy_generate(ours, embeds, max_new_tokens=12)
    ref = baseline.generate(baseline.expand_video_placeholder(ids, num_frames), pixels, max_new_tokens=12)
    assert tokens == ref.tokens
    assert len(set(tokens)) > 2, f"degenerate generation {tokens}: the parity check would be weak"

    # Stopping: make the 5th generated token an EOS; both loops must stop right after it.
    eos = tokens[4]
    first = tokens.index(eos)
    stopped = greedy_generate(ours, embeds, max_new_tokens=12, eos_token_ids=[eos])
    ref_stopped = baseline.generate(baseline.expand_video_placeholder(ids, num_frames), pixels, 12, eos_token_ids=[eos])
    assert stopped == ref_stopped.tokens == tokens[: first + 1]


@pytest.mark.parametrize("num_frames", [1, 3])
def test_llava_video_greedy_generation_matches_transformers_baseline(llava_video_ckpt, num_frames):
    ours = load_llava(llava_video_ckpt.path)
    baseline = TransformersBaseline(llava_video_ckpt.hf, ours.config)
    ids = prompt_ids(3, 3, seed=30 + num_frames)
    pixels = frames(num_frames, 84, seed=30 + num_frames)
    with torch.no_grad():
        embeds, span = ours.splice_video(ids, ours.unmerged_video_tokens(ours.encode_video(pixels).features))
        logits, _ = ours.prefill(embeds, torch.arange(embeds.shape[1])[None])
    expanded = baseline.expand_video_placeholder(ids, num_frames)
    assert expanded.shape[1] == embeds.shape[1] == 6 + num_frames * 12 and span[1] - span[0] == num_frames * 12
    assert max_diff(logits[0, -1], baseline.prefill(expanded, pixels).logits[0]) <= LOGITS_ATOL
    tokens = greedy_generate(ours, embeds, max_new_tokens=10)
    assert tokens == baseline.generate(expanded, pixels, max_new_tokens=10).tokens
    assert len(set(tokens)) > 2


def test_projector_uses_exact_gelu_and_tower_uses_tanh_gelu(onevision_ckpt):
    """Guards the two activations whose mix-up would stay within loose tolerances on small inputs."""
    ours = load_llava(onevision_ckpt.path)
    x = torch.linspace(-4, 4, 101)
    assert torch.equal(ours.projector.act(x), F.gelu(x))
    assert torch.equal(ours.vision.layers[0].mlp.act(x), F.gelu(x, approximate="tanh"))
    assert not torch.equal(F.gelu(x), F.gelu(x, approximate="tanh"))
    assert VIDEO_TOKEN == ours.config.video_token_id
