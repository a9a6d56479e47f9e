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
