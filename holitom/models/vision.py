"""SigLIP vision tower (only the layers LLaVA uses) and the LLaVA MLP projector.

The tower builds ``num_vision_layers_used`` encoder layers: the selected feature layer
is the last one that exists, so later layers never run (and their checkpoint weights
are dropped by the loader). Every layer uses fused attention; the last one also computes
the attention each key receives (:func:`key_attention_scores`), which HoliTom reads,
from its fused attention's log-sum-exp (:func:`attention_with_key_scores`); methods that
read no scores skip them.
"""

from __future__ import annotations

import functools
import importlib.util

import torch
import torch.nn.functional as F
from torch import nn

from holitom.models.config import LlavaConfig, VisionConfig
from holitom.models.export_attention import bidirectional_attention
from holitom.models.ops import ACTIVATIONS


# Logit values per block of the blocked score pass: 2 MiB of float32, which stays in a core's L2.
_SCORE_BLOCK = 1 << 19
_LOG2_E = 1.4426950408889634  # log2(e)


def key_attention_scores(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention each key receives, averaged over heads and queries: ``(F, N)`` float32.

    ``q, k (F, H, N, hd)``. Equal to ``softmax(q k^T * scale).mean(heads).mean(queries)``
    with the softmax in float32 (transformers' eager probabilities, what HoliTom reads).
    That full ``(F, H, N, N)`` tensor is 1.1 GB at 32 frames x 729 patches x 16 heads;
    eager, the probabilities are built block by block in a cache-sized buffer and only
    their column sums are kept. Exported graphs (the frame count is symbolic) take the
    full tensor.
    """
    if torch.compiler.is_exporting():
        return _key_scores(_full_probabilities(q, k, scale))
    return _blocked_key_scores(q, k, scale, None)


def _full_probabilities(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """``(F, H, N, N)`` float32 ``softmax(q k^T * scale)``: the exported form."""
    return (torch.matmul(q, k.transpose(-1, -2)) * scale).softmax(dim=-1, dtype=torch.float32)


def _key_scores(probs: torch.Tensor) -> torch.Tensor:
    """``(F, H, N, N)`` probabilities -> ``(F, N)`` attention per key, averaged over heads and queries.

    One matmul with a constant row of ``1 / (H N)`` rather than two means: exported, onnxruntime's CPU
    ReduceMean over a non-last axis took 106 ms per 32 frames fed one frame per call, the MatMul 7 ms
    (one thread, the default model's 4 heads x 729 patches).
    """
    frames, heads, n, _ = probs.shape
    weights = probs.new_full((1, heads * n), 1.0 / (heads * n))  # (1, H*N)
    return torch.matmul(weights, probs.reshape(frames, heads * n, n)).reshape(frames, n)  # (F, 1, N) -> (F, N)


def attention_with_key_scores(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-attention output ``(F, H, N, hd)`` (q's dtype) and :func:`key_attention_scores` ``(F, N)``.

    - Eager on the CPU and CUDA: one fused attention kernel gives the output and each
      query's log-sum-exp; a blocked pass then sums ``exp(q k^T * scale - lse)`` over the
      queries of each key (one matmul and one exp2 per logit, no max, no row sums, no
      ``probs @ v``): about one extra ``q k^T`` over an ordinary layer (the whole layer
      measured 1.21x an ordinary one at SigLIP-so400m's widths, 2 frames, one CPU thread,
      ``scripts/bench_key_scores.py``; on an H200, 32 frames: 1.31x in bfloat16, 1.06x in
      float32, the sums in a Triton kernel, :func:`holitom.plugins_trt.kernels.key_column_sums`).
    - Under export, one ``MatMul -> Softmax`` feeds both outputs (the default model's
      vision_encoder.onnx on onnxruntime CPU: 334 ms against 399 ms with SDPA's own
      MatMul -> Softmax beside it). A TensorRT build may prefer SDPA's fused kernel plus
      a separate score chain; measure that there.

    Other devices take SDPA plus the blocked scores that find each row's log-sum-exp themselves.
    """
    if torch.compiler.is_exporting():
        probs = _full_probabilities(q, k, scale)  # (F, H, N, N)
        return torch.matmul(probs.to(v.dtype), v), _key_scores(probs)  # (F, H, N, hd), (F, N)
    fused = _FUSED_WITH_LSE.get(q.device.type)
    if fused is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale), key_attention_scores(q, k, scale)
    out, lse = fused(q, k, v, scale)  # (F, H, N, hd), (F, H, N) float32
    # The scores only rank tokens: no gradient flows through them (the blocked pass writes into buffers), while a
    # training step that reduces its video still differentiates the attention output.
    return out, _blocked_key_scores(q.detach(), k.detach(), scale, lse.detach())


def _cpu_attention_with_lse(q, k, v, scale):
    # PyTorch's CPU flash kernel (what SDPA runs on the CPU) also returns each query's log-sum-exp.
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, scale=scale)[:2]
    return out, lse  # (F, H, N, hd), (F, H, N) float32


def _cuda_attention_with_lse(q, k, v, scale):
    # 16-bit inputs take the fastest kernel SDPA itself would run for an ordinary layer: cuDNN's on Hopper
    # and newer, flash on Ampere. Measured on an H200 (bf16, 32 frames x 16 heads x 729, `bench_key_scores.py
    # --device cuda --dtype bfloat16`): with its log-sum-exp cuDNN 0.38 ms, flash 0.50 ms, memory-efficient
    # 1.03 ms; the whole last layer 1.31x / 1.44x / 1.74x an ordinary one. float32 takes the memory-efficient
    # kernel, the one that computes it in float32 (1.06x there).
    if q.dtype in (torch.float16, torch.bfloat16):
        capability = _capability(q.device)
        key = (q.device, q.dtype, q.shape[-1])
        if capability >= (9, 0) and torch.backends.cuda.cudnn_sdp_enabled() and key not in _CUDNN_REFUSED:
            try:
                return _cuda_cudnn_with_lse(q, k, v, scale)
            except RuntimeError:  # a cuDNN without this graph (version, head size): flash from now on
                _CUDNN_REFUSED.add(key)
        if capability >= (8, 0):
            return _cuda_flash_with_lse(q, k, v, scale)
    return _cuda_efficient_with_lse(q, k, v, scale)


_CUDNN_REFUSED: set[tuple[torch.device, torch.dtype, int]] = set()  # (device, dtype, head size) cuDNN refused


@functools.cache
def _capability(device: torch.device) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device)


