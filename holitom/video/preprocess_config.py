"""The video processor settings a checkpoint saves, read the way transformers reads them.

Shared by both preprocessors: the torch one (:mod:`holitom.video.preprocess`, the
torch backend) and the numpy one (:mod:`holitom.video.preprocess_np`, the edge
runtime). Imports neither torch nor transformers.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from holitom.errors import CheckpointError, InputError

# File names as transformers writes them (utils/constants: PROCESSOR_NAME,
# VIDEO_PROCESSOR_NAME, IMAGE_PROCESSOR_NAME).
PROCESSOR_CONFIG = "processor_config.json"
VIDEO_PROCESSOR_CONFIG = "video_preprocessor_config.json"
IMAGE_PROCESSOR_CONFIG = "preprocessor_config.json"

# PIL resampling codes (what the configs store) -> torch interpolate modes.
# transformers maps PIL NEAREST to torchvision NEAREST_EXACT. LANCZOS, BOX and
# HAMMING have no torch.nn.functional equivalent: matching them would need
# torchvision's own kernels, so such configs are refused.
_RESAMPLE_MODES = {0: "nearest-exact", 2: "bilinear", 3: "bicubic"}
_RESAMPLE_NAMES = {"nearest": 0, "bilinear": 2, "bicubic": 3}


class PreprocessorConfigWarning(UserWarning):
    """A checkpoint has no preprocessor config, so the LLaVA-OneVision defaults are used."""


@dataclass(frozen=True)
class VideoPreprocessConfig:
    """The video processor settings that affect ``pixel_values``.

    Defaults are those the llava-hf LLaVA-OneVision / LLaVA-Video checkpoints
    ship (SigLIP at 384x384, bicubic, mean = std = 0.5). Note that transformers'
    ``LlavaOnevisionVideoProcessor()`` CLASS defaults use the OpenAI CLIP
    mean/std instead; the checkpoints' saved configs override them, and SigLIP
    was trained with 0.5/0.5, so these are the values the models expect.
    """

    height: int = 384
    width: int = 384
    resample: int = 3  # PIL code: 3 bicubic, 2 bilinear, 0 nearest
    do_resize: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, float, float] = field(default=(0.5, 0.5, 0.5))
    image_std: tuple[float, float, float] = field(default=(0.5, 0.5, 0.5))

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise InputError(f"{name} must be a positive integer, got {v!r}.")
            object.__setattr__(self, name, int(v))
        for name in ("image_mean", "image_std"):
            try:
                object.__setattr__(self, name, tuple(float(x) for x in getattr(self, name)))
            except (TypeError, ValueError) as exc:
                raise InputError(f"{name} must be 3 numbers (R, G, B), got {getattr(self, name)!r}.") from exc
        if self.resample not in _RESAMPLE_MODES:
            raise InputError(
                f"resample={self.resample!r} is not supported: use 3 (bicubic), 2 (bilinear) or 0 (nearest); "
                "lanczos / box / hamming need torchvision's kernels."
            )
        if not (math.isfinite(self.rescale_factor) and self.rescale_factor > 0):
            raise InputError(f"rescale_factor must be a positive number, got {self.rescale_factor!r}.")
        for name in ("image_mean", "image_std"):
            v = getattr(self, name)
            if len(v) != 3 or not all(math.isfinite(x) for x in v):
                raise InputError(f"{name} must be 3 finite numbers (R, G, B), got {v!r}.")
        if any(s == 0 for s in self.image_std):
            raise InputError(f"image_std must not contain 0, got {self.image_std!r}.")

    @property
    def interpolation(self) -> str:
        return _RESAMPLE_MODES[self.resample]

    @classmethod
    def from_dict(cls, d: dict, source: str = "the config") -> "VideoPreprocessConfig":
        """Read a transformers video/image processor dict (as saved by ``save_pretrained``)."""
        size = d.get("size") or {"height": 384, "width": 384}
        if isinstance(size, int):  # very old configs store one int for a square size
            size = {"height": size, "width": size}
        if not (isinstance(size, dict) and "height" in size and "width" in size):
            raise CheckpointError(
                f"{source} has size={size!r}; holitom supports only a fixed size "
                '{"height": H, "width": W} (what LLaVA-OneVision / LLaVA-Video use).'
            )
        if d.get("do_center_crop"):
            raise CheckpointError(f"{source} sets do_center_crop=true, which LLaVA-OneVision does not use and holitom does not implement.")
        resample = d.get("resample", 3)
        if isinstance(resample, str):
            resample = _RESAMPLE_NAMES.get(resample.lower(), resample)
        mean = d.get("image_mean", cls.image_mean)
        std = d.get("image_std", cls.image_std)
        # A single number means the same value for R, G and B (transformers accepts both).
        mean = (mean,) * 3 if isinstance(mean, (int, float)) else mean
        std = (std,) * 3 if isinstance(std, (int, float)) else std
        try:
            return cls(
                height=int(size["height"]),
                width=int(size["width"]),
                resample=resample,
                do_resize=bool(d.get("do_resize", True)),
                do_rescale=bool(d.get("do_rescale", True)),
                rescale_factor=float(d.get("rescale_factor", 1 / 255)),
                do_normalize=bool(d.get("do_normalize", True)),
                image_mean=mean,
                image_std=std,
            )
        except (InputError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{source} holds an invalid value: {exc}") from exc

    @classmethod
    def from_pretrained(cls, checkpoint_dir: str | os.PathLike) -> "VideoPreprocessConfig":
        """Load from a checkpoint directory, looking in the order transformers does.

        1. ``processor_config.json`` with a nested ``"video_processor"`` dict
           (how transformers 5 saves a processor);
        2. ``video_preprocessor_config.json``;
        3. ``preprocessor_config.json`` (the image processor's; transformers'
           video processor falls back to it too);
        4. none of these: the LLaVA-OneVision defaults, with a
           :class:`PreprocessorConfigWarning`.
        """
        d = Path(checkpoint_dir)
        if not d.is_dir():
            raise CheckpointError(f"checkpoint directory '{d}' does not exist or is not a directory; pass the folder holding config.json.")
        nested = d / PROCESSOR_CONFIG
        if nested.is_file():
            data = _read_json(nested)
            if isinstance(data.get("video_processor"), dict):
                return cls.from_dict(data["video_processor"], source=f"'{nested}' (video_processor)")
        for name in (VIDEO_PROCESSOR_CONFIG, IMAGE_PROCESSOR_CONFIG):
            path = d / name
            if path.is_file():
                return cls.from_dict(_read_json(path), source=f"'{path}'")
        warnings.warn(
            f"'{d}' has no {PROCESSOR_CONFIG} / {VIDEO_PROCESSOR_CONFIG} / {IMAGE_PROCESSOR_CONFIG}; using the "
            "LLaVA-OneVision defaults (384x384 bicubic, mean = std = 0.5). Save the checkpoint's processor next to it to silence this.",
            PreprocessorConfigWarning,
            stacklevel=3,
        )
        return cls()


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read '{path}' as JSON ({exc}); restore the file from the checkpoint.") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"'{path}' holds a JSON {type(data).__name__}, expected an object; restore the file from the checkpoint.")
    return data


__all__ = ["PreprocessorConfigWarning", "VideoPreprocessConfig"]
