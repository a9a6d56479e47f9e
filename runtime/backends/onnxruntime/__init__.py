"""The ONNX Runtime backend: runs an export folder's graphs (CPU, or CUDA with onnxruntime-gpu)."""

from holitom.runtime.backends.onnxruntime.loader import create_stages

__all__ = ["create_stages"]
