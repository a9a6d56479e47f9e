"""The HoliTom merge algorithms (DESIGN.md section 2): pure functions that return plans, applied in a separate step.

- :mod:`.config`: :class:`MergeConfig`, :class:`InnerMergeConfig` and the preset registry.
- :mod:`.temporal`: stage I (similarity, static-count table, DP, static mask).
- :mod:`.dpc`: density-peak clustering (DPC-KNN) and its merge.
- :mod:`.layout`: output order and newline placement per model family.
- :mod:`.outer`: stages I + II as one plan with a linear, single-scatter apply step.
- :mod:`.inner`: stage III at decoder layer K.
- :mod:`.attention`: the last prompt token's attention row without a full matrix.
- :mod:`.methods`: one adapter per config type (HoliTom or a competing baseline) and the competing presets.

Importing this package imports torch and numpy and nothing heavier.
"""

from holitom.merge.attention import last_token_attention
from holitom.merge.config import (
    INNER_MODES,
    InnerMergeConfig,
    MergeConfig,
    get_preset,
    preset_names,
    register_preset,
)
from holitom.merge.dpc import DPCPlan, apply_density_peaks, density_peak_weights, plan_density_peaks
from holitom.merge.inner import (
    InnerMergePlan,
    apply_inner_merge,
    inner_keep_count,
    inner_merge_weights,
    plan_inner_merge,
)
from holitom.merge.layout import Layout, get_layout, layout_names, register_layout
from holitom.merge.outer import (
    APPLY_METHODS,
    OuterMergePlan,
    OuterMergeResult,
    apply_outer_merge,
    outer_merge,
    plan_outer_merge,
)
from holitom.merge.methods import Reduction, reduction_for, register_method
from holitom.merge.temporal import (
    TemporalPlan,
    frame_similarity,
    plan_temporal,
    segment_frames,
    static_count_table,
)

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
