"""Small numeric building blocks shared by the vision tower and the decoder.

Each function reproduces transformers' arithmetic order (dtype casts included), so
our modules agree with the oracle to float32 round-off.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    # SigLIP's "gelu_pytorch_tanh": PyTorch's fused tanh approximation (one fused node in the onnxruntime export form).
    from holitom.models.export_attention import gelu_tanh  # not at import time: that module imports this one

    return gelu_tanh(x)


# Registry keyed by the activation names used in Hugging Face configs.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,  # exact (erf) GELU: the LLaVA projector's "gelu"
    "gelu_pytorch_tanh": _gelu_tanh,
    "silu": F.silu,
}


class RMSNorm(nn.Module):
    """Qwen2 RMSNorm: normalise in float32, cast back, then scale (the weight multiplies in the input dtype)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(in_dtype)


def rope_cos_sin(
    position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE tables for explicit positions.

    The inverse frequencies are rebuilt here (a handful of float32 ops that export as
    constants) instead of living in a buffer, so casting the module to bf16/fp16
    cannot silently degrade them.

    Args:
        position_ids: ``(B, S)`` integer positions; never derived from sequence length,
            so merged sequences keep their original, gapped positions.
    Returns:
        ``cos, sin`` each ``(B, S, hd)`` in ``dtype``.
    """
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float32, device=position_ids.device) / head_dim
    inv_freq = 1.0 / (theta**exponents)  # (hd/2,)
    freqs = position_ids[..., None].float() * inv_freq  # (B, S, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (B, S, hd)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x (B, H, S, hd)`` by ``cos/sin (B, S, hd)`` (half-split convention of Qwen2)."""
    cos = cos[:, None]  # (B, 1, S, hd)
    sin = sin[:, None]
    return x * cos + _rotate_half(x) * sin


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``(B, Hkv, S, hd) -> (B, Hkv * groups, S, hd)``: explicit GQA expansion.

    Done by hand rather than SDPA's ``enable_gqa`` so the ONNX exporter sees plain ops.
    """
    if groups == 1:
        return x
    b, hkv, s, hd = x.shape
    return x[:, :, None].expand(b, hkv, groups, s, hd).reshape(b, hkv * groups, s, hd)


__all__ = ["ACTIVATIONS", "RMSNorm", "rope_cos_sin", "apply_rope", "repeat_kv"]
