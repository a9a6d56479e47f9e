"""holitom-deploy: HoliTom video-token merging for LLaVA-OneVision / LLaVA-Video.

``import holitom`` stays light: it imports no torch, onnxruntime, TensorRT or
CUDA. Subpackages are imported on use:

- ``holitom.merge``: the three HoliTom stages (pure functions returning plans).
- ``holitom.models``: our own SigLIP + projector + Qwen2 code and checkpoint loading.
- ``holitom.video``: video decoding, frame sampling and preprocessing.
- ``holitom.export``: ONNX export and the manifest.
- ``holitom.runtime``: backends (torch, onnxruntime, tensorrt) and the stage pipeline.
- ``holitom.plugins_trt``: the custom ops (reference + kernels + TensorRT plugins).
"""

from holitom.errors import HolitomError

__version__ = "0.1.0"

__all__ = ["HolitomError", "__version__"]
