"""Facts of a loaded model that the exporter, the backends and the bench all need, defined once
(the tokenizer is loaded, with its checks, by :func:`holitom.models.checkpoint.load_tokenizer`).

- :func:`split_layer`: K, where the decoder is split around the inner merge;
- :func:`model_dims`: the :class:`holitom.contracts.ModelDims` of the stage contracts;
- :func:`stop_token_ids`: the token ids that end generation;
- :data:`ATTENTION_FLAVORS`: the forms of the decoder's prefill attention an export may hold
  (the manifest records one; torch-free, so the edge runtime reads it).
"""

from __future__ import annotations

from holitom.contracts import ModelDims

ATTENTION_FLAVORS = ("standard", "onnxruntime")


def split_layer(merge_config, num_layers: int) -> int:
    """K: the method's inner layer, or the paper's depth fraction when the method has no inner step."""
    from holitom.merge import InnerMergeConfig, reduction_for

    k = reduction_for(merge_config).inner_layer(num_layers)
    return InnerMergeConfig().resolve_layer(num_layers) if k is None else k


def model_dims(model_config, inner_layer: int) -> ModelDims:
    """The stage contracts' dimensions of a :class:`holitom.models.config.LlavaConfig` split at ``inner_layer``."""
    text = model_config.text
    return ModelDims(
        num_layers=model_config.num_layers,
        inner_layer=inner_layer,
        hidden_size=model_config.hidden_size,
        num_kv_heads=text.num_kv_heads,
        head_dim=text.head_dim,
        vocab_size=text.vocab_size,
        image_size=model_config.vision.image_size,
        tokens_per_frame=model_config.tokens_per_frame,
    )


def stop_token_ids(tokenizer) -> tuple[int, ...]:
    """End of sequence plus ChatML's end of turn, when the tokenizer has them."""
    ids = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    for tok in ("<|im_end|>", "<|endoftext|>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid not in ids:
            ids.append(tid)
    return tuple(ids)


__all__ = ["model_dims", "split_layer", "stop_token_ids"]
