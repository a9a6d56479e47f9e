"""How the decoder's causal prefill attention is written into exported ONNX graphs.

Eager PyTorch always runs ``scaled_dot_product_attention`` (flash kernels on CPU
and GPU). What an export holds is a choice, made once per export
(``ExportConfig.attention``, ``holitom export --attention``):

- ``"standard"`` (default): SDPA as torch.onnx decomposes it, ``MatMul ->
  Softmax -> MatMul`` over the whole ``(S, S)`` matrix with a ``Trilu`` causal
  mask. Every ONNX runtime and TensorRT's parser read it; onnxruntime's CPU
  provider materialises the matrix, so its prefill time grows with ``S^2``.
- ``"onnxruntime"``: one ``com.microsoft.GroupQueryAttention`` node per layer
  (keys and values at the KV-head count, no ``repeat_kv``), which onnxruntime
  runs with tiled flash-attention kernels that never build the ``(S, S)``
  matrix and skip its masked half. Measured on 2 CPU cores, onnxruntime 1.32,
  4 query / 2 KV heads of 32: 151 ms against about 430 ms per layer at
  S = 6273. Only onnxruntime reads this domain; the onnxruntime backend's own
  exports use it.

Only the prefill attention (no cache, ``is_causal``) has the two forms: the
one-token decode step is a single row per head, cheap either way.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F

from holitom.errors import ConfigError
from holitom.models.facts import ATTENTION_FLAVORS as FLAVORS
from holitom.models.ops import repeat_kv

DEFAULT_FLAVOR = "standard"

_active = DEFAULT_FLAVOR


def check_flavor(flavor: object) -> str:
    if flavor not in FLAVORS:
        raise ConfigError(f"attention={flavor!r} is not an export attention form; choose one of {list(FLAVORS)}.")
    return str(flavor)


@contextlib.contextmanager
def export_attention(flavor: str) -> Iterator[None]:
    """Within this block, exported decoder prefill attention takes the form ``flavor``."""
    global _active
    previous, _active = _active, check_flavor(flavor)
    try:
        yield
    finally:
        _active = previous


def causal_prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal self-attention of a prompt without a cache.

    Args:
        q: ``(B, H, S, hd)`` rotated queries.
        k, v: ``(B, Hkv, S, hd)`` rotated keys and values (``H`` a multiple of ``Hkv``).
        scale: the logit scale.

    Returns:
        ``(B, S, H * hd)``, heads concatenated (what ``o_proj`` takes).
    """
    b, heads, s, head_dim = q.shape
    kv_heads = k.shape[1]
    if _active == "onnxruntime" and torch.onnx.is_in_onnx_export():
        return _group_query_attention_node(q, k, v, scale)
    groups = heads // kv_heads
    out = F.scaled_dot_product_attention(q, repeat_kv(k, groups), repeat_kv(v, groups), is_causal=True, scale=scale)  # (B, H, S, hd)
    return out.transpose(1, 2).reshape(b, s, heads * head_dim)


def _group_query_attention_node(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """One ``com.microsoft.GroupQueryAttention`` node (onnxruntime's contrib op) in the exported graph."""
    b, heads, s, head_dim = q.shape
    kv_heads = k.shape[1]
    query = q.transpose(1, 2).reshape(b, s, heads * head_dim)  # (B, S, H*hd)
    key = k.transpose(1, 2).reshape(b, s, kv_heads * head_dim)  # (B, S, Hkv*hd)
    value = v.transpose(1, 2).reshape(b, s, kv_heads * head_dim)
    # Every row of the batch holds the whole prompt: total length S, seqlens_k = S - 1 (the op's convention).
    total = torch.ones_like(query[0, :, 0], dtype=torch.int32).sum(dtype=torch.int32)  # () int32, S
    seqlens_k = (total - 1).reshape(1).expand(b)  # (B,) int32
    out, _, _ = torch.onnx.ops.symbolic_multi_out(
        "com.microsoft::GroupQueryAttention",
        (query, key, value, None, None, seqlens_k, total),
        {"num_heads": heads, "kv_num_heads": kv_heads, "scale": float(scale)},
        dtypes=(q.dtype, k.dtype, v.dtype),
        shapes=((b, s, heads * head_dim), (b, kv_heads, s, head_dim), (b, kv_heads, s, head_dim)),
        version=1,
    )
    return out  # (B, S, H*hd)


__all__ = ["DEFAULT_FLAVOR", "FLAVORS", "causal_prefill_attention", "check_flavor", "export_attention"]
