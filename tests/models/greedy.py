"""Plain greedy decoding on :class:`LlavaModel`: prefill, then one ``decode_step`` per token.

The unmerged reference loop of the parity tests (test code only); the
runtime's pipeline drives decoder_head / decoder_tail / decode_step itself.
"""

from __future__ import annotations

from typing import Iterable

import torch

from holitom.errors import InputError
from holitom.models.kv_cache import StaticKVCache
from holitom.models.llava import LlavaModel


@torch.no_grad()
def greedy_generate(
    model: LlavaModel,
    inputs_embeds: torch.Tensor,
    max_new_tokens: int,
    eos_token_ids: Iterable[int] | None = None,
    position_ids: torch.Tensor | None = None,
    static_cache: bool = True,
) -> list[int]:
    """Greedy tokens after the prompt.

    Args:
        inputs_embeds: ``(1, S, D)`` prompt embeddings (video tokens spliced in).
        max_new_tokens: upper bound on generated tokens (>= 1).
        eos_token_ids: stop after emitting one of these (it is included in the
            output, as transformers' ``generate`` does); None runs to ``max_new_tokens``.
        position_ids: ``(1, S)``; default ``0..S-1``. Decoding continues at
            ``position_ids[0, -1] + 1``.
        static_cache: decode into a preallocated :class:`StaticKVCache` (written in
            place); False concatenates the cache every step (the exported graphs' form).
    Returns:
        Generated token ids.
    """
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    s = inputs_embeds.shape[1]
    if position_ids is None:
        position_ids = torch.arange(s, device=inputs_embeds.device)[None]  # (1, S)
    stop = set(eos_token_ids or ())
    logits, past = model.prefill(inputs_embeds, position_ids)  # (1, S, V)
    if static_cache:
        past = StaticKVCache.from_present(past, room=max_new_tokens - 1)
    # One host sync per token: the loop must know the token to embed it and to stop.
    next_pos = int(position_ids[0, -1]) + 1
    token = int(logits[0, -1].argmax())
    tokens = [token]
    while len(tokens) < max_new_tokens and token not in stop:
        embeds = model.embed(torch.tensor([[token]], device=inputs_embeds.device))  # (1, 1, D)
        pos = torch.tensor([[next_pos]], device=inputs_embeds.device)  # (1, 1)
        logits, present = model.decode_step(embeds, pos, past)  # (1, V)
        past = past if static_cache else present
        next_pos += 1
        token = int(logits[0].argmax())
        tokens.append(token)
    return tokens


@torch.no_grad()
def two_kv_groups(model: LlavaModel, seed: int = 9, k: int = 2):
    """A prefill split at ``k`` with HoliTom's inner merge (R = 0.5), as the runtime decodes after it.

    Returns ``(present, first_token, position, prompt_embeds)``: layers < K hold the full
    prompt, layers >= K the merged one, so the two KV groups differ in length.
    """
    from tiny_llava import frames, prompt_ids

    from holitom.merge import InnerMergeConfig, apply_inner_merge, plan_inner_merge

    ids = prompt_ids(4, 5, seed=seed)
    embeds, span = model.splice_video(ids, model.unmerged_video_tokens(model.encode_video(frames(3, 56, seed=seed)).features))
    positions = torch.arange(embeds.shape[1])[None]
    head = model.decoder_head(embeds, positions, k, span)
    plan = plan_inner_merge(head.attn_row, head.hidden[0, span[0] : span[1]], 0.5)
    merged, kept = apply_inner_merge(head.hidden[0], span, plan, InnerMergeConfig().mode)
    tail = model.decoder_tail(merged[None], positions[:, kept], k)
    present = head.present + tail.present
    if present[0][0].shape[2] <= present[-1][0].shape[2]:
        raise AssertionError("the two KV groups must differ in length for the tests to mean anything")
    return present, int(tail.logits[0].argmax()), embeds.shape[1], embeds


__all__ = ["greedy_generate", "two_kv_groups"]
