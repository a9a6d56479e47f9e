"""The one place that imports TensorRT and Polygraphy for the toolkit, and names what is missing.

Both are optional (``pip install 'holitom-deploy[tensorrt]'``; TensorRT wheels
come from NVIDIA). A missing one raises :class:`holitom.errors.MissingDependencyError`,
which the CLI prints as one line with exit status 2.
"""

from __future__ import annotations

from dataclasses import dataclass

from holitom.errors import BackendError, MissingDependencyError

TENSORRT_INSTALL = "pip install 'holitom-deploy[tensorrt]' (TensorRT 10.x for your CUDA; on Jetson it comes with JetPack)"


def require_tensorrt(purpose: str):
    """``import tensorrt`` or a MissingDependencyError naming ``purpose``."""
    try:
        import tensorrt
    except ImportError as exc:
        raise MissingDependencyError("tensorrt", purpose, TENSORRT_INSTALL) from exc
    return tensorrt


def require_polygraphy(purpose: str):
    """``import polygraphy`` or a MissingDependencyError naming ``purpose``."""
    try:
        import polygraphy
    except ImportError as exc:
        raise MissingDependencyError("polygraphy", purpose, "pip install 'holitom-deploy[tensorrt]'") from exc
    return polygraphy


@dataclass(frozen=True)
class EngineTarget:
    """What a serialized engine is tied to: the TensorRT version and the GPU it was built on."""

    tensorrt_version: str
    device_name: str
    compute_capability: str  # "major.minor"

    def to_dict(self) -> dict:
        return {"tensorrt_version": self.tensorrt_version, "device_name": self.device_name, "compute_capability": self.compute_capability}

    @classmethod
    def from_dict(cls, d: dict) -> "EngineTarget":
        return cls(str(d["tensorrt_version"]), str(d["device_name"]), str(d["compute_capability"]))


def current_target(purpose: str, device: int = 0) -> EngineTarget:
    """This process's TensorRT version and CUDA device ``device`` (torch reads the device)."""
    trt = require_tensorrt(purpose)
    import torch

    if not torch.cuda.is_available():
        raise BackendError(f"{purpose} needs a CUDA device, but torch sees none; run it on the GPU machine the engines are for.")
    props = torch.cuda.get_device_properties(device)
    return EngineTarget(trt.__version__, props.name, f"{props.major}.{props.minor}")
