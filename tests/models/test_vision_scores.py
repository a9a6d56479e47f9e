"""The vision layer's key attention scores: the fused-attention + log-sum-exp path and the
cache-blocked path against a float64 full-softmax reference."""

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


def full_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    probs = (q.double() @ k.double().transpose(-1, -2) * scale).softmax(-1)  # (F, H, N, N)
    return probs @ v.double()  # (F, H, N, hd)


@pytest.mark.parametrize("block", [1, 7, 1 << 19])
@pytest.mark.parametrize("frames, heads, n, head_dim", [(1, 1, 1, 4), (3, 2, 5, 8), (5, 4, 33, 6)])
def test_output_and_scores_in_one_pass_match_float64(monkeypatch, block, frames, heads, n, head_dim):
    monkeypatch.setattr(vision, "_SCORE_BLOCK", block * n * n)
    g = torch.Generator().manual_seed(frames * 10 + n)
    q, k, v = (3 * torch.randn(frames, heads, n, head_dim, generator=g) for _ in range(3))
    scale = head_dim**-0.5
    out, scores = vision.attention_with_key_scores(q, k, v, scale)
    assert out.shape == (frames, heads, n, head_dim) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), full_attention(q, k, v, scale), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores.double(), full_scores(q, k, scale), atol=1e-6, rtol=1e-5)
    # The scores-only function (which finds each row's log-sum-exp itself) agrees to float32 round-off,
    # and the output is SDPA's.
    torch.testing.assert_close(scores, key_attention_scores(q, k, scale), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale), atol=1e-5, rtol=1e-5)


def test_one_pass_keeps_the_input_dtype():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 3, 20, 8, generator=g).bfloat16() for _ in range(3))
    out, scores = vision.attention_with_key_scores(q, k, v, 8**-0.5)
    assert out.dtype == torch.bfloat16 and scores.dtype == torch.float32
    expected = full_attention(q.float(), k.float(), v.float(), 8**-0.5)
    torch.testing.assert_close(out.double(), expected, atol=2e-2, rtol=1e-2)  # bfloat16 output rounding


def test_exported_one_pass_shares_one_softmax(monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    monkeypatch.setattr(vision, "_SCORE_BLOCK", None)  # the blocked path would raise TypeError
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 2, 9, 4, generator=g) for _ in range(3))
    out, scores = vision.attention_with_key_scores(q, k, v, 0.5)
    torch.testing.assert_close(out.double(), full_attention(q, k, v, 0.5), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(scores.double(), full_scores(q, k, 0.5), atol=1e-6, rtol=1e-5)



@pytest.mark.parametrize("frames, heads, n, head_dim", [(2, 3, 1, 8), (3, 16, 27, 72), (1, 2, 729, 16), (4, 5, 97, 12)])
def test_fused_lse_scores_never_build_the_full_probabilities(monkeypatch, frames, heads, n, head_dim):
    # Odd N, SigLIP's 16 heads of 72, its 729 patches: the fused kernel's log-sum-exp drives the blocked column sums.
    def refuse(*args):
        raise AssertionError("the eager path built the (F, H, N, N) probabilities")

    monkeypatch.setattr(vision, "_full_probabilities", refuse)
    g = torch.Generator().manual_seed(frames * 1000 + n)
    q, k, v = (2 * torch.randn(frames, heads, n, head_dim, generator=g) for _ in range(3))
    scale = head_dim**-0.5
    out, scores = vision.attention_with_key_scores(q, k, v, scale)
    torch.testing.assert_close(scores.double(), full_scores(q, k, scale), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.double(), full_attention(q, k, v, scale), atol=1e-5, rtol=1e-5)


def test_bfloat16_scores_accumulate_in_float32_on_the_cpu():
    # bf16 q, k, v: the fused kernel's log-sum-exp is float32 and the column sums run in float32, so the
    # scores match the float64 softmax of the bf16-rounded inputs to float32 round-off, not to bf16's.
    g = torch.Generator().manual_seed(4)
    q, k, v = (2 * torch.randn(3, 4, 53, 16, generator=g).bfloat16() for _ in range(3))
    out, scores = vision.attention_with_key_scores(q, k, v, 0.25)
    assert out.dtype == torch.bfloat16 and scores.dtype == torch.float32
    torch.testing.assert_close(scores.double(), full_scores(q.float(), k.float(), 0.25), atol=2e-6, rtol=1e-4)


def test_the_tower_skips_the_scores_when_asked(onevision_ckpt, monkeypatch):
    from holitom.models.loading import load_llava
    from tiny_llava import frames

    model = load_llava(onevision_ckpt.path)
    pixels = frames(2, 56, seed=8)
    with torch.no_grad():
        full = model.encode_video(pixels)

        def refuse(*args):
            raise AssertionError("key scores computed although with_attention=False")

        monkeypatch.setattr(vision, "attention_with_key_scores", refuse)
        lean = model.encode_video(pixels, with_attention=False)
    assert lean.attention is None and full.attention is not None
    torch.testing.assert_close(lean.features, full.features, atol=1e-5, rtol=1e-5)  # SDPA vs the fused + lse kernel


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("frames, heads, n, head_dim", [(2, 3, 1, 8), (3, 16, 27, 72), (2, 16, 729, 72), (4, 5, 97, 12)])
def test_scores_on_cuda_match_float64_without_the_full_probabilities(monkeypatch, dtype, frames, heads, n, head_dim):
    # The CUDA fused kernel's log-sum-exp (float32 for bf16 inputs too) drives the same blocked column sums;
    # the reference is the float64 softmax of the (rounded) inputs, so only float32 round-off separates them.
    def refuse(*args):
        raise AssertionError("the eager path built the (F, H, N, N) probabilities")

    monkeypatch.setattr(vision, "_full_probabilities", refuse)
    g = torch.Generator().manual_seed(frames * 1000 + n + head_dim)
    q, k, v = (2 * torch.randn(frames, heads, n, head_dim, generator=g).to(dtype) for _ in range(3))
    scale = head_dim**-0.5
    out, scores = vision.attention_with_key_scores(q.cuda(), k.cuda(), v.cuda(), scale)
    assert out.dtype == dtype and scores.dtype == torch.float32 and scores.device.type == "cuda"
    torch.testing.assert_close(scores.cpu().double(), full_scores(q.float(), k.float(), scale), atol=2e-6, rtol=1e-4)
    out_atol, out_rtol = (1e-5, 1e-5) if dtype == torch.float32 else (2e-2, 1e-2)  # bf16 output rounding
    torch.testing.assert_close(out.cpu().double(), full_attention(q.float(), k.float(), v.float(), scale), atol=out_atol, rtol=out_rtol)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kernel, dtype", [("flash", torch.bfloat16), ("flash", torch.float16), ("efficient", torch.bfloat16), ("efficient", torch.float32),
                                           ("cudnn", torch.bfloat16), ("cudnn", torch.float16)])
