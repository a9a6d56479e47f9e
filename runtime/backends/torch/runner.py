"""One runner per stage over :class:`holitom.models.llava.LlavaModel` and :mod:`holitom.merge`."""

from __future__ import annotations

from typing import Mapping

import torch

from holitom import contracts as C
from holitom.models.kv_cache import CACHE_ROOM, StaticKVCache
from holitom.runtime.base import Runner


class TorchRunner(Runner):
    """Base of the torch stage runners: holds the model; runs under inference_mode."""

    backend = "torch"

    def __init__(self, spec, model, merge_config, check_inputs: bool = True):
        from holitom.merge import reduction_for

        super().__init__(spec, check_inputs)
        self.model = model
        self.merge_config = merge_config
        self.reduction = reduction_for(merge_config)  # HoliTom or a competing method, by config type

    def _activate(self) -> None:
        self.model.eval()

    def _infer(self, feed: Mapping) -> dict:
        with torch.inference_mode():
            return self._forward(**feed)

    def _forward(self, **feed) -> dict:  # pragma: no cover - overridden
        raise NotImplementedError


class VisionRunner(TorchRunner):
    def _forward(self, pixel_values):
        # The contract says whether the method reads the scores; without them the last layer is an ordinary one.
        with_attention = "attention" in self.spec.output_names
        out = self.model.encode_video(pixel_values, with_attention=with_attention)
        if not with_attention:
            return {"features": out.features}
        return {"features": out.features, "attention": out.attention.float()}


class OuterMergeRunner(TorchRunner):
    def _forward(self, features, attention=None):
        model = self.model
        tokens = self.reduction.outer(features, attention, model.grid, model.layout, model.image_newline.to(features.dtype))
        return {"merged_tokens": tokens.to(features.dtype)}


class EmbedRunner(TorchRunner):
    def _forward(self, input_ids):
        return {"inputs_embeds": self.model.embed(input_ids)}


def _kv_outputs(present: list, first_layer: int) -> dict:
    out = {}
    for offset, (key, value) in enumerate(present):
        out[C.present_key_name(first_layer + offset)] = key
        out[C.present_value_name(first_layer + offset)] = value
    return out


class DecoderHeadRunner(TorchRunner):
    def __init__(self, spec, model, merge_config, inner_layer: int, check_inputs: bool = True):
        super().__init__(spec, model, merge_config, check_inputs)
        self.k = inner_layer

    def _forward(self, inputs_embeds, position_ids):
        # The row over the whole prompt; the pipeline slices the visual span.
        out = self.model.decoder_head(inputs_embeds, position_ids, self.k, None)
        return {"hidden_states": out.hidden, "attn_row": out.attn_row.float(), **_kv_outputs(out.present, 0)}


class InnerMergeRunner(TorchRunner):
    def _forward(self, hidden_states, attn_row, position_ids, visual_span):
        start, end = (int(v) for v in visual_span.tolist())  # host sync of two ints, once per prompt
        merged, kept_index = self.reduction.inner(hidden_states[0], attn_row, (start, end))  # (S', D), (S',)
        return {
            "merged_hidden_states": merged[None].to(hidden_states.dtype),
            "merged_position_ids": position_ids[:, kept_index],
        }


class DecoderTailRunner(TorchRunner):
    def __init__(self, spec, model, merge_config, inner_layer: int, check_inputs: bool = True):
        super().__init__(spec, model, merge_config, check_inputs)
        self.k = inner_layer

    def _forward(self, hidden_states, position_ids):
        out = self.model.decoder_tail(hidden_states, position_ids, self.k)
        return {"logits": out.logits.float(), **_kv_outputs(out.present, self.k)}


class DecodeStepRunner(TorchRunner):
    """Decodes into a static KV cache it owns (gpt-fast style), behind the functional contract.

    The pipeline feeds back the ``present`` tensors of the previous step; those are views
    of this runner's buffers, so the step only writes one position per layer. Any other
    ``past`` (a new prompt) is copied into fresh buffers with :data:`CACHE_ROOM` free
    positions; a full cache is copied into larger ones.

    ``capture``: None decodes eagerly; else the step runs through a
    :class:`~holitom.runtime.backends.torch.cuda_graph.GraphedDecode` that captures it
    with this function (:func:`~holitom.runtime.backends.torch.cuda_graph.cuda_capture` on CUDA).
    """

    def __init__(self, spec, model, merge_config, num_layers: int, check_inputs: bool = True, capture=None):
        super().__init__(spec, model, merge_config, check_inputs)
        self.num_layers = num_layers
        self.capture = capture
        self._cache: StaticKVCache | None = None
        self._graphed = None

    def _forward(self, inputs_embeds, position_ids, **past):
        kv = [(past[C.past_key_name(i)], past[C.past_value_name(i)]) for i in range(self.num_layers)]
        if self.capture is not None:
            if self._graphed is None:
                from holitom.runtime.backends.torch.cuda_graph import GraphedDecode

                self._graphed = GraphedDecode(self.model, self.capture)
            logits, present = self._graphed(inputs_embeds, position_ids, kv)
        else:
            if self._cache is None or not self._cache.holds(kv) or self._cache.room == 0:
                self._cache = StaticKVCache.from_present(kv, room=CACHE_ROOM)
            logits, present = self.model.decode_step(inputs_embeds, position_ids, self._cache)
        return {"logits": logits.float(), **_kv_outputs(present, 0)}

    def _deactivate(self) -> None:
        self._cache = None
        self._graphed = None
