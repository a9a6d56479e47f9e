"""The runtime configuration: which backend, which merge preset, which frames."""

from __future__ import annotations

from dataclasses import dataclass

from holitom.limits import MAX_FRAMES, MIN_FRAMES, check_device, check_dtype, check_int
from holitom.errors import ConfigError

DEFAULT_PRESET = "r15"  # the paper's best accuracy/speed point: 99.7% of vanilla accuracy
DEFAULT_FRAMES = 32


def resolve_cuda_graph(requested: bool | None, device: str, backend: str = "torch") -> bool:
    """Whether the torch backend's decode step runs as a CUDA graph: ``requested``, or on CUDA when None.

    Asking for it (True) anywhere but the torch backend on a CUDA device is a ConfigError.
    """
    if requested is not None and not isinstance(requested, bool):
        raise ConfigError(f"cuda_graph must be True, False or None (on CUDA devices), got {requested!r}.")
    on_cuda = device.startswith("cuda")
    if requested and (backend != "torch" or not on_cuda):
        raise ConfigError(
            f"CUDA-graph decoding (--cuda-graph) captures the torch backend's decode step on a CUDA device; this run is "
            f"backend {backend} on device {device}. Drop --cuda-graph, or use --backend torch --device cuda."
        )
    return on_cuda and backend == "torch" if requested is None else requested


@dataclass(frozen=True)
class RuntimeConfig:
    """How to build a pipeline. CLI flags only fill this in.

    ``preset`` names a merge preset (:func:`holitom.merge.preset_names`);
    ``inner_merge=False`` keeps the preset's outer merge and skips the inner one.
    ``cuda_graph``: capture the torch backend's decode step in a CUDA graph; None
    does on CUDA devices, False never does (:func:`resolve_cuda_graph`).
    """

    backend: str = "torch"
    preset: str = DEFAULT_PRESET
    inner_merge: bool = True
    device: str = "cpu"
    dtype: str = "float32"
    num_frames: int = DEFAULT_FRAMES
    check_inputs: bool = True
    cuda_graph: bool | None = None

    def __post_init__(self):
        check_int(self.num_frames, "num_frames", MIN_FRAMES, MAX_FRAMES)
        check_device(self.device)
        check_dtype(self.dtype)
        from holitom.runtime.registry import backend_names

        if self.backend not in backend_names():
            raise ConfigError(f"unknown backend '{self.backend}'; choose one of {backend_names()}.")
        resolve_cuda_graph(self.cuda_graph, self.device, self.backend)
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