def _pad_head_dim(q, k, v):
    # Both CUDA kernels want 16-bit head sizes that are multiples of 8 ("cutlassF: no kernel found to
    # launch" otherwise; SigLIP's 72 is one), so others are zero-padded: zero columns add nothing to q k^T,
    # and the output's padded columns (zero v) are dropped by the callers.
    pad = -q.shape[-1] % 8
    return (q, k, v) if not pad else tuple(F.pad(t, (0, pad)) for t in (q, k, v))  # (F, H, N, hd + pad)


def _cuda_flash_with_lse(q, k, v, scale):
    head_dim, n = q.shape[-1], q.shape[2]
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention(*_pad_head_dim(q, k, v), 0.0, False, False, scale=scale)[:2]
    return out[..., :head_dim], lse[..., :n].float()  # (F, H, N, hd), (F, H, N)


def _cuda_efficient_with_lse(q, k, v, scale):
    # It pads lse's last axis to a multiple of 32.
    head_dim, n = q.shape[-1], q.shape[2]
    out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(*_pad_head_dim(q, k, v), None, True, 0.0, False, scale=scale)[:2]
    return out[..., :head_dim], lse[..., :n].float()  # (F, H, N, hd), (F, H, N)


def _cuda_cudnn_with_lse(q, k, v, scale):
    # cuDNN's attention returns its softmax statistics (natural-log log-sum-exp) as (F, H, N, 1).
    head_dim, n = q.shape[-1], q.shape[2]
    out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(*_pad_head_dim(q, k, v), None, True, 0.0, False, False, scale=scale)[:2]
    return out[..., :head_dim], lse.flatten(2)[..., :n].float()  # (F, H, N, hd), (F, H, N)


