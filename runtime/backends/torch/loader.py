"""Build the torch stage set: load our model from a checkpoint and wrap each stage in a runner."""

from __future__ import annotations

import torch

from holitom import contracts as C
from holitom.errors import BackendError
from holitom.models.checkpoint import load_tokenizer
from holitom.runtime.backends.torch.runner import (
    DecodeStepRunner,
    DecoderHeadRunner,
    DecoderTailRunner,
    EmbedRunner,
    InnerMergeRunner,
    OuterMergeRunner,
    VisionRunner,
)
from holitom.models.facts import model_dims, split_layer, stop_token_ids
from holitom.sources import ModelSource
from holitom.runtime.arrays import TorchArrays
from holitom.runtime.stages import StageSet


def build_torch_stages(
    model,
    tokenizer,
    preprocessor,
    merge_config,
    preset: str,
    device: torch.device,
    check_inputs: bool = True,
    vision_attention: bool | None = None,
    cuda_graph: bool | None = None,
) -> StageSet:
    """Runners over an already loaded model (also used by the exporter as its reference).

    ``vision_attention``: whether the vision stage outputs the key scores; None = only
    when the method reads them. The export validation passes True, the exported contract.
    ``cuda_graph``: the decode step as a CUDA graph (None: on CUDA devices; see
    :func:`holitom.runtime.config.resolve_cuda_graph`).
    """
    from holitom.runtime.config import resolve_cuda_graph

    capture = None
    if resolve_cuda_graph(cuda_graph, str(device)):
        from holitom.runtime.backends.torch.cuda_graph import cuda_capture

        capture = cuda_capture(device)
    cfg = model.config
    k = split_layer(merge_config, cfg.num_layers)
    dims = model_dims(cfg, k)
    dtype = next(model.parameters()).dtype
    from holitom.merge import reduction_for

    reduction = reduction_for(merge_config)
    if vision_attention is None:
        vision_attention = reduction.needs_vision_attention
    specs = C.stage_specs(dims, str(dtype).removeprefix("torch."), vision_attention=vision_attention)
    common = dict(model=model, merge_config=merge_config, check_inputs=check_inputs)
    runners = {
        C.VISION: VisionRunner(specs[C.VISION], **common),
        C.OUTER_MERGE: OuterMergeRunner(specs[C.OUTER_MERGE], **common),
        C.EMBED: EmbedRunner(specs[C.EMBED], **common),
        C.DECODER_HEAD: DecoderHeadRunner(specs[C.DECODER_HEAD], inner_layer=k, **common),
        C.DECODER_TAIL: DecoderTailRunner(specs[C.DECODER_TAIL], inner_layer=k, **common),
        C.DECODE_STEP: DecodeStepRunner(specs[C.DECODE_STEP], num_layers=cfg.num_layers, capture=capture, **common),
    }
    has_inner = reduction.inner_layer(cfg.num_layers) is not None
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
        arrays=TorchArrays(device, dtype),
    )


def torch_device(name: str) -> torch.device:
    """The torch device ``name`` (``cpu``, ``cuda`` or ``cuda:N``, spelling already checked), refused with a
    :class:`BackendError` when this machine does not have it."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"device '{name}' was asked but torch sees no CUDA device; use --device cpu.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise BackendError(f"device '{name}' was asked but torch sees {torch.cuda.device_count()} CUDA device(s); use cuda:0..cuda:{torch.cuda.device_count() - 1}.")
    return device


def create_stages(source: ModelSource, config) -> StageSet:
    from holitom.models.loading import TORCH_DTYPES, load_llava
    from holitom.video.preprocess import VideoPreprocessor

    if source.is_export:
        raise BackendError(
            f"'{source.path}' is an export folder; the torch backend runs checkpoints. Pass the checkpoint folder "
            "(or 'default') with --backend torch, or use --backend onnxruntime for the export."
        )
    device = torch_device(config.device)  # RuntimeConfig checked the spelling: cpu, cuda or cuda:N
    model = load_llava(source.path, dtype=TORCH_DTYPES[config.dtype], device=device)
    return build_torch_stages(
        model,
        load_tokenizer(source.path),
        VideoPreprocessor.from_pretrained(source.path),
        config.merge_config(),
        config.preset,
        device,
        config.check_inputs,
        cuda_graph=config.cuda_graph,
    )
