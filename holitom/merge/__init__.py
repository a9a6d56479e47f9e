"""The HoliTom merge algorithms (DESIGN.md section 2): pure functions that return plans, applied in a separate step.

- :mod:`.config`: :class:`MergeConfig`, :class:`InnerMergeConfig` and the preset registry.
- :mod:`.temporal`: stage I (similarity, static-count table, DP, static mask).
- :mod:`.dpc`: density-peak clustering (DPC-KNN) and its merge.
- :mod:`.layout`: output order and newline placement per model family.
- :mod:`.outer`: stages I + II as one plan with a linear, single-scatter apply step.
- :mod:`.inner`: stage III at decoder layer K.
- :mod:`.attention`: the last prompt token's attention row without a full matrix.
- :mod:`.methods`: one adapter per config type (HoliTom or a competing baseline) and the competing presets.

Importing this package imports only the configs and presets (no torch); the algorithms import torch
and numpy on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

from holitom.merge import config as _config
from holitom.merge.config import INNER_MODES, InnerMergeConfig, MergeConfig, register_preset

# Everything else lives in torch modules, imported on first access (PEP 562), so the
# edge runtime can read presets and MergeConfig (holitom.merge.config) without torch.
_LAZY = {
    "last_token_attention": "attention",
    "DPCPlan": "dpc",
    "apply_density_peaks": "dpc",
    "density_peak_weights": "dpc",
    "plan_density_peaks": "dpc",
    "InnerMergePlan": "inner",
    "apply_inner_merge": "inner",
    "inner_keep_count": "inner",
    "inner_merge_weights": "inner",
    "plan_inner_merge": "inner",
    "Layout": "layout",
    "get_layout": "layout",
    "layout_names": "layout",
    "register_layout": "layout",
    "APPLY_METHODS": "outer",
    "OuterMergePlan": "outer",
    "OuterMergeResult": "outer",
    "apply_outer_merge": "outer",
    "outer_merge": "outer",
    "plan_outer_merge": "outer",
    "Reduction": "methods",
    "reduction_for": "methods",
    "register_method": "methods",
    "TemporalPlan": "temporal",
    "frame_similarity": "temporal",
    "plan_temporal": "temporal",
    "segment_frames": "temporal",
    "static_count_table": "temporal",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"holitom.merge.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'holitom.merge' has no attribute '{name}'")


def _with_methods() -> None:
    # The competing methods register their presets when holitom.merge.methods is imported.
    importlib.import_module("holitom.merge.methods")


def preset_names() -> list[str]:
    """Every preset: HoliTom's and the competing methods' (imports torch; ``holitom.merge.config.preset_names`` does not)."""
    _with_methods()
    return _config.preset_names()


def available_preset_names() -> list[str]:
    """:func:`preset_names`, or HoliTom's presets alone where torch (hence the competing methods) is not installed."""
    try:
        return preset_names()
    except ImportError:
        return _config.preset_names()


def get_preset(name: str) -> Any:
    _with_methods()
    return _config.get_preset(name)


__all__ = [
    "APPLY_METHODS",
    "DPCPlan",
    "INNER_MODES",
    "InnerMergeConfig",
    "InnerMergePlan",
    "Layout",
    "MergeConfig",
    "OuterMergePlan",
    "OuterMergeResult",
    "TemporalPlan",
    "apply_density_peaks",
    "apply_inner_merge",
    "apply_outer_merge",
    "density_peak_weights",
    "frame_similarity",
    "get_layout",
    "available_preset_names",
    "get_preset",
    "inner_keep_count",
    "inner_merge_weights",
    "last_token_attention",
    "layout_names",
    "outer_merge",
    "plan_density_peaks",
    "plan_inner_merge",
    "plan_outer_merge",
    "preset_names",
    "register_layout",
    "register_preset",
    "Reduction",
    "reduction_for",
    "register_method",
    "segment_frames",
    "static_count_table",
]
