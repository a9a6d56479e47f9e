"""Our own export-friendly model code (SigLIP + projector + pooling + Qwen2) and checkpoint loading.

Submodules:

- ``config``: :class:`LlavaConfig` (torch-free) parsed from a llava-hf ``config.json``.
- ``llava``: :class:`LlavaModel` with encode_video / splice_video / decoder_head /
  decoder_tail / decode_step / prefill.
- ``loading``: :func:`read_state_dict`, :func:`load_llava` (safetensors only).
- ``facts``: split layer, stage dimensions, stop tokens, tokenizer loading (shared by export and runtime).
- ``baseline``: :class:`TransformersBaseline` (imports transformers lazily).

Names are resolved lazily so ``import holitom.models.config`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "VisionConfig": "holitom.models.config",
    "TextConfig": "holitom.models.config",
    "LlavaConfig": "holitom.models.config",
    "VARIANTS": "holitom.models.config",
    "LlavaModel": "holitom.models.llava",
    "VideoFeatures": "holitom.models.llava",
    "HeadOutput": "holitom.models.llava",
    "TailOutput": "holitom.models.llava",
    "read_state_dict": "holitom.models.loading",
    "load_llava": "holitom.models.loading",
    "TransformersBaseline": "holitom.models.baseline",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'holitom.models' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_EXPORTS)
