"""Build the torch stage set: load our model from a checkpoint and wrap each stage in a runner."""

from __future__ import annotations

import torch

from holitom import contracts as C
from holitom.contracts import ModelDims
from holitom.errors import BackendError
from holitom.models.checkpoint import load_tokenizer  # noqa: F401 - also imported from here by the exporter and bench
from holitom.runtime.backends.torch.runner import (
    DecodeStepRunner,
    DecoderHeadRunner,
    DecoderTailRunner,
    EmbedRunner,
    InnerMergeRunner,
    OuterMergeRunner,
    VisionRunner,
)
from holitom.runtime.sources import ModelSource
from holitom.runtime.stages import StageSet

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def split_layer(merge_config, num_layers: int) -> int:
    """K: the method's inner layer, or the paper's depth fraction when the method has no inner step."""
    from holitom.merge import InnerMergeConfig, reduction_for

    k = reduction_for(merge_config).inner_layer(num_layers)
    return InnerMergeConfig().resolve_layer(num_layers) if k is None else k


def model_dims(model_config, inner_layer: int) -> ModelDims:
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


def build_torch_stages(model, tokenizer, preprocessor, merge_config, preset: str, device: torch.device, check_inputs: bool = True) -> StageSet:
    """Runners over an already loaded model (also used by the exporter as its reference)."""
    cfg = model.config
    k = split_layer(merge_config, cfg.num_layers)
    dims = model_dims(cfg, k)
    dtype = next(model.parameters()).dtype
    specs = C.stage_specs(dims, str(dtype).removeprefix("torch."))
    common = dict(model=model, merge_config=merge_config, check_inputs=check_inputs)
    runners = {
        C.VISION: VisionRunner(specs[C.VISION], **common),
        C.OUTER_MERGE: OuterMergeRunner(specs[C.OUTER_MERGE], **common),
        C.EMBED: EmbedRunner(specs[C.EMBED], **common),
        C.DECODER_HEAD: DecoderHeadRunner(specs[C.DECODER_HEAD], inner_layer=k, **common),
        C.DECODER_TAIL: DecoderTailRunner(specs[C.DECODER_TAIL], inner_layer=k, **common),
        C.DECODE_STEP: DecodeStepRunner(specs[C.DECODE_STEP], num_layers=cfg.num_layers, **common),
    }
    from holitom.merge import reduction_for

    has_inner = reduction_for(merge_config).inner_layer(cfg.num_layers) is not None
    if has_inner:
        runners[C.INNER_MERGE] = InnerMergeRunner(specs[C.INNER_MERGE], **common)
    return StageSet(
        backend="torch",
        preset=preset,
        runners=runners,
        dims=dims,
        tokenizer=tokenizer,
        preprocessor=preprocessor,
        video_token_id=cfg.video_token_id,
        stop_token_ids=stop_token_ids(tokenizer),
        inner_merge_enabled=has_inner,
        context_length=cfg.text.max_position_embeddings,
        device=device,
        compute_dtype=dtype,
    )


def create_stages(source: ModelSource, config) -> StageSet:
    from holitom.models.loading import load_llava
    from holitom.video.preprocess import VideoPreprocessor

    if source.is_export:
        raise BackendError(
            f"'{source.path}' is an export folder; the torch backend runs checkpoints. Pass the checkpoint folder "
            "(or 'default') with --backend torch, or use --backend onnxruntime for the export."
        )
    device = torch.device(config.device)  # RuntimeConfig checked the spelling: cpu, cuda or cuda:N
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"device '{config.device}' was asked but torch sees no CUDA device; use --device cpu.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise BackendError(f"device '{config.device}' was asked but torch sees {torch.cuda.device_count()} CUDA device(s); use cuda:0..cuda:{torch.cuda.device_count() - 1}.")
    model = load_llava(source.path, dtype=DTYPES[config.dtype], device=device)
    return build_torch_stages(
        model,
        load_tokenizer(source.path),
        VideoPreprocessor.from_pretrained(source.path),
        config.merge_config(),
        config.preset,
        device,
        config.check_inputs,
    )