# The CUDA kernels that give the attention output and each query's log-sum-exp, by name (the bench A/Bs them).
CUDA_LSE_KERNELS = {"flash": _cuda_flash_with_lse, "efficient": _cuda_efficient_with_lse, "cudnn": _cuda_cudnn_with_lse}


# Device type -> fused attention that also yields each query's log-sum-exp (natural log, float32).
_FUSED_WITH_LSE = {"cpu": _cpu_attention_with_lse, "cuda": _cuda_attention_with_lse}


@functools.cache
def _has_triton() -> bool:
    """Whether Triton can be imported (the CUDA score kernel's compiler); checked once, without importing it."""
    return importlib.util.find_spec("triton") is not None


def _blocked_key_scores(q: torch.Tensor, k: torch.Tensor, scale: float, lse: torch.Tensor | None) -> torch.Tensor:
    """Per-key mean probability ``(F, N)`` float32, in blocks of (frame, head) pairs, float32 accumulation.

    ``lse (F, H, N)``: each query's log-sum-exp of ``q k^T * scale`` when a fused kernel
    already found it; ``None`` finds it block by block.
    """
    frames, heads, n, _ = q.shape
    rows = frames * heads
    # Logits in base 2 (log2(e) folded into the scale): exp2 is several times faster than exp
    # on the CPU (measured 18 ms against 140 ms for 16 x 729 x 729 floats on one core).
    neg_lse2 = None if lse is None else lse.float().reshape(rows, n, 1).mul(-_LOG2_E)  # (F*H, N, 1)
    if neg_lse2 is not None and q.is_cuda and _has_triton():
        # One kernel keeps each logit tile in registers; the loop below would write and re-read every
        # logit in device memory (H200, 32 frames x 729 patches, bf16: 18.8 ms against 0.31 ms for SDPA).
        from holitom.plugins_trt.kernels import key_column_sums

        col_sums = key_column_sums(q, k, neg_lse2.view(rows, n), scale * _LOG2_E)  # (F*H, N); q, k read in place
    else:
        col_sums = _column_sums_in_blocks(q, k, scale, neg_lse2)  # (F*H, 1, N)
    return col_sums.view(frames, heads, n).mean(dim=1).div_(n)  # (F, N)


