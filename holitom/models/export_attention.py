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

The ``"onnxruntime"`` form also changes two other attentions:

- the decode step (:func:`shared_buffer_decode_attention`): the graph takes each
  layer's preallocated KV buffer ``(1, Hkv, capacity, hd)`` and returns it as
  ``present``; GroupQueryAttention writes the new key/value in place when the
  runtime binds the same buffer to both (its past/present share-buffer mode),
  so a step no longer copies the whole cache into a fresh output;
- the vision layers that yield no attention scores
  (:func:`bidirectional_attention`): one ``com.microsoft.MultiHeadAttention``
  node instead of ``MatMul -> Softmax -> MatMul``.

And one activation: the vision MLP's tanh GELU (:func:`gelu_tanh`) is one
``com.microsoft.FastGelu`` node instead of the eight ops torch.onnx writes
(``Pow``, ``Tanh``, four ``Mul``, two ``Add``): measured on the default model's
vision graph, one frame, one thread, two rounds, 12.2 / 12.7 -> 10.9 / 11.2 ms.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
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
    if _exporting_for_onnxruntime():
        return _group_query_attention_node(q, k, v, scale)
    groups = heads // kv_heads
    out = F.scaled_dot_product_attention(q, repeat_kv(k, groups), repeat_kv(v, groups), is_causal=True, scale=scale)  # (B, H, S, hd)
    return out.transpose(1, 2).reshape(b, s, heads * head_dim)


def _exporting_for_onnxruntime() -> bool:
    return _active == "onnxruntime" and torch.onnx.is_in_onnx_export()


def bidirectional_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Unmasked self-attention (the vision tower's layers that yield no scores).

    Args:
        q, k, v: ``(F, H, N, hd)``.

    Returns:
        ``(F, N, H * hd)``, heads concatenated (what ``out_proj`` takes).
    """
    frames, heads, n, head_dim = q.shape
    if _exporting_for_onnxruntime():
        query, key, value = (t.transpose(1, 2).reshape(frames, n, heads * head_dim) for t in (q, k, v))  # (F, N, H*hd)
        return torch.onnx.ops.symbolic(
            "com.microsoft::MultiHeadAttention",
            (query, key, value),
            {"num_heads": heads, "scale": float(scale)},
            dtype=q.dtype,
            shape=(frames, n, heads * head_dim),
            version=1,
        )
    out = F.scaled_dot_product_attention(q, k, v, scale=scale)  # (F, H, N, hd)
    return out.transpose(1, 2).reshape(frames, n, heads * head_dim)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU with the tanh approximation (SigLIP's ``gelu_pytorch_tanh``), any shape."""
    if _exporting_for_onnxruntime():
        return torch.onnx.ops.symbolic("com.microsoft::FastGelu", (x,), {}, dtype=x.dtype, shape=x.shape, version=1)
    return F.gelu(x, approximate="tanh")


@dataclass
class SharedKVBuffer:
    """One layer's KV buffers as the onnxruntime decode graph takes them.

    ``key`` and ``value`` are ``(1, Hkv, capacity, hd)`` with the first ``filled``
    positions holding the cache; ``filled`` is a ``(1,)`` int32 tensor (GroupQueryAttention's
    ``seqlens_k``: the positions before the new token) and ``total`` the int32 scalar
    ``filled + 1``.
    """

    key: torch.Tensor
    value: torch.Tensor
    filled: torch.Tensor
    total: torch.Tensor


def shared_buffer_decode_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: SharedKVBuffer, scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One decode token over a layer's KV buffer, the new key/value written at position ``filled``.

    Args:
        q: ``(1, H, 1, hd)`` rotated query; k, v: ``(1, Hkv, 1, hd)`` rotated key and value.
        past: the layer's buffers (see :class:`SharedKVBuffer`).

    Returns:
        ``out (1, 1, H * hd)`` and the buffers with the new position written, each
        ``(1, Hkv, capacity, hd)``. Exported: one GroupQueryAttention node whose ``present``
        outputs are the buffers themselves when onnxruntime binds them to the same memory.
        Eager (the reference): a copy of the buffers with the position written.
    """
    b, heads, s, head_dim = q.shape
    kv_heads = k.shape[1]
    if _exporting_for_onnxruntime():
        query = q.transpose(1, 2).reshape(b, s, heads * head_dim)  # (1, 1, H*hd)
        key = k.transpose(1, 2).reshape(b, s, kv_heads * head_dim)  # (1, 1, Hkv*hd)
        value = v.transpose(1, 2).reshape(b, s, kv_heads * head_dim)
        shape = tuple(past.key.shape)
        return torch.onnx.ops.symbolic_multi_out(
            "com.microsoft::GroupQueryAttention",
            (query, key, value, past.key, past.value, past.filled, past.total),
            {"num_heads": heads, "kv_num_heads": kv_heads, "scale": float(scale)},
            dtypes=(q.dtype, k.dtype, v.dtype),
            shapes=((b, s, heads * head_dim), shape, shape),
            version=1,
        )
    from holitom.models.qwen2 import grouped_decode_attention

    at = int(past.filled[0])
    key, value = past.key.clone(), past.value.clone()  # (1, Hkv, capacity, hd)
    key[:, :, at : at + 1], value[:, :, at : at + 1] = k, v
    out = grouped_decode_attention(q, key[:, :, : at + 1], value[:, :, : at + 1], scale)  # (1, H, 1, hd)
    return out.transpose(1, 2).reshape(b, s, heads * head_dim), key, value


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


__all__ = [
    "DEFAULT_FLAVOR",
    "FLAVORS",
    "SharedKVBuffer",
    "bidirectional_attention",
    "causal_prefill_attention",
    "check_flavor",
    "export_attention",
    "shared_buffer_decode_attention",
]