@pytest.mark.parametrize("frames, heads, n, head_dim", [(2, 3, 1, 8), (2, 16, 729, 72), (4, 5, 97, 12)])
def test_both_cuda_kernels_give_the_log_sum_exp(kernel, dtype, frames, heads, n, head_dim):
    # Each query's natural-log log-sum-exp of q k^T * scale (float32) and the attention output, against float64.
    fused = vision.CUDA_LSE_KERNELS[kernel]
    g = torch.Generator().manual_seed(frames * 1000 + n + head_dim)
    q, k, v = (2 * torch.randn(frames, heads, n, head_dim, generator=g).to(dtype) for _ in range(3))
    scale = head_dim**-0.5
    out, lse = fused(q.cuda(), k.cuda(), v.cuda(), scale)
    logits = q.double() @ k.double().transpose(-1, -2) * scale  # (F, H, N, N)
    assert lse.dtype == torch.float32 and lse.shape == (frames, heads, n) and out.shape == q.shape and out.dtype == dtype
    torch.testing.assert_close(lse.cpu().double(), logits.logsumexp(dim=-1), atol=1e-4, rtol=1e-5)
    out_atol, out_rtol = (1e-5, 1e-5) if dtype == torch.float32 else (2e-2, 1e-2)  # 16-bit output rounding
    torch.testing.assert_close(out.cpu().double(), full_attention(q.float(), k.float(), v.float(), scale), atol=out_atol, rtol=out_rtol)


def test_cuda_16bit_takes_cudnn_on_hopper_and_flash_after_a_refusal(monkeypatch):
    # The dispatch alone (no CUDA here): which kernel each capability and dtype gets, and that a cuDNN
    # refusal is remembered per (device, dtype, head size) so it is tried once.
    calls = []

    def fake(name, refuse=False):
        def run(q, k, v, scale):
            calls.append(name)
            if refuse:
                raise RuntimeError("cuDNN refused")
            return q, q[..., 0].float()

        return run

    monkeypatch.setattr(vision, "_cuda_efficient_with_lse", fake("efficient"))
    monkeypatch.setattr(vision, "_cuda_flash_with_lse", fake("flash"))
    monkeypatch.setattr(vision, "_cuda_cudnn_with_lse", fake("cudnn"))
    monkeypatch.setattr(vision, "_CUDNN_REFUSED", set())
    monkeypatch.setattr(torch.backends.cuda, "cudnn_sdp_enabled", lambda: True)
    q16, q32 = torch.zeros(1, 1, 4, 8, dtype=torch.bfloat16), torch.zeros(1, 1, 4, 8)
    for capability, dtype_q, want in (((9, 0), q16, "cudnn"), ((8, 7), q16, "flash"), ((7, 5), q16, "efficient"), ((9, 0), q32, "efficient")):
        monkeypatch.setattr(vision, "_capability", lambda device, c=capability: c)
        calls.clear()
        vision._cuda_attention_with_lse(dtype_q, dtype_q, dtype_q, 1.0)
        assert calls == [want], (capability, dtype_q.dtype)
    monkeypatch.setattr(vision, "_capability", lambda device: (9, 0))
    monkeypatch.setattr(vision, "_cuda_cudnn_with_lse", fake("cudnn", refuse=True))
    calls.clear()
    vision._cuda_attention_with_lse(q16, q16, q16, 1.0)
    vision._cuda_attention_with_lse(q16, q16, q16, 1.0)
    assert calls == ["cudnn", "flash", "flash"]  # refused once, then flash without asking again


def test_one_pass_output_is_differentiable_and_the_scores_are_not():
    # A training step that reduces its video ranks tokens by the scores and differentiates the output.
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, 3, 11, 8, generator=g).requires_grad_(True) for _ in range(3))
    out, scores = vision.attention_with_key_scores(q, k, v, 8**-0.5)
    assert not scores.requires_grad
    upstream = torch.randn(out.shape, generator=g)
    (out * upstream).sum().backward()
    q2, k2, v2 = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    (full_attention(q2, k2, v2, 8**-0.5) * upstream.double()).sum().backward()
    for ours, reference in ((q, q2), (k, k2), (v, v2)):
        torch.testing.assert_close(ours.grad.double(), reference.grad, atol=1e-5, rtol=1e-5)
