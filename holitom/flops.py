"""FLOPs accounting: the paper's prefill formula, the real matmul count, and a counter for our code.

Convention (derived, not stated in the paper). DESIGN.md's per-layer formula
``4 n d^2 + 2 n^2 d + 2 n d m`` reproduces the published 40.8 "TFLOPs" for
Qwen2-7B at n = 6272 only when each term is read as multiply-accumulates (MACs)
of a textbook decoder layer:

- ``4 n d^2``: the q, k, v and o projections, each an (n, d) x (d, d) product
  = n d^2 MACs. That is multi-head attention WITHOUT grouped-query attention:
  Qwen2-7B's k and v projections are d x 512 (4 of 28 heads), not d x d.
- ``2 n^2 d``: Q K^T and (softmax) V, n^2 d MACs each, counted over the full
  n x n square (no causal halving).
- ``2 n d m``: an FFN of TWO matrices (up d->m, down m->d). Qwen2's SwiGLU has
  three (gate, up, down), i.e. 3 n d m MACs.

Reading the terms as FLOPs (2 per MAC) instead would leave the FFN a single
d x m matrix (n d m MACs), which no decoder has; so the paper's
"FLOPs" are MACs of a two-matrix-FFN MHA layer, counting only visual tokens
(the text prompt and its cross terms are left out). :func:`prefill_flops` and
:func:`holitom_prefill_flops` return the formula in those paper units, so their
numbers compare with the published ones. Real arithmetic is counted in FLOPs
(``FLOPS_PER_MAC`` per multiply-add, torch's FlopCounterMode convention):
:func:`count_matmul_flops` measures our code, and :func:`decoder_matmul_flops`
gives the closed form for a Qwen2-style layer (GQA + SwiGLU). On a layer built
to the formula's assumptions the counter gives exactly
``FLOPS_PER_MAC * prefill_flops(...)`` (tests/test_flops.py).
:func:`vision_matmul_flops` is the closed form of the vision stage.

Which figure a physical floor divides (``holitom bench``'s floor columns): the
counted FLOPs of what ran, never the paper units. At LLaVA-OneVision-7B's geometry
and 32 frames the vanilla prefill counts 97.6 TFLOP of real matmuls where the
paper's formula says 40.8 T "FLOPs" (MACs, MHA, two-matrix FFN, visual tokens only).

This module imports no torch at module level (``count_matmul_flops`` imports it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from holitom.errors import ConfigError, InputError
from holitom.limits import check_int

# torch.utils.flop_counter counts one multiply-add as 2 FLOPs; the paper's
# formula counts it as 1.
FLOPS_PER_MAC = 2


def _positive_int(value: object, name: str, where: str) -> int:
    return check_int(value, f"{where}: {name}", 1)


def _token_count(value: object, name: str, where: str) -> float:
    # Token counts may be fractional here: the formula's n (1 - R) need not be whole.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < float("inf")):
        raise InputError(f"{where}: {name} (a number of visual tokens) must be a finite number >= 0; got {value!r}.")
    return value


def prefill_flops(num_layers: int, num_tokens: float, hidden_size: int, intermediate_size: int) -> float:
    """The paper's prefill cost of ``num_layers`` layers on ``num_tokens`` visual tokens.

    ``L * (4 n d^2 + 2 n^2 d + 2 n d m)`` in paper units (MACs, see the module
    docstring). ``num_layers`` may be 0 (an empty stack costs nothing).

    Example: Qwen2-7B (L=28, d=3584, m=18944) on 32 x 196 = 6272 tokens gives
    4.0765e13, the published 40.8 TFLOPs.
    """
    where = "prefill_flops"
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 0:
        raise ConfigError(f"{where}: num_layers must be an int >= 0; got {num_layers!r}.")
    n = _token_count(num_tokens, "num_tokens", where)
    d = _positive_int(hidden_size, "hidden_size", where)
    m = _positive_int(intermediate_size, "intermediate_size", where)
    return float(num_layers * (4 * n * d * d + 2 * n * n * d + 2 * n * d * m))


def holitom_prefill_flops(
    num_layers: int,
    inner_layer: int,
    num_tokens: float,
    hidden_size: int,
    intermediate_size: int,
    inner_ratio: float,
) -> float:
    """Prefill with HoliTom's inner merge: ``prefill(K, n) + prefill(L - K, n (1 - R))``.

    ``num_tokens`` is the count after the outer merge; ``n (1 - R)`` is used
    unrounded, as in the paper's formula (the runtime keeps
    ``round(n (1 - R))``; pass those counts to :func:`model_prefill_flops` for the
    exact figure, which differs by well under 0.1%).
    """
    where = "holitom_prefill_flops"
    layers = _positive_int(num_layers, "num_layers", where)
    if isinstance(inner_layer, bool) or not isinstance(inner_layer, int) or not 0 <= inner_layer <= layers:
        raise ConfigError(f"{where}: inner_layer K must be an int in 0..{layers} (num_layers); got {inner_layer!r}.")
    if isinstance(inner_ratio, bool) or not isinstance(inner_ratio, (int, float)) or not 0.0 <= inner_ratio < 1.0:
        raise ConfigError(f"{where}: inner_ratio R must be a number in [0, 1); got {inner_ratio!r}.")
    n = _token_count(num_tokens, "num_tokens", where)
    return prefill_flops(inner_layer, n, hidden_size, intermediate_size) + prefill_flops(
        layers - inner_layer, n * (1.0 - inner_ratio), hidden_size, intermediate_size
    )


def _config_int(config: object, names: tuple[str, ...]) -> int:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return _positive_int(value, name, "model_prefill_flops")
    raise ConfigError(
        f"model_prefill_flops: the model config {type(config).__name__} has none of the attributes {list(names)}; "
        "pass an object with num_layers (or num_hidden_layers), hidden_size and intermediate_size, e.g. a transformers Qwen2Config."
    )


def model_prefill_flops(
    config: object,
    n_after_outer: float,
    n_after_inner: float | None = None,
    inner_layer: int | None = None,
) -> float:
    """The paper's formula for a model config and the token counts a run actually had.

    Args:
        config: any object with ``num_layers`` or ``num_hidden_layers`` (the
            transformers name), ``hidden_size`` and ``intermediate_size``.
        n_after_outer: visual tokens entering the decoder.
        n_after_inner: visual tokens after the inner merge at ``inner_layer``;
            None for no inner merge (all layers see ``n_after_outer``).
        inner_layer: K, required with ``n_after_inner``.

    Returns:
        ``prefill(K, n_after_outer) + prefill(L - K, n_after_inner)`` in paper units.
    """
    layers = _config_int(config, ("num_layers", "num_hidden_layers"))
    d = _config_int(config, ("hidden_size",))
    m = _config_int(config, ("intermediate_size",))
    if n_after_inner is None:
        if inner_layer is not None:
            raise InputError(f"model_prefill_flops: inner_layer={inner_layer!r} was given without n_after_inner; pass both or neither.")
        return prefill_flops(layers, n_after_outer, d, m)
    if isinstance(inner_layer, bool) or not isinstance(inner_layer, int) or not 0 <= inner_layer <= layers:
        raise ConfigError(f"model_prefill_flops: with n_after_inner, inner_layer K must be an int in 0..{layers}; got {inner_layer!r}.")
    return prefill_flops(inner_layer, n_after_outer, d, m) + prefill_flops(layers - inner_layer, n_after_inner, d, m)


def decoder_matmul_flops(
    num_layers: int,
    num_tokens: int,
    hidden_size: int,
    intermediate_size: int,
    num_heads: int,
    num_kv_heads: int,
    ffn_matrices: int = 3,
) -> int:
    """Matmul FLOPs (2 per MAC) of a Qwen2-style decoder stack on ``num_tokens`` tokens.

    Per layer: q and o projections ``2 * 2 n d^2``; k and v projections
    ``2 * 2 n d d_kv`` with ``d_kv = d * num_kv_heads / num_heads`` (GQA);
    attention ``2 * 2 n^2 d`` over the full square (what FlopCounterMode counts
    for SDPA, causal or not); FFN ``2 * ffn_matrices * n d m`` (3 for SwiGLU).
    Biases, norms, RoPE and softmax are not matmuls and are not counted. With
    ``num_kv_heads == num_heads`` and ``ffn_matrices == 2`` this equals
    ``FLOPS_PER_MAC * prefill_flops(...)``.
    """
    where = "decoder_matmul_flops"
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 0:
        raise ConfigError(f"{where}: num_layers must be an int >= 0; got {num_layers!r}.")
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 0:
        raise InputError(f"{where}: num_tokens must be an int >= 0 (a real token count); got {num_tokens!r}.")
    d = _positive_int(hidden_size, "hidden_size", where)
    m = _positive_int(intermediate_size, "intermediate_size", where)
    heads = _positive_int(num_heads, "num_heads", where)
    kv_heads = _positive_int(num_kv_heads, "num_kv_heads", where)
    matrices = _positive_int(ffn_matrices, "ffn_matrices", where)
    if heads % kv_heads or d % heads:
        raise ConfigError(f"{where}: num_heads={heads} must be a multiple of num_kv_heads={kv_heads} and divide hidden_size={d}.")
    n = num_tokens
    d_kv = d // heads * kv_heads
    macs = 2 * n * d * d + 2 * n * d * d_kv + 2 * n * n * d + matrices * n * d * m
    return num_layers * FLOPS_PER_MAC * macs


def vision_matmul_flops(config: Any, frames: int) -> int:
    """Matmul FLOPs (2 per MAC) of the vision stage on ``frames`` frames: SigLIP tower + projector.

    ``config`` is a :class:`~holitom.models.config.LlavaConfig` (its ``vision``, ``text``
    and ``num_vision_layers_used``). Per frame of ``N`` patches: the patch-embedding
    convolution ``2 N Dv (C p^2)``; per encoder layer the q, k, v, out projections
    ``2 * 4 N Dv^2``, attention ``2 * 2 N^2 Dv`` and the MLP ``2 * 2 N Dv Dm``; the
    projector ``2 N (Dv D + D^2)``. Not counted: the last layer's key-score pass
    HoliTom reads (about one more ``q k^T`` of that layer, which way it runs depends on
    the device), the pooling (an interpolation, no matmul), norms and activations.
    LLaVA-OneVision-7B at 32 frames: 21.3 TFLOP (the issue's "about 21 TFLOP").
    """
    where = "vision_matmul_flops"
    count = check_int(frames, f"{where}: frames", 1)
    v, d = config.vision, config.text.hidden_size
    n, dv, dm = v.num_patches, v.hidden_size, v.intermediate_size
    patch = n * dv * v.num_channels * v.patch_size**2
    layer = 4 * n * dv * dv + 2 * n * n * dv + 2 * n * dv * dm
    projector = n * dv * d + n * d * d
    return count * FLOPS_PER_MAC * (patch + config.num_vision_layers_used * layer + projector)


@dataclass(frozen=True)
class FlopCount:
    """What :func:`count_matmul_flops` measured.

    Attributes:
        total: FLOPs (2 per multiply-add) of every counted op.
        by_op: FLOPs per aten op, e.g. ``{"aten.mm": ..., "aten.bmm": ...}``; sums to ``total``.
        result: ``fn``'s return value.
    """

    total: int
    by_op: dict[str, int]
    result: Any


def _sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # FlopCounterMode has no formula for the CPU flash kernel (F.scaled_dot_product_attention on CPU
    # would count 0 FLOPs), and its CUDA formulas refuse fewer key heads than query heads (torch 2.11:
    # "sdpa_flop_count: query/key/value shapes are incompatible" on transformers' Qwen2 with GQA, H200).
    # Same convention as torch's formulas: Q K^T plus P V over the full square, KV heads broadcast to
    # the query heads under GQA.
    *lead, q_len, qk_dim = query_shape  # (B, H, S_q, E)
    k_len, v_dim = key_shape[-2], value_shape[-1]  # (B, H_kv, S_k, E), (B, H_kv, S_k, E_v)
    rows = 1
    for size in lead:
        rows *= size  # B * H: one (S_q, S_k) score matrix per query head
    return FLOPS_PER_MAC * rows * q_len * k_len * (qk_dim + v_dim)


def count_matmul_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> FlopCount:
    """Run ``fn(*args, **kwargs)`` and count its matmul FLOPs with torch's FlopCounterMode.

    Counted: mm, addmm (the product only, not the bias add), bmm, baddbmm,
    convolutions and SDPA's forward kernels (through :func:`_sdpa_flop`, which takes
    grouped-query attention), forward and, for the ops torch covers, backward. Not counted: element-wise ops, softmax, norms,
    reductions: the same scope as the paper's formula, which counts matmuls only.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    sdpa_ops = (
        aten._scaled_dot_product_flash_attention_for_cpu,
        aten._scaled_dot_product_flash_attention,
        aten._scaled_dot_product_efficient_attention,
        aten._scaled_dot_product_cudnn_attention,
    )
    counter = FlopCounterMode(display=False, custom_mapping={op: _sdpa_flop for op in sdpa_ops})
    with counter:
        result = fn(*args, **kwargs)
    by_op = {str(op): int(flops) for op, flops in counter.get_flop_counts().get("Global", {}).items() if flops}
    return FlopCount(total=int(counter.get_total_flops()), by_op=by_op, result=result)


__all__ = [
    "FLOPS_PER_MAC",
    "FlopCount",
    "count_matmul_flops",
    "decoder_matmul_flops",
    "holitom_prefill_flops",
    "model_prefill_flops",
    "prefill_flops",
    "vision_matmul_flops",
]
