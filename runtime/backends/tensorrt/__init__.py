"""The TensorRT backend: runs an export folder's engines (built by `holitom build-engines`) on a CUDA device."""

from holitom.runtime.backends.tensorrt.loader import create_stages

__all__ = ["create_stages"]
