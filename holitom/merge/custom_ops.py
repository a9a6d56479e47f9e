"""The torch side of the HoliTom custom ops: the vectorized reference in eager mode, a ``holitom::`` node in an export.

The outer merge (:mod:`.outer`) calls the two ops of
:mod:`holitom.plugins_trt.ops` through these functions and nothing else:

- eagerly they run the PyTorch reference of DESIGN.md section 2
  (:func:`holitom.merge.temporal.plan_temporal`, :func:`holitom.merge.dpc._dpc_core`);
- while ``torch.onnx.export`` traces the merge (``torch.compiler.is_exporting()``),
  they emit one node of the custom domain with the contract's name, version,
  attributes and outputs (``torch.onnx.ops.symbolic_multi_out``, the mechanism
  the decoder export uses for its attention node). The exporter then attaches
  each op's ONNX local function, so ONNX Runtime runs the file as it is and a
  TensorRT build swaps its plugin in.

Everything around the ops (budgets, placement, window means, assembly) is
ordinary torch code in :mod:`.outer`, exported as it is.
"""

from __future__ import annotations

import torch

from holitom.merge.dpc import DPCPlan, _dpc_core
from holitom.merge.temporal import TemporalPlan, plan_temporal
from holitom.plugins_trt import ops as O


def exporting() -> bool:
    """True while ``torch.export`` / ``torch.onnx.export`` traces the code."""
    return bool(torch.compiler.is_exporting())


def _plugin_attributes() -> dict[str, str]:
    return {O.PLUGIN_VERSION_ATTR: str(O.OP_VERSION), O.PLUGIN_NAMESPACE_ATTR: O.PLUGIN_NAMESPACE}


def temporal_segment(
    x: torch.Tensor, tau: float, max_window: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, TemporalPlan | None]:
    """``TemporalSegment`` on float32 ``(F, P, D)`` features.

    Returns ``window_start (F,)``, ``window_end (F,)``, ``static_mask (F, P)``
    and, eagerly, the full :class:`TemporalPlan` (None in an export). Eagerly it
    raises InputError for non-finite features (the reference's one sync).
    """
    if exporting():
        frames, positions, _ = x.shape
        start, end, static = torch.onnx.ops.symbolic_multi_out(
            f"{O.DOMAIN}::{O.TEMPORAL_SEGMENT}",
            [x],
            {"tau": float(tau), "max_window": 0 if max_window is None else int(max_window), **_plugin_attributes()},
            dtypes=[torch.int64, torch.int64, torch.bool],
            shapes=[[frames], [frames], [frames, positions]],
            version=O.OP_VERSION,
        )
        return start, end, static, None
    plan = plan_temporal(x, tau, max_window)
    start, end = plan.frame_windows()  # (F,), (F,) host: the DP ran there
    device = x.device
    return start.to(device), end.to(device), plan.static, plan


def density_peak_decisions(
    tokens: torch.Tensor, valid: torch.Tensor, num_clusters: torch.Tensor, k_nn: int, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The decisions of ``DensityPeakMerge`` on ``(G, n, D)`` float32 token groups.

    Returns ``is_centre (G, n)`` and ``assignment (G, n)`` (the slot of the
    centre each valid token joined, -1 if none). The op's ``merged`` output is
    not needed here: the outer merge folds the cluster weights into its single
    linear apply step. ``tokens`` is the caller's scratch (it may be centred in
    place).
    """
    if exporting():
        groups, slots, dim = tokens.shape
        _, is_centre, assignment = torch.onnx.ops.symbolic_multi_out(
            f"{O.DOMAIN}::{O.DENSITY_PEAK_MERGE}",
            [tokens, valid, num_clusters],
            {"k_nn": int(k_nn), "beta": float(beta), **_plugin_attributes()},
            dtypes=[torch.float32, torch.bool, torch.int64],
            shapes=[[groups, slots, dim], [groups, slots], [groups, slots]],
            version=O.OP_VERSION,
        )
        return is_centre, assignment
    plan, _, _ = _dpc_core(tokens, valid, num_clusters.tolist(), int(k_nn), scratch=True)
    return plan.is_centre, centre_slots(plan)


def centre_slots(plan: DPCPlan) -> torch.Tensor:
    """``(G, n)`` the slot of the centre each token of a batched plan joined, -1 for none (the op's ``assignment``)."""
    groups, m_max = plan.centres.shape
    # Cluster index -> the centre's slot; -1 (no cluster) reads the appended -1 column.
    centres_or_none = torch.cat([plan.centres, plan.centres.new_full((groups, 1), -1)], 1)  # (G, M_max + 1)
    return centres_or_none.gather(1, torch.where(plan.assign >= 0, plan.assign, m_max))


__all__ = ["centre_slots", "density_peak_decisions", "exporting", "temporal_segment"]
