"""Export wrappers: one small module per stage around :class:`holitom.models.llava.LlavaModel`.

Each wrapper's ``forward`` takes and returns exactly the stage contract's tensors,
in contract order (:mod:`holitom.contracts`), with KV caches flattened to the
``past_key_values.{i}.key/value`` / ``present.{i}.key/value`` names. The model
itself is not modified (STYLE.md rule 9: scoped, reversible export changes).
"""

from __future__ import annotations

import torch
from torch import nn


def _flatten(present: list) -> list[torch.Tensor]:
    return [t for key, value in present for t in (key, value)]


class VisionEncoder(nn.Module):
    """pixel_values (F, 3, H, W) -> features (F, P, D), attention (F, P)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        out = self.model.encode_video(pixel_values)
        return out.features, out.attention.float()


class EmbedTokens(nn.Module):
    """input_ids (1, S) -> inputs_embeds (1, S, D)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model.embed(input_ids)


class DecoderHead(nn.Module):
    """Layers [0, K): hidden states entering layer K, the last token's attention row, KV of the head."""

    def __init__(self, model, inner_layer: int):
        super().__init__()
        self.model = model
        self.k = inner_layer

    def forward(self, inputs_embeds, position_ids):
        # visual_span=None: the row over the whole prompt (the pipeline slices the visual span).
        out = self.model.decoder_head(inputs_embeds, position_ids, self.k, None)
        return (out.hidden, out.attn_row.float(), *_flatten(out.present))


class DecoderTail(nn.Module):
    """Layers [K, L) on the (merged) sequence: last-position logits and the tail KV."""

    def __init__(self, model, inner_layer: int):
        super().__init__()
        self.model = model
        self.k = inner_layer

    def forward(self, hidden_states, position_ids):
        out = self.model.decoder_tail(hidden_states, position_ids, self.k)
        return (out.logits.float(), *_flatten(out.present))


class DecodeStep(nn.Module):
    """One generated token through all layers with both KV groups (lengths may differ per group)."""

    def __init__(self, model, num_layers: int):
        super().__init__()
        self.model = model
        self.num_layers = num_layers

    def forward(self, inputs_embeds, position_ids, *past_flat):
        past = [(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(self.num_layers)]
        logits, present = self.model.decode_step(inputs_embeds, position_ids, past)
        return (logits.float(), *_flatten(present))


class KVBufferDecodeStep(nn.Module):
    """The decode step over preallocated KV buffers (``--attention onnxruntime``; contract: ``stage_specs(kv_buffers=True)``).

    ``kv_lengths (2,)`` holds the filled positions of the head group's and the tail
    group's buffers; each layer writes its new key/value at its group's position.
    """

    def __init__(self, model, num_layers: int, inner_layer: int):
        super().__init__()
        self.model = model
        self.num_layers = num_layers
        self.k = inner_layer

    def forward(self, inputs_embeds, position_ids, kv_lengths, *buffers_flat):
        from holitom.models.export_attention import SharedKVBuffer

        filled = kv_lengths.to(torch.int32)  # (2,) GroupQueryAttention's seqlens_k of each group
        groups = [(filled[g : g + 1], filled[g] + 1) for g in (0, 1)]  # ((1,), ()) filled and total after this step
        past = [SharedKVBuffer(buffers_flat[2 * i], buffers_flat[2 * i + 1], *groups[int(i >= self.k)]) for i in range(self.num_layers)]
        logits, present = self.model.decode_step(inputs_embeds, position_ids, past)
        return (logits.float(), *_flatten(present))


class OuterMerge(nn.Module):
    """features (F, P, D), attention (F, P), image_newline (D,) -> merged_tokens (N, D) [, frame_index, position_index].

    Exactly :func:`holitom.merge.outer.plan_tensors` (the plan the torch runtime
    computes) and :func:`holitom.merge.outer.apply_tensors` (its linear map as two
    batched products, where the eager runtime uses ``embedding_bag``: the same
    values, tested); the custom ops inside become ``holitom::`` nodes. (An export
    folder's graph then holds the model's newline as an initializer instead of the input.)
    """

    def __init__(self, config, grid: tuple[int, int], layout, metadata: bool):
        super().__init__()
        self.config, self.grid, self.layout, self.metadata = config, grid, layout, metadata

    def forward(self, features, attention, image_newline):
        from holitom.merge.outer import apply_tensors, plan_tensors

        x = features.float()
        plan = plan_tensors(x, attention, self.config, self.grid, self.layout)
        tokens = apply_tensors(x.reshape(-1, x.shape[2]), plan, image_newline)  # (N, D)
        if self.metadata:
            return tokens, plan.frame_index, plan.position_index
        return tokens


class InnerMerge(nn.Module):
    """hidden_states (1, S, D), attn_row (L_v,), position_ids (1, S), visual_span (2,) -> merged hidden states, positions.

    Exactly :func:`holitom.merge.inner.plan_tensors` and
    :func:`holitom.merge.inner.apply_tensors`, the code the torch runtime runs.
    """

    def __init__(self, ratio: float, mode: str):
        super().__init__()
        self.ratio, self.mode = ratio, mode

    def forward(self, hidden_states, attn_row, position_ids, visual_span):
        from holitom.merge.inner import InnerMergePlan, apply_tensors, plan_tensors

        seq = hidden_states[0]  # (S, D)
        num_visual = attn_row.shape[0]
        start, end = visual_span[0].item(), visual_span[1].item()  # data-dependent sizes of the graph
        torch._check(start >= 0)
        torch._check(end <= seq.shape[0])
        torch._check(end - start == num_visual)
        keep, dropped, assign = plan_tensors(attn_row, seq[start:end], self.ratio)
        out, kept_index = apply_tensors(seq, start, end, InnerMergePlan(keep, dropped, assign, num_visual), self.mode)
        return out[None], position_ids[0].index_select(0, kept_index)[None]
