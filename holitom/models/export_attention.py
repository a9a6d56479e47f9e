"""How the decoder's causal prefill attention is written into exported ONNX graphs.

Eager PyTorch always runs ``scaled_dot_product_attention`` (flash kernels on CPU
and GPU). What an export holds is a choice, made once per export
(``ExportConfig.attention``, ``holitom export --attention``):

- ``"standard"`` (default): SDPA as torch.onnx decomposes it, ``MatMul ->
  Softmax -> MatMul`` over the whole ``(S, S)`` matrix with a ``Trilu`` causal
  mask. Every ONNX runtime and TensorRT's parser read it; onnxruntime's CPU
  provider materialises the matrix, so its prefill time grows with ``S^2``.
- ``"onnxruntime"``: ``com.microsoft.GroupQueryAttention`` nodes (keys and
  values at the KV-head count, no ``repeat_kv``), :data:`PREFILL_CHUNKS` per
  layer, each over one chunk of the queries with the chunks before it as its
  past: the masked half of the ``(S, S)`` matrix is never computed and each
  node's block stays small (figures at the constant; the standard form took
  about 430 ms a layer where these take 98 ms). Only onnxruntime reads this
  domain; the onnxruntime backend's own exports use it.

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


# Query chunks of the exported prefill: the prompt is cut into this many equal chunks, each one
# GroupQueryAttention node whose past is the keys and values of the chunks before it, so each node
# attends over the keys up to its own chunk only (the masked half of the (S, S) matrix is never
# computed) and works on a (S / 16, up to S) block instead of one (S, S). Measured on 2 CPU cores,
# onnxruntime 1.32, 4 query / 2 KV heads of 32, one layer: S = 6273: 140 ms as one node, 105 / 98 / 95 ms
# in 8 / 16 / 24 chunks (torch's SDPA: 44 ms); S = 1600: 39 -> 18 ms in 16 chunks; S = 340: 4.9 -> 0.8 ms.
# Smaller chunks gain nothing more: 91 / 83 / 86 / 96 ms in 16 / 32 / 64 / 128 chunks at S = 6273 (SDPA 50 ms).
PREFILL_CHUNKS = 16


def _group_query_attention_node(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal prefill as :data:`PREFILL_CHUNKS` chained ``com.microsoft.GroupQueryAttention`` nodes (onnxruntime's
    contrib op) in the exported graph.

    The prompt is padded at its end to a multiple of the chunk count (every chunk at least one row, whatever
    ``S``): a padded key sits after every real query, so the causal mask hides it from them, and the padded
    queries' rows are dropped.
    """
    b, heads, s, head_dim = q.shape
    kv_heads = k.shape[1]
    query = q.transpose(1, 2).reshape(b, s, heads * head_dim)  # (B, S, H*hd)
    key = k.transpose(1, 2).reshape(b, s, kv_heads * head_dim)  # (B, S, Hkv*hd)
    value = v.transpose(1, 2).reshape(b, s, kv_heads * head_dim)
    chunk = (s + PREFILL_CHUNKS - 1) // PREFILL_CHUNKS  # rows per chunk
    pad = chunk * PREFILL_CHUNKS - s
    query, key, value = (F.pad(t, (0, 0, 0, pad)) for t in (query, key, value))  # (B, chunks * chunk, .)
    # The chunk length as an int32 tensor (the op's lengths are tensors; a traced Python int would be a constant).
    rows = torch.ones_like(query[0, :chunk, 0], dtype=torch.int32).sum(dtype=torch.int32)  # () int32
    outs, past_key, past_value = [], None, None
    for i in range(PREFILL_CHUNKS):
        part = slice(i * chunk, (i + 1) * chunk)
        total = rows * (i + 1)  # () int32: keys visible to this chunk's last row, past included
        seqlens_k = (total - 1).reshape(1).expand(b)  # (B,) int32, the op's convention
        out, past_key, past_value = torch.onnx.ops.symbolic_multi_out(
            "com.microsoft::GroupQueryAttention",
            (query[:, part], key[:, part], value[:, part], past_key, past_value, seqlens_k, total),
            {"num_heads": heads, "kv_num_heads": kv_heads, "scale": float(scale)},
            dtypes=(q.dtype, k.dtype, v.dtype),
            shapes=((b, chunk, heads * head_dim), (b, kv_heads, (i + 1) * chunk, head_dim), (b, kv_heads, (i + 1) * chunk, head_dim)),
            version=1,
        )
        outs.append(out)  # (B, chunk, H*hd)
    return torch.cat(outs, dim=1)[:, :s]  # (B, S, H*hd)


__all__ = [
    "DEFAULT_FLAVOR",
    "FLAVORS",
    "PREFILL_CHUNKS",
    "SharedKVBuffer",
    "bidirectional_attention",
    "causal_prefill_attention",
    "check_flavor",
    "export_attention",
    "shared_buffer_decode_attention",
]
