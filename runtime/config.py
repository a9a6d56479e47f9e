"""The runtime configuration: which backend, which merge preset, which frames."""

from __future__ import annotations

from dataclasses import dataclass

from holitom.limits import MAX_FRAMES, MIN_FRAMES, check_device, check_dtype, check_int
from holitom.errors import ConfigError

DEFAULT_PRESET = "r15"  # the paper's best accuracy/speed point: 99.7% of vanilla accuracy
DEFAULT_FRAMES = 32


@dataclass(frozen=True)
class RuntimeConfig:
    """How to build a pipeline. CLI flags only fill this in.

    ``preset`` names a merge preset (:func:`holitom.merge.preset_names`);
    ``inner_merge=False`` keeps the preset's outer merge and skips the inner one.
    """

    backend: str = "torch"
    preset: str = DEFAULT_PRESET
    inner_merge: bool = True
    device: str = "cpu"
    dtype: str = "float32"
    num_frames: int = DEFAULT_FRAMES
    check_inputs: bool = True

    def __post_init__(self):
        check_int(self.num_frames, "num_frames", MIN_FRAMES, MAX_FRAMES)
        check_device(self.device)
        check_dtype(self.dtype)
        from holitom.runtime.registry import backend_names

        if self.backend not in backend_names():
            raise ConfigError(f"unknown backend '{self.backend}'; choose one of {backend_names()}.")
        from holitom.merge import available_preset_names
        from holitom.merge import config as merge_presets

        # HoliTom's presets are known without torch; only another name needs the competing methods' registry.
        if self.preset not in merge_presets.preset_names() and self.preset not in available_preset_names():
            raise ConfigError(f"unknown preset '{self.preset}'; choose one of {available_preset_names()}.")
        if self.backend != "torch" and not isinstance(merge_presets.get_preset(self.preset), merge_presets.MergeConfig):
            raise ConfigError(
                f"preset '{self.preset}' is a competing method, which runs on the torch backend only; pass "
                f"--backend torch with a checkpoint folder (or 'default'), or a HoliTom preset (none, r10..r25, r10-outer..r25-outer)."
            )

    def merge_config(self):
        """The preset's config (HoliTom or a competing method), without its inner step when ``inner_merge`` is off."""
        from holitom.merge import get_preset, reduction_for

        cfg = get_preset(self.preset)
        return cfg if self.inner_merge else reduction_for(cfg).without_inner()

