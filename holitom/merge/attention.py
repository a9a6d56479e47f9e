"""Attention rows that HoliTom reads, computed without a full attention matrix."""

from __future__ import annotations

import math

import torch

from holitom.errors import InputError
from holitom.merge._checks import check_span, check_tensor


def last_token_attention(q_last: torch.Tensor, keys: torch.Tensor, visual_span: tuple[int, int]) -> torch.Tensor:
    """Attention probabilities of the last prompt token over the visual span, averaged over heads.

    This is Stage III step 1 (DESIGN.md section 2): only one query row is needed,
    so it is computed as ``softmax(q_last @ K^T / sqrt(d))`` over *all* prompt keys
    (the last token attends to the whole causal prefix), then sliced to the visual
    span. Grouped-query attention is handled by repeating each KV head.

    Args:
        q_last: ``(H, hd)`` the last token's RoPE-rotated queries at layer K-1.
        keys: ``(Hkv, S, hd)`` the layer's RoPE-rotated keys for the whole prompt.
        visual_span: ``(start, end)`` half-open token range of the visual tokens.

    Returns:
        ``(end - start,)`` float32 scores.

    Raises:
        InputError: wrong ranks, head counts that do not divide, mismatched head
            dims or a span outside ``0..S``.
    """
    check_tensor("q_last", q_last, 2)
    check_tensor("keys", keys, 3)
    num_heads, head_dim = q_last.shape  # (H, hd)
    num_kv_heads, seq_len, key_dim = keys.shape
    if key_dim != head_dim:
        raise InputError(f"q_last has head_dim {head_dim} but keys have {key_dim}; both must come from one layer.")
    if num_kv_heads < 1 or num_heads % num_kv_heads:
        raise InputError(
            f"the number of query heads ({num_heads}) must be a multiple of the number of KV heads ({num_kv_heads})."
        )
    start, end = check_span("visual_span", visual_span, seq_len)  # ints or SymInts (torch.export)
    groups = num_heads // num_kv_heads
    q = q_last.float().reshape(num_kv_heads, groups, head_dim)  # (Hkv, G, hd)
    logits = torch.einsum("kgd,ksd->kgs", q, keys.float()) / math.sqrt(head_dim)  # (Hkv, G, S)
    probs = logits.softmax(dim=-1).reshape(num_heads, -1)  # (H, S)
    return probs[:, start:end].mean(dim=0)  # (L_v,)