def _column_sums_in_blocks(q: torch.Tensor, k: torch.Tensor, scale: float, neg_lse2: torch.Tensor | None) -> torch.Tensor:
    """Each key's probability summed over the queries, ``(F*H, 1, N)`` float32, a cache-sized block of logits at a time.

    ``neg_lse2 (F*H, N, 1)``: minus each query's log-sum-exp in base 2, or None to find it per block.
    """
    frames, heads, n, head_dim = q.shape
    rows = frames * heads
    qf = (q.float() * (scale * _LOG2_E)).reshape(rows, n, head_dim)  # (F*H, N, hd)
    kt = k.float().reshape(rows, n, head_dim).transpose(-1, -2)  # (F*H, hd, N)
    block = max(1, min(rows, _SCORE_BLOCK // max(n * n, 1)))
    buf = qf.new_empty((block, n, n))
    col_sums = qf.new_empty((rows, 1, n))  # sum over queries of each key's probability
    for start in range(0, rows, block):  # cache blocking only
        stop = min(rows, start + block)
        logits = buf[: stop - start]  # (b, N, N)
        if neg_lse2 is None:
            torch.matmul(qf[start:stop], kt[start:stop], out=logits)
            logits.sub_(logits.amax(dim=-1, keepdim=True)).exp2_()  # unnormalised probabilities
            inv_row_sum = logits.sum(dim=-1, keepdim=True).reciprocal_()  # (b, N, 1)
            torch.matmul(inv_row_sum.transpose(-1, -2), logits, out=col_sums[start:stop])  # (b, 1, N)
        else:
            torch.baddbmm(neg_lse2[start:stop], qf[start:stop], kt[start:stop], out=logits)  # log2 of the probabilities
            torch.sum(logits.exp2_(), dim=1, keepdim=True, out=col_sums[start:stop])  # (b, 1, N)
    return col_sums


class VisionAttention(nn.Module):
    """Bidirectional multi-head self-attention over one frame's patches."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.scale = self.head_dim**-0.5
        d = cfg.hidden_size
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, with_scores: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Args: ``x (F, N, Dv)``.

        Returns:
            ``(F, N, Dv)`` output and, when ``with_scores``, the attention each key
            receives, averaged over heads and queries: ``(F, N)`` float32.
        """
        frames, n, d = x.shape
        q = self.q_proj(x).view(frames, n, self.num_heads, self.head_dim).transpose(1, 2)  # (F, H, N, hd)
        k = self.k_proj(x).view(frames, n, self.num_heads, self.head_dim).transpose(1, 2)  # (F, H, N, hd)
        v = self.v_proj(x).view(frames, n, self.num_heads, self.head_dim).transpose(1, 2)  # (F, H, N, hd)
        if with_scores:
            out, scores = attention_with_key_scores(q, k, v, self.scale)  # (F, H, N, hd), (F, N)
            out = out.transpose(1, 2).reshape(frames, n, d)  # (F, N, Dv)
        else:
            # An --attention onnxruntime export writes this as one fused node (holitom.models.export_attention).
            out, scores = bidirectional_attention(q, k, v, self.scale), None  # (F, N, Dv)
        return self.out_proj(out), scores


class VisionMLP(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = ACTIVATIONS[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VisionLayer(nn.Module):
    """Pre-LN transformer encoder layer."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = VisionAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = VisionMLP(cfg)

    def forward(self, x: torch.Tensor, with_scores: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn, scores = self.self_attn(self.layer_norm1(x), with_scores=with_scores)
        x = x + attn  # (F, N, Dv)
        x = x + self.mlp(self.layer_norm2(x))
        return x, scores


class VisionTower(nn.Module):
    """SigLIP patch embedding + the first ``num_layers`` encoder layers (no post-layernorm: LLaVA skips it)."""

    def __init__(self, cfg: VisionConfig, num_layers: int):
        super().__init__()
        self.cfg = cfg
        self.patch_embedding = nn.Conv2d(cfg.num_channels, cfg.hidden_size, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.position_embedding = nn.Embedding(cfg.num_patches, cfg.hidden_size)
        self.layers = nn.ModuleList(VisionLayer(cfg) for _ in range(num_layers))

    def forward(self, pixel_values: torch.Tensor, with_scores: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Args: ``pixel_values (F, 3, H, W)`` normalised frames at the tower's ``image_size``;
        ``with_scores=False`` skips the scores (methods that do not read them).

        Returns:
            ``hidden (F, N, Dv)`` from the last built layer and ``scores (F, N)``
            float32, that layer's attention averaged over heads and queries (None
            without ``with_scores``).
        """
        x = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))  # (F, Dv, g, g)
        x = x.flatten(2).transpose(1, 2)  # (F, N, Dv)
        x = x + self.position_embedding.weight[None]  # (F, N, Dv)
        last = len(self.layers) - 1
        scores = None
        for i, layer in enumerate(self.layers):
            x, layer_scores = layer(x, with_scores=with_scores and i == last)
            if i == last:
                scores = layer_scores
        return x, scores


class Projector(nn.Module):
    """LLaVA's two-layer MLP from the vision width to the decoder width."""

    def __init__(self, cfg: LlavaConfig):
        super().__init__()
        self.linear_1 = nn.Linear(cfg.vision.hidden_size, cfg.text.hidden_size, bias=cfg.projector_bias)
        self.act = ACTIVATIONS[cfg.projector_hidden_act]
        self.linear_2 = nn.Linear(cfg.text.hidden_size, cfg.text.hidden_size, bias=cfg.projector_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))  # (..., D)


__all__ = ["VisionTower", "VisionLayer", "VisionAttention", "Projector", "attention_with_key_scores", "key_attention_scores"]
