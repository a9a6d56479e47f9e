"""Qwen2 decoder with explicit KV tensors, explicit position ids and a split point.

gpt-fast style: plain modules, no cache objects. A layer takes the hidden states,
the RoPE tables for the new tokens and optionally that layer's past ``(key, value)``
and returns the new hidden states plus the full ``(key, value)`` for its cache, each
``(B, Hkv, S_total, hd)``. Because every layer owns its cache tensors, layers < K
(full prompt) and layers >= K (after HoliTom's inner merge) can hold different
lengths without any bookkeeping.

Eager decoding may pass a :class:`~holitom.models.kv_cache.StaticKVCache` layer instead
of ``(key, value)``: the new key/value is written in place and attention reads the
filled prefix (no per-step concatenation). A :class:`~holitom.models.kv_cache.FixedKVCache`
layer does the same at a position held in a device tensor, attending over the whole
buffer with a mask: the form a CUDA graph replays.

Positions are always inputs: after the inner merge, kept tokens keep their original
RoPE positions (with gaps) and decoding continues at the full prompt length.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from holitom.errors import InputError
from holitom.models.config import TextConfig
from holitom.models.export_attention import SharedKVBuffer, causal_prefill_attention, shared_buffer_decode_attention
from holitom.models.kv_cache import KV, FixedLayerCache, StaticLayerCache
from holitom.models.ops import ACTIVATIONS, RMSNorm, apply_rope, repeat_kv


def grouped_decode_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """One new token over the whole cache without expanding the KV heads: ``(1, H, 1, hd)``.

    ``q (1, H, 1, hd)``, ``k, v (1, Hkv, S, hd)``. The ``H / Hkv`` query heads that share
    a KV head become that head's rows (a single decode token sees every position, so no
    mask), which reads the cache once instead of copying it ``H / Hkv`` times. ``mask
    (1, 1, 1, S)`` bool limits the positions read (a fixed-capacity buffer's filled part).
    """
    b, heads, _, head_dim = q.shape
    kv_heads = k.shape[1]
    rows = q.reshape(b, kv_heads, heads // kv_heads, head_dim)  # (1, Hkv, groups, hd); heads are kv-head-major
    out = F.scaled_dot_product_attention(rows, k, v, attn_mask=mask, scale=scale)  # (1, Hkv, groups, hd)
    return out.reshape(b, heads, 1, head_dim)  # (1, H, 1, hd)


class DecoderAttention(nn.Module):
    """Grouped-query causal self-attention with RoPE and a cache in, cache out."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.num_kv_heads = cfg.num_kv_heads
        self.head_dim = cfg.head_dim
        self.groups = cfg.num_heads // cfg.num_kv_heads
        self.scale = self.head_dim**-0.5
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.num_heads * cfg.head_dim, bias=True)
        self.k_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, bias=True)
        self.v_proj = nn.Linear(cfg.hidden_size, cfg.num_kv_heads * cfg.head_dim, bias=True)
        self.o_proj = nn.Linear(cfg.num_heads * cfg.head_dim, cfg.hidden_size, bias=False)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, past: KV | StaticLayerCache | SharedKVBuffer | None = None
    ) -> tuple[torch.Tensor, KV, torch.Tensor]:
        """Args:
            x: ``(B, S, D)`` normalised hidden states of the new tokens.
            cos, sin: ``(B, S, hd)`` RoPE tables of the new tokens' positions.
            past: this layer's cached ``(key, value)``, each ``(B, Hkv, S_past, hd)``, or
                its :class:`StaticLayerCache` (one decode token, written in place), or its
                :class:`SharedKVBuffer` (one decode token, the onnxruntime decode graph), or None.

        Returns:
            ``out (B, S, D)``, ``(key, value)`` each ``(B, Hkv, S_past + S, hd)`` (RoPE
            applied to keys), and the rotated queries ``(B, H, S, hd)`` (the inner
            merge reads the last token's query at layer K-1).
        """
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, S, hd)
        k = self.k_proj(x).view(b, s, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, S, hd)
        v = self.v_proj(x).view(b, s, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, S, hd)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        if past is None:
            # Prefill: plain causal mask over the (possibly gapped) sequence order. A constant
            # is_causal (also right for S=1) keeps symbolic-shape export from seeing a SymBool.
            # Exports may write it as onnxruntime's fused GQA op (holitom.models.export_attention).
            return self.o_proj(causal_prefill_attention(q, k, v, self.scale)), (k, v), q
        if isinstance(past, SharedKVBuffer):
            out, k, v = shared_buffer_decode_attention(q, k, v, past, self.scale)  # (1, 1, H*hd), buffers (1, Hkv, C, hd)
            return self.o_proj(out), (k, v), q
        if isinstance(past, (StaticLayerCache, FixedLayerCache)):
            if s != 1:
                raise InputError(f"a static KV cache takes one decode token per step, got {s}.")
            if isinstance(past, FixedLayerCache):
                k, v, mask = past.write(k, v)  # whole buffers (1, Hkv, capacity, hd), mask (1, 1, 1, capacity)
            else:
                (k, v), mask = past.write(k, v), None  # filled prefix views (1, Hkv, S_past + 1, hd)
            out = grouped_decode_attention(q, k, v, self.scale, mask).transpose(1, 2).reshape(b, s, self.num_heads * self.head_dim)
            return self.o_proj(out), (k, v), q
        k = torch.cat((past[0], k), dim=2)  # (B, Hkv, S_past + S, hd)
        v = torch.cat((past[1], v), dim=2)
        k_all = repeat_kv(k, self.groups)  # (B, H, S_kv, hd)
        v_all = repeat_kv(v, self.groups)
        if s == 1:
            # One decode token sees the whole cache; no mask needed.
            out = F.scaled_dot_product_attention(q, k_all, v_all, scale=self.scale)
        else:
            # Several new tokens after a cache: new token i sees the cache and new tokens 0..i.
            s_past = past[0].shape[2]
            rows = torch.arange(s, device=x.device)[:, None]
            cols = torch.arange(s_past + s, device=x.device)[None, :]
            out = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=cols <= rows + s_past, scale=self.scale)
        out = out.transpose(1, 2).reshape(b, s, self.num_heads * self.head_dim)  # (B, S, H*hd)
        return self.o_proj(out), (k, v), q


class DecoderMLP(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.act = ACTIVATIONS[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-RMSNorm Qwen2 block."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = DecoderAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = DecoderMLP(cfg)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, past: KV | StaticLayerCache | SharedKVBuffer | None = None
    ) -> tuple[torch.Tensor, KV, torch.Tensor]:
        """``x (B, S, D)`` -> ``(x (B, S, D), (key, value), rotated queries (B, H, S, hd))``."""
        attn, kv, q = self.self_attn(self.input_layernorm(x), cos, sin, past)
        x = x + attn
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, kv, q


class Decoder(nn.Module):
    """The stack of Qwen2 layers plus the final norm (embedding and LM head live in LlavaModel)."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


__all__ = ["Decoder", "DecoderLayer", "DecoderAttention", "KV", "grouped_decode_attention"]
