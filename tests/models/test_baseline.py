"""TransformersBaseline: loading, prefill logits, greedy generate and its timings, input checks."""

from __future__ import annotations

import shutil

import pytest
import torch

from holitom.errors import CheckpointError, InputError
from holitom.models.baseline import TransformersBaseline
from greedy import greedy_generate
from holitom.models.loading import load_llava
from tiny_llava import VIDEO_TOKEN, frames, max_diff, prompt_ids


@pytest.fixture(scope="module")
def baseline(onevision_ckpt):
    return TransformersBaseline.from_pretrained(onevision_ckpt.path)


def test_from_pretrained_loads_the_same_weights(baseline, onevision_ckpt):
    assert baseline.model.dtype == torch.float32 and not baseline.model.training
    for name, p in onevision_ckpt.hf.state_dict().items():
        assert torch.equal(baseline.model.state_dict()[name], p), name
    assert baseline.config.layout == "onevision"
    bf16 = TransformersBaseline.from_pretrained(onevision_ckpt.path, dtype=torch.bfloat16)
    assert bf16.model.dtype == torch.bfloat16


def test_prefill_logits_equal_our_model(baseline, onevision_ckpt):
    ours = load_llava(onevision_ckpt.path)
    ids = prompt_ids(3, 3, seed=41)
    pixels = frames(2, 56, seed=41)
    expanded = baseline.expand_video_placeholder(ids, 2)
    assert expanded.shape == (1, len(ids) - 1 + 2 * 4 + 1)
    pre = baseline.prefill(expanded, pixels)
    assert pre.logits.shape == (1, 128) and pre.seconds > 0
    with torch.no_grad():
        embeds, _ = ours.splice_video(ids, ours.unmerged_video_tokens(ours.encode_video(pixels).features))
        logits, _ = ours.prefill(embeds, torch.arange(embeds.shape[1])[None])
    assert max_diff(pre.logits, logits[:, -1]) <= 1e-4
    # (1, F, 3, H, W) and (F, 3, H, W) are the same input.
    assert torch.equal(baseline.prefill(expanded[0], pixels[None]).logits, pre.logits)


def test_generate_returns_tokens_and_consistent_timings(baseline, onevision_ckpt):
    ids = prompt_ids(2, 2, seed=42)
    pixels = frames(3, 56, seed=42)
    gen = baseline.generate(baseline.expand_video_placeholder(ids, 3), pixels, max_new_tokens=6)
    assert len(gen.tokens) == 6 and len(gen.token_times_s) == 6
    assert gen.token_times_s == sorted(gen.token_times_s)
    assert 0 < gen.ttft_s <= gen.total_s and gen.decode_s == pytest.approx(gen.token_times_s[-1] - gen.token_times_s[0])
    assert gen.decode_tokens_per_s == pytest.approx(5 / gen.decode_s)
    ours = load_llava(onevision_ckpt.path)
    with torch.no_grad():
        embeds, _ = ours.splice_video(ids, ours.unmerged_video_tokens(ours.encode_video(pixels).features))
    assert greedy_generate(ours, embeds, 6) == gen.tokens


def test_placeholder_count_is_checked(baseline):
    ids = prompt_ids(2, 2)
    with pytest.raises(InputError, match="hold 1 video placeholder tokens but 2 frames need 9"):
        baseline.prefill(ids, frames(2, 56))
    with pytest.raises(InputError, match="found 2"):
        baseline.expand_video_placeholder(torch.tensor([VIDEO_TOKEN, 3, VIDEO_TOKEN]), 1)
    with pytest.raises(InputError, match=r"pixel_values_videos must be \(F, 3, 56, 56\)"):
        baseline.prefill(baseline.expand_video_placeholder(ids, 1), torch.zeros(1, 3, 32, 32))


def test_pickle_only_checkpoint_is_refused(tmp_path, onevision_ckpt):
    shutil.copy(onevision_ckpt.path / "config.json", tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not-a-pickle")
    with pytest.raises(CheckpointError, match="never unpickles"):
        TransformersBaseline.from_pretrained(tmp_path)
