"""Frames -> ``pixel_values``, numerically identical to transformers' LLaVA-OneVision video processor.

transformers' ``LlavaOnevisionVideoProcessor`` (``BaseVideoProcessor`` with its
``TorchvisionBackend``) does, per video of uint8 frames:

1. ``(F, H, W, 3)`` -> ``(F, 3, H, W)`` contiguous uint8;
2. resize to ``size`` with torchvision's ``resize(antialias=True)``. On CPU,
   torchvision hands uint8 straight to ``torch.nn.functional.interpolate`` for
   bicubic (and for bilinear on AVX2/AVX512/ARM CPUs), where torch has a
   dedicated fixed-point uint8 kernel; elsewhere (CUDA, or bilinear on other
   CPUs) it interpolates in float32 then clamps (bicubic only), rounds and casts
   back to uint8. The two routes differ by one gray level here and there, so we
   take the same route for the same device and dtype;
3. "fused rescale + normalize": ``mean' = tensor(mean) * (1 / rescale_factor)``,
   ``std'`` likewise, then ``(x.float() - mean') / std'``.

This module reproduces those steps with plain torch, the same kernels and the
same operation order, so the result is bit-identical on CPU (the tests require
max abs diff <= 1e-5 against transformers). It imports neither torchvision nor
transformers: edge devices often have torch without torchvision.

Frame sampling is NOT done here (transformers' ``do_sample_frames`` is
ignored): frames come already sampled from :func:`holitom.video.read_video` or
:func:`holitom.video.clip_from_frames`.
"""

from __future__ import annotations

import os
import platform

import numpy as np
import torch
import torch.nn.functional as F

from holitom.video.clip import VideoClip, as_rgb_frames
from holitom.video.preprocess_config import PreprocessorConfigWarning, VideoPreprocessConfig


def _native_uint8_resize(mode: str, device: torch.device) -> bool:
    """Whether torchvision resizes uint8 without a float round trip for this mode and device.

    Mirrors torchvision.transforms.v2.functional._geometry: nearest modes take
    uint8 everywhere; on CPU bicubic always, bilinear only on AVX2/AVX512 x86 or
    ARM (its benchmarks found the float path faster on other x86 CPUs).
    """
    if mode == "nearest-exact":
        return True
    if device.type != "cpu":
        return False
    if mode == "bicubic":
        return True
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") or platform.machine() in ("aarch64", "arm64")


def _resize_uint8(video: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    """(F, 3, H, W) uint8 -> (F, 3, height, width) uint8, as torchvision's resize(antialias=True)."""
    if video.shape[-2:] == (height, width):
        return video  # torchvision returns the input unchanged at the target size
    antialias = mode in ("bilinear", "bicubic")
    align_corners = False if antialias else None
    if _native_uint8_resize(mode, video.device):
        return F.interpolate(video, size=(height, width), mode=mode, align_corners=align_corners, antialias=antialias)
    out = F.interpolate(video.float(), size=(height, width), mode=mode, align_corners=align_corners, antialias=antialias)
    if mode == "bicubic":
        out = out.clamp_(0, 255)  # bicubic overshoots at edges; bilinear cannot
    return out.round_().to(torch.uint8)


class VideoPreprocessor:
    """Turn RGB frames into the model's ``pixel_values``: float32 ``(F, 3, H, W)``.

    Build it from a checkpoint with :meth:`from_pretrained` (reads the saved
    processor config) or from a :class:`VideoPreprocessConfig`. Calling it on
    frames gives exactly what transformers' ``LlavaOnevisionVideoProcessor``
    puts in ``pixel_values_videos[0]`` for the same frames.
    """

    def __init__(self, config: VideoPreprocessConfig | None = None):
        self.config = config if config is not None else VideoPreprocessConfig()
        c = self.config
        # The fused constants, computed as transformers does (float32 tensor
        # times a Python float), so normalisation rounds identically.
        if c.do_rescale and c.do_normalize:
            self._mean = torch.tensor(c.image_mean, dtype=torch.float32) * (1.0 / c.rescale_factor)  # (3,)
            self._std = torch.tensor(c.image_std, dtype=torch.float32) * (1.0 / c.rescale_factor)  # (3,)
        else:
            self._mean = torch.tensor(c.image_mean, dtype=torch.float32)
            self._std = torch.tensor(c.image_std, dtype=torch.float32)

    @classmethod
    def from_pretrained(cls, checkpoint_dir: str | os.PathLike) -> "VideoPreprocessor":
        """Read the processor config of a checkpoint directory (see :meth:`VideoPreprocessConfig.from_pretrained`)."""
        return cls(VideoPreprocessConfig.from_pretrained(checkpoint_dir))

    def __repr__(self) -> str:
        return f"VideoPreprocessor({self.config})"

    def __call__(self, frames, device: str | torch.device | None = None) -> torch.Tensor:
        """Preprocess frames.

        Args:
            frames: a :class:`VideoClip`, or in-memory frames in any form
                :func:`holitom.video.as_rgb_frames` accepts (uint8 or float in
                [0, 1], ``(F, H, W, 3)`` or ``(F, 3, H, W)``, numpy or torch).
            device: where to compute (the resize runs there). Default: the
                device of a torch tensor input, else CPU. Note that CPU and CUDA
                resize uint8 through different kernels (see the module doc),
                exactly as transformers does on each.

        Returns:
            ``torch.float32`` tensor ``(F, 3, height, width)``, contiguous.
        """
        if device is not None:
            dev = torch.device(device)
        elif isinstance(frames, torch.Tensor):
            dev = frames.device
        else:
            dev = torch.device("cpu")
        # Validation and layout/dtype normalisation happen on the host: cheap
        # next to the resize, and one code path for every input type.
        rgb = frames.frames if isinstance(frames, VideoClip) else as_rgb_frames(frames)  # (F, H, W, 3) uint8
        video = torch.from_numpy(np.ascontiguousarray(rgb)).to(dev)  # (F, H, W, 3)
        video = video.permute(0, 3, 1, 2).contiguous()  # (F, 3, H, W), the layout transformers resizes in
        c = self.config
        if c.do_resize:
            video = _resize_uint8(video, c.height, c.width, c.interpolation)  # (F, 3, h, w) uint8
        mean = self._mean.to(dev).view(-1, 1, 1)  # (3, 1, 1)
        std = self._std.to(dev).view(-1, 1, 1)
        if c.do_normalize:
            return video.to(torch.float32).sub_(mean).div_(std).contiguous()
        if c.do_rescale:
            return (video.to(torch.float32) * c.rescale_factor).contiguous()
        return video.to(torch.float32).contiguous()


__all__ = ["PreprocessorConfigWarning", "VideoPreprocessConfig", "VideoPreprocessor"]
