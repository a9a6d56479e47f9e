"""The HoliTom custom ops: names, I/O contracts and reference implementations.

One place declares every op that the exported merge graph carries as a node of
the custom domain :data:`DOMAIN`. Three parties read it:

- the ONNX builder (:mod:`holitom.export.holitom_onnx`), which emits a node
  ``DOMAIN::<name>`` plus an ONNX local function of the same name whose body
  uses only standard ops, so ONNX Runtime runs the file as it is;
- TensorRT plugin code, which registers a plugin creator under the same name,
  version and namespace; TensorRT's ONNX parser then swaps the plugin in for
  the node (its fallback plugin importer matches ``op_type`` and reads the
  ``plugin_version`` / ``plugin_namespace`` node attributes);
- tests, which check the graph against these contracts and every op against
  its reference (STYLE.md rules 6 and 14).

:data:`REFERENCE_OPS` maps each op name to a torch implementation with the same
inputs, attributes and outputs, built on :mod:`holitom.merge` (the PyTorch
reference of DESIGN.md section 2). It runs as an ordinary backend, so a plugin
kernel is checked against exactly what the ONNX function computes.

This module is import-light (dataclasses only); torch and holitom.merge are
imported when a reference op is called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

DOMAIN = "holitom"  # ONNX domain of the custom nodes and of their local functions
OP_VERSION = 1  # opset version of DOMAIN in the model's opset_import; plugin_version "1"
PLUGIN_NAMESPACE = DOMAIN  # TensorRT plugin creator namespace

TEMPORAL_SEGMENT = "TemporalSegment"
DENSITY_PEAK_MERGE = "DensityPeakMerge"

# Node attributes read by TensorRT's fallback plugin importer (not by the op's math).
PLUGIN_VERSION_ATTR = "plugin_version"
PLUGIN_NAMESPACE_ATTR = "plugin_namespace"


@dataclass(frozen=True)
class PortSpec:
    """One input or output of a custom op.

    ``dtype`` uses numpy spelling; ``shape`` holds symbolic dimension names
    (shared across the ports of one op: equal names mean equal sizes) or ints.
    """

    name: str
    dtype: str
    shape: tuple[str | int, ...]
    doc: str


@dataclass(frozen=True)
class AttributeSpec:
    """One attribute of a custom op (baked from the MergeConfig at export)."""

    name: str
    type: str  # "float" | "int" | "string"
    default: float | int | str
    doc: str


@dataclass(frozen=True)
class OpContract:
    """The complete I/O contract of one custom op, readable by plugin code and tests."""

    name: str
    inputs: tuple[PortSpec, ...]
    outputs: tuple[PortSpec, ...]
    attributes: tuple[AttributeSpec, ...]
    doc: str
    domain: str = DOMAIN
    version: int = OP_VERSION

    @property
    def input_names(self) -> list[str]:
        return [p.name for p in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [p.name for p in self.outputs]

    @property
    def attribute_names(self) -> list[str]:
        return [a.name for a in self.attributes]


# Both ops carry these, so a TensorRT parser finds the plugin (name, version, namespace).
_PLUGIN_ATTRIBUTES = (
    AttributeSpec(PLUGIN_VERSION_ATTR, "string", str(OP_VERSION), "TensorRT plugin version (not used by the math)."),
    AttributeSpec(PLUGIN_NAMESPACE_ATTR, "string", PLUGIN_NAMESPACE, "TensorRT plugin namespace (not used by the math)."),
)

TEMPORAL_SEGMENT_CONTRACT = OpContract(
    name=TEMPORAL_SEGMENT,
    doc=(
        "HoliTom stage I (DESIGN.md section 2): cosine similarity of each position between consecutive "
        "frames, the removed-token table C(a, e) = (e - a) * n(a, e) over all frame windows, the frame "
        "DP that maximises the removed tokens and its backtrack. Every frame gets the first and last "
        "frame of its window; a position is static in a window of two or more frames when its cosine "
        "similarity exceeds tau between every pair of consecutive frames of the window. Frames of one "
        "window share one static row; a single-frame window has none. Exact rules a kernel must keep: "
        "cos = <a, b> / (max(|a|, 1e-8) * max(|b|, 1e-8)) in float32, clamped to [-1, 1], static iff "
        "cos > tau (tau as float32); DP ties: a frame closes a single-frame window unless a longer window "
        "removes strictly more tokens, and the shortest window wins among equal totals."
    ),
    inputs=(PortSpec("features", "float32", ("frames", "positions", "hidden"), "X[t, p], projected and pooled."),),
    outputs=(
        PortSpec("window_start", "int64", ("frames",), "First frame of the window holding frame t."),
        PortSpec("window_end", "int64", ("frames",), "Last frame (inclusive) of the window holding frame t."),
        PortSpec("static_mask", "bool", ("frames", "positions"), "True where position p is static in t's window."),
    ),
    attributes=(
        AttributeSpec("tau", "float", 0.8, "Cosine threshold: static iff similarity > tau."),
        AttributeSpec("max_window", "int", 0, "Longest window in frames; 0 means unbounded."),
        *_PLUGIN_ATTRIBUTES,
    ),
)

DENSITY_PEAK_MERGE_CONTRACT = OpContract(
    name=DENSITY_PEAK_MERGE,
    doc=(
        "DPC-KNN clustering and merge (DESIGN.md section 2, stage II), batched over groups of token "
        "slots. Each group g clusters its valid tokens into num_clusters[g] clusters: "
        "d_ij = ||x_i - x_j|| / sqrt(hidden); k = min(k_nn, num_clusters[g]); rho_i = exp(-mean of "
        "d_ij^2 over the k nearest valid j, i included); delta_i = min d_ij over valid j denser than i, "
        "or the group's largest distance for a densest token; the centres are the top num_clusters[g] "
        "by rho * delta; every other valid token joins its nearest centre. A centre's slot receives "
        "beta * x_centre + (1 - beta) * mean(members), or x_centre when nobody joined it; every other "
        "slot receives zeros. Invalid slots take part in nothing. Exact rules a kernel must keep: exact "
        "duplicates are at distance exactly 0 (e.g. squared norms read off the Gram diagonal of the "
        "group-centred tokens); rho uses k = max(min(k_nn, M), 1); density ties: the lower slot is denser; "
        "gamma ties: the lower slot becomes the centre; equidistant centres: the lower slot wins; a "
        "centre always joins itself."
    ),
    inputs=(
        PortSpec("tokens", "float32", ("groups", "slots", "hidden"), "Token per slot (padding allowed)."),
        PortSpec("valid", "bool", ("groups", "slots"), "Which slots hold a token to cluster."),
        PortSpec("num_clusters", "int64", ("groups",), "M per group, 0 <= M <= number of valid slots."),
    ),
    outputs=(
        PortSpec("merged", "float32", ("groups", "slots", "hidden"), "Merged token at each centre's slot, else 0."),
        PortSpec("is_centre", "bool", ("groups", "slots"), "True at the slots of the M centres."),
        PortSpec("assignment", "int64", ("groups", "slots"), "Slot of the centre each valid token joined, -1 if none."),
    ),
    attributes=(
        AttributeSpec("k_nn", "int", 7, "Neighbours for the density (capped by num_clusters)."),
        AttributeSpec("beta", "float", 0.6, "Weight of the centre in the merged token."),
        *_PLUGIN_ATTRIBUTES,
    ),
)

OP_CONTRACTS: dict[str, OpContract] = {
    TEMPORAL_SEGMENT: TEMPORAL_SEGMENT_CONTRACT,
    DENSITY_PEAK_MERGE: DENSITY_PEAK_MERGE_CONTRACT,
}


def get_contract(name: str) -> OpContract:
    """The contract of op ``name``; ConfigError naming the known ops otherwise."""
    from holitom.errors import ConfigError

    try:
        return OP_CONTRACTS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown HoliTom op {name!r}; known ops: {sorted(OP_CONTRACTS)}.") from None


# --------------------------------------------------------------------------- reference implementations
#
# Each takes the op's inputs as torch tensors in contract order and its
# attributes as keywords (the TensorRT-only plugin_* attributes are accepted
# and ignored), and returns the outputs in contract order. They call the
# PyTorch reference of DESIGN.md section 2 (holitom.merge), imported lazily.


def _default(contract: OpContract, attribute: str):
    return next(a.default for a in contract.attributes if a.name == attribute)


def temporal_segment(
    features,
    *,
    tau: float = _default(TEMPORAL_SEGMENT_CONTRACT, "tau"),
    max_window: int = _default(TEMPORAL_SEGMENT_CONTRACT, "max_window"),
    plugin_version: str | None = None,
    plugin_namespace: str | None = None,
):
    """Reference of ``TemporalSegment``: ``holitom.merge.plan_temporal`` in the op's output form.

    Returns ``(window_start (F,) int64, window_end (F,) int64, static_mask (F, P) bool)``
    on the features' device.
    """
    from holitom.merge.temporal import plan_temporal

    plan = plan_temporal(features, float(tau), None if int(max_window) <= 0 else int(max_window))
    start, end = plan.frame_windows()  # (F,), (F,) host tensors: the DP ran there
    return start.to(features.device), end.to(features.device), plan.static


def density_peak_merge(
    tokens,
    valid,
    num_clusters,
    *,
    k_nn: int = _default(DENSITY_PEAK_MERGE_CONTRACT, "k_nn"),
    beta: float = _default(DENSITY_PEAK_MERGE_CONTRACT, "beta"),
    plugin_version: str | None = None,
    plugin_namespace: str | None = None,
):
    """Reference of ``DensityPeakMerge``: ``holitom.merge.plan_density_peaks`` in the op's slot form.

    The op names each token's centre slot and places each merged token at its
    centre's slot: one weighted ``index_add`` (no loop over groups or clusters).

    Returns ``(merged (G, n, D) float32, is_centre (G, n) bool, assignment (G, n) int64)``.
    """
    import torch

    from holitom.merge.custom_ops import centre_slots
    from holitom.merge.dpc import plan_density_peaks, slot_weights

    plan = plan_density_peaks(tokens, num_clusters, int(k_nn), valid)  # checks M and finiteness
    is_centre, assignment = plan.is_centre, centre_slots(plan)  # (G, n), (G, n)
    weight = slot_weights(is_centre, assignment, float(beta))  # (G, n)
    x = tokens.float()
    # The merged token of each centre slot: sum of weight * token over the slots that joined it.
    groups, slots, dim = x.shape
    offset = torch.arange(groups, device=x.device)[:, None] * slots  # (G, 1)
    joined = assignment >= 0
    merged = x.new_zeros((groups * slots, dim)).index_add(
        0, (assignment + offset)[joined], x[joined] * weight[joined][:, None]
    )  # (G * n, D)
    return merged.view(groups, slots, dim), is_centre, assignment


REFERENCE_OPS: dict[str, Callable] = {
    TEMPORAL_SEGMENT: temporal_segment,
    DENSITY_PEAK_MERGE: density_peak_merge,
}


__all__ = [
    "DENSITY_PEAK_MERGE",
    "DENSITY_PEAK_MERGE_CONTRACT",
    "DOMAIN",
    "OP_CONTRACTS",
    "OP_VERSION",
    "PLUGIN_NAMESPACE",
    "REFERENCE_OPS",
    "TEMPORAL_SEGMENT",
    "TEMPORAL_SEGMENT_CONTRACT",
    "AttributeSpec",
    "OpContract",
    "PortSpec",
    "get_contract",
]
