"""The PyTorch reference backend: our own model code plus the reference merge ops."""

from holitom.runtime.backends.torch.loader import create_stages

__all__ = ["create_stages"]
