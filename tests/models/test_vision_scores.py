"""The vision layer's key attention scores: the cache-blocked CPU path against the full softmax."""

from __future__ import annotations

import pytest
import torch

import holitom.models.vision as vision
from holitom.models.vision import key_attention_scores


def full_scores(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    probs = (q.double() @ k.double().transpose(-1, -2) * scale).softmax(-1)  # (F, H, N, N)
    return probs.mean(dim=(1, 2))  # (F, N)


@pytest.mark.parametrize("block", [1, 7, 1 << 19])  # one logit row block, blocks across frame/head edges, one block
@pytest.mark.parametrize("frames, heads, n", [(1, 1, 1), (3, 2, 5), (5, 4, 33)])
def test_blocked_scores_match_the_full_softmax(monkeypatch, block, frames, heads, n):
    monkeypatch.setattr(vision, "_SCORE_BLOCK", block * n * n)
    g = torch.Generator().manual_seed(frames * 100 + n)
    q, k = (3 * torch.randn(frames, heads, n, 8, generator=g) for _ in range(2))
    scores = key_attention_scores(q, k, 8**-0.5)
    assert scores.dtype == torch.float32 and scores.shape == (frames, n)
    torch.testing.assert_close(scores.double(), full_scores(q, k, 8**-0.5), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(scores.sum(-1), torch.ones(frames))  # a probability distribution per frame


def test_half_inputs_accumulate_in_float32():
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 3, 40, 16, generator=g) for _ in range(2))
    scores = key_attention_scores(q.bfloat16(), k.bfloat16(), 0.25)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores.double(), full_scores(q.bfloat16().float(), k.bfloat16().float(), 0.25), atol=1e-6, rtol=1e-5)


def test_the_exported_path_is_the_full_softmax(monkeypatch):
    # Under torch.export the frame count is symbolic: the blocked loop must not run.
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    monkeypatch.setattr(vision, "_SCORE_BLOCK", None)  # the blocked path would raise TypeError
    g = torch.Generator().manual_seed(1)
    q, k = (torch.randn(2, 2, 9, 4, generator=g) for _ in range(2))
    torch.testing.assert_close(key_attention_scores(q, k, 0.5).double(), full_scores(q, k, 0.5), atol=1e-6, rtol=1e-5)
