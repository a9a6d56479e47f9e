"""The HoliTom merge stages as ONNX graphs that ONNX Runtime runs as they are.

Two builders:

- :func:`build_outer_merge_model`: stages I+II of DESIGN.md section 2 (temporal
  segmentation, spatial merging, output ordering and newline insertion) for one
  MergeConfig, grid and layout, with a dynamic ``frames`` axis.
- :func:`build_inner_merge_model`: stage III (keep the top visual tokens by the
  last token's attention, merge each dropped token into its most similar kept
  token) for one ratio and mode, with a dynamic sequence.

plus :func:`build_custom_op_model` (one custom node and its function: the ONNX
side of a plugin kernel's parity check and benchmark) and the I/O declarations
(:func:`outer_merge_io`, :func:`inner_merge_io`) the files are checked against.

The heavy kernels of the outer merge appear as nodes of the custom domain
:data:`holitom.plugins_trt.ops.DOMAIN` (``TemporalSegment``,
``DensityPeakMerge``). The model also carries an ONNX local function of each
name whose body uses only default-domain ops, so ONNX Runtime (which inlines
local functions) runs the very same file; a TensorRT build with the plugins
registered swaps them in for the nodes. Everything data-dependent in size (how
many tokens survive) lives in the standard-op glue of the main graph, so the
plugins only ever produce outputs whose shapes follow from their input shapes.

The graphs are written with ``onnx.helper`` through a small node builder
(:class:`_Nodes`) rather than onnxscript: every node, Loop body and attribute
reference is spelled out, which keeps the emitted protos predictable across
onnx / onnxscript releases.

Numerics follow the PyTorch reference (:mod:`holitom.merge`) decision for
decision: ONNX ``TopK`` puts the lower index first among equal values, ``Round``
rounds half to even like Python's ``round``, and the budget arithmetic (r',
ceil / round of the per-group budgets) runs in float64 like the reference's
Python floats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from holitom import contracts as C
from holitom.export.onnx_io import check_graph_io
from holitom.errors import ConfigError, ExportError
from holitom.plugins_trt import ops as O

DEFAULT_OPSET = 18  # the exporter's default; ORT >= 1.14, TensorRT 10
MIN_OPSET = 17  # ScatterElements(reduction="add") needs 16, Loop and CumSum are older; 17 for TensorRT 8.x

LAYOUTS = ("onevision", "llava_video")
INNER_MODES = ("sequential", "mean")

# Optional outputs of the outer-merge graph (``metadata=True``): where each
# output row sits in the video, as in the reference plan's frame_index /
# position_index (a static cluster: its window's first frame; a newline: the
# frame it closes, position -1). Useful to debug a plan or to build
# position-aware features; the runtime contract does not need them.
FRAME_INDEX = "frame_index"
POSITION_INDEX = "position_index"
NEWLINE_POSITION = -1

_INT64_MAX = np.iinfo(np.int64).max
_INT64_MIN = np.iinfo(np.int64).min


# --------------------------------------------------------------------------- I/O declarations


def outer_merge_io(
    grid: int | tuple[int, int], hidden_size: int, *, newline_input: bool = True, metadata: bool = False
) -> C.StageSpec:
    """I/O of the outer-merge graph: names, dtypes and named dynamic axes (STYLE.md rule 8).

    With ``newline_input=False`` and ``metadata=False`` this is exactly the
    runtime contract :data:`holitom.contracts.OUTER_MERGE` (``features``,
    ``attention`` -> ``merged_tokens``): ``image_newline`` is then baked in as an
    initializer. ``metadata=True`` adds ``frame_index`` and ``position_index``
    (the reference plan's per-row frame and grid position, -1 for newlines).
    """
    rows, cols = _grid(grid)
    positions, d = rows * cols, int(hidden_size)
    inputs = [
        C.TensorSpec("features", "float32", (C.FRAMES, positions, d)),
        C.TensorSpec("attention", "float32", (C.FRAMES, positions)),
    ]
    if newline_input:
        inputs.append(C.TensorSpec("image_newline", "float32", (d,)))
    outputs = [C.TensorSpec("merged_tokens", "float32", (C.TOKENS, d))]
    if metadata:
        outputs += [C.TensorSpec(FRAME_INDEX, "int64", (C.TOKENS,)), C.TensorSpec(POSITION_INDEX, "int64", (C.TOKENS,))]
    return C.StageSpec(C.OUTER_MERGE, tuple(inputs), tuple(outputs))


def inner_merge_io(hidden_size: int) -> C.StageSpec:
    """I/O of the inner-merge graph; the same names as :data:`holitom.contracts.INNER_MERGE`."""
    d = int(hidden_size)
    return C.StageSpec(
        C.INNER_MERGE,
        inputs=(
            C.TensorSpec("hidden_states", "float32", (1, C.SEQUENCE, d)),
            C.TensorSpec("attn_row", "float32", (C.VISUAL,)),
            C.TensorSpec("position_ids", "int64", (1, C.SEQUENCE)),
            C.TensorSpec("visual_span", "int64", (2,)),
        ),
        outputs=(
            C.TensorSpec("merged_hidden_states", "float32", (1, C.TAIL_SEQUENCE, d)),
            C.TensorSpec("merged_position_ids", "int64", (1, C.TAIL_SEQUENCE)),
        ),
    )


_ONNX_DTYPES = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64, "bool": TensorProto.BOOL}


def _value_info(spec: C.TensorSpec) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(spec.name, _ONNX_DTYPES[spec.dtype], list(spec.shape))


def check_model_io(model: onnx.ModelProto, spec: C.StageSpec) -> None:
    """Raise ExportError listing every way ``model``'s graph I/O differs from ``spec`` (names and order,
    element types, ranks, fixed sizes, dynamic-dimension names). Strict: the merge graphs use every input."""
    check_graph_io(model, spec, allow_dropped_inputs=False)


def onnx_op_types(model: onnx.ModelProto) -> set[tuple[str, str]]:
    """The ``(domain, op_type)`` pairs of the main graph's nodes (``""`` is the default domain)."""
    return {(node.domain, node.op_type) for node in model.graph.node}


def function_op_types(model: onnx.ModelProto) -> dict[str, set[tuple[str, str]]]:
    """For each local function, the ``(domain, op_type)`` pairs in its body, Loop bodies included."""

    def walk(nodes) -> set[tuple[str, str]]:
        found = set()
        for node in nodes:
            found.add((node.domain, node.op_type))
            for attr in node.attribute:
                if attr.type == AttributeProto.GRAPH:
                    found |= walk(attr.g.node)
                for sub in attr.graphs:
                    found |= walk(sub.node)
        return found

    return {fn.name: walk(fn.node) for fn in model.functions}


# --------------------------------------------------------------------------- node builder


class _Nodes:
    """Appends nodes to one graph, Loop body or function body, naming outputs uniquely.

    ``prefix`` keeps names of nested scopes (Loop bodies) apart from their parents:
    ONNX values are single-assignment across a graph and its subgraphs.
    """

    def __init__(self, prefix: str, opset: int):
        self.prefix = prefix
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self._count = 0
        self._consts: dict[tuple, str] = {}

    def _fresh(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def op(self, op_type: str, *inputs: str, n_out: int = 1, domain: str = "", attr_refs=(), **attrs):
        """Append one node; returns its output name (or a tuple of names when ``n_out > 1``)."""
        outputs = [self._fresh(op_type.lower()) for _ in range(n_out)]
        node = helper.make_node(op_type, list(inputs), outputs, name=self._fresh(f"node_{op_type}"), domain=domain, **attrs)
        node.attribute.extend(attr_refs)
        self.nodes.append(node)
        return outputs[0] if n_out == 1 else tuple(outputs)

    def const(self, value, dtype) -> str:
        """A Constant node (deduplicated per scope)."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            tensor = numpy_helper.from_array(array, name=self._fresh("const_value"))
            self._consts[key] = self.op("Constant", value=tensor)
        return self._consts[key]

    def i64(self, *values: int) -> str:
        """A 1-D int64 constant (Slice / Squeeze / Reshape arguments)."""
        return self.const(list(values), np.int64)

    def scalar(self, value, dtype) -> str:
        return self.const(value, dtype)

    def attr_scalar(self, attr: str, attr_type: int) -> str:
        """A scalar tensor holding the enclosing function's attribute ``attr``."""
        value_field = {AttributeProto.FLOAT: "value_float", AttributeProto.INT: "value_int"}[attr_type]
        ref = helper.make_attribute_ref(value_field, attr_type, ref_attr_name=attr)
        return self.op("Constant", attr_refs=[ref])

    def reduce(self, op_type: str, x: str, axes: tuple[int, ...] | None, keepdims: int) -> str:
        """``ReduceX`` over ``axes`` (None: all), spelled for this opset.

        ReduceSum takes its axes as an input since opset 13, the other reductions
        only since 18; opset 17 (TensorRT 8.x) still wants an attribute there.
        """
        if axes is None:
            return self.op(op_type, x, keepdims=keepdims)
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, x, self.i64(*axes), keepdims=keepdims)
        return self.op(op_type, x, axes=list(axes), keepdims=keepdims)

    def sub(self, prefix: str) -> "_Nodes":
        """A builder for a nested scope (Loop body) of the same opset."""
        return _Nodes(prefix, self.opset)

    # small idioms -------------------------------------------------------------------------

    def dim(self, x: str, axis: int) -> str:
        """``x.shape[axis]`` as a 1-D int64 tensor of length 1."""
        return self.op("Shape", x, start=axis, end=axis + 1)

    def scalar_of(self, x1: str) -> str:
        """A length-1 1-D tensor as a scalar."""
        return self.op("Squeeze", x1, self.i64(0))

    def unsqueeze(self, x: str, *axes: int) -> str:
        return self.op("Unsqueeze", x, self.i64(*axes))

    def arange(self, n_scalar: str) -> str:
        """``0..n-1`` as int64 from a scalar int64 ``n``."""
        return self.op("Range", self.scalar(0, np.int64), n_scalar, self.scalar(1, np.int64))

    def slice(self, x: str, start: int, end: int, axis: int, step: int = 1) -> str:
        return self.op("Slice", x, self.i64(start), self.i64(end), self.i64(axis), self.i64(step))

    def cast(self, x: str, to: int) -> str:
        return self.op("Cast", x, to=to)

    def graph(self, name: str, inputs, outputs) -> onnx.GraphProto:
        return helper.make_graph(self.nodes, name, inputs, outputs)


def _plugin_attrs() -> dict[str, str]:
    """Node attributes TensorRT's fallback plugin importer reads to find the plugin creator."""
    return {O.PLUGIN_VERSION_ATTR: str(O.OP_VERSION), O.PLUGIN_NAMESPACE_ATTR: O.PLUGIN_NAMESPACE}


def _function(contract: O.OpContract, body: _Nodes, outputs: Sequence[str], opset: int) -> onnx.FunctionProto:
    """Wrap ``body`` as the local function implementing ``contract`` (attribute defaults from it)."""
    defaults = [helper.make_attribute(a.name, a.default) for a in contract.attributes]
    # The body computes into fresh names; bind them to the contract's output names.
    nodes = list(body.nodes)
    for name, value in zip(contract.output_names, outputs):
        nodes.append(helper.make_node("Identity", [value], [name], name=f"{contract.name}_out_{name}"))
    return helper.make_function(
        contract.domain,
        contract.name,
        contract.input_names,
        contract.output_names,
        nodes,
        opset_imports=[helper.make_opsetid("", opset)],
        attribute_protos=defaults,
        doc_string=contract.doc,
    )


# --------------------------------------------------------------------------- TemporalSegment


def _cosine_consecutive(g: _Nodes, x: str) -> str:
    """Cosine similarity of every position between frames t and t+1: (F, P, D) -> (F-1, P).

    The reference's formula (``holitom.merge.temporal.frame_similarity``): each
    norm clamped at eps = 1e-8, the result clamped to [-1, 1].
    """
    eps = g.scalar(1e-8, np.float32)
    # One frame pair per Loop iteration, like the reference on CPU: both frames (P * D floats)
    # stay in cache, where slicing x[:-1] and x[1:] whole streams the video through memory
    # four more times (measured on CPU at F=32, P=196, D=896: about twice as slow).
    # The squared norms of frame t+1 are taken in the same iteration (frame 0's before the Loop).
    pairs = g.op("Sub", g.scalar_of(g.dim(x, 0)), g.scalar(1, np.int64))  # () F - 1
    b = g.sub("ts_cos_")
    frame = b.op("Gather", x, "cos_t", axis=0)  # (P, D)
    following = b.op("Gather", x, b.op("Add", "cos_t", b.scalar(1, np.int64)), axis=0)  # (P, D)
    dot_t = b.reduce("ReduceSum", b.op("Mul", frame, following), (-1,), keepdims=0)  # (P,)
    sq_norm_t = b.reduce("ReduceSumSquare", following, (-1,), keepdims=0)  # (P,)
    cond = b.op("Identity", "cos_cond")
    body = b.graph(
        "frame_pair_dot",
        [_vi("cos_t", TensorProto.INT64, []), _vi("cos_cond", TensorProto.BOOL, [])],
        [_vi(cond, TensorProto.BOOL, []), _vi(dot_t, TensorProto.FLOAT, [None]), _vi(sq_norm_t, TensorProto.FLOAT, [None])],
    )
    dot, sq_norm_rest = g.op("Loop", pairs, "", body=body, n_out=2)  # (F-1, P), (F-1, P)
    # A Loop that runs zero times (F = 1) cannot know its scan outputs' trailing dims: restore them.
    pair_shape = g.op("Concat", g.unsqueeze(pairs, 0), g.dim(x, 1), axis=0)  # (2,) [F-1, P]
    dot, sq_norm_rest = g.op("Reshape", dot, pair_shape), g.op("Reshape", sq_norm_rest, pair_shape)
    sq_norm_first = g.reduce("ReduceSumSquare", g.slice(x, 0, 1, 0), (-1,), keepdims=0)  # (1, P)
    norm = g.op("Sqrt", g.op("Concat", sq_norm_first, sq_norm_rest, axis=0))  # (F, P)
    norm = g.op("Max", norm, eps)
    cosine = g.op("Div", dot, g.op("Mul", g.slice(norm, 0, -1, 0), g.slice(norm, 1, _INT64_MAX, 0)))  # (F-1, P)
    # Rounding can push |cos| a hair past 1; the reference clamps, so tau = 1 means "nothing static".
    return g.op("Clip", cosine, g.scalar(-1.0, np.float32), g.scalar(1.0, np.float32))


# Tie rule of the frame DP, as in the reference (holitom.merge.temporal): a frame closes
# a single-frame window unless a longer window removes strictly more tokens, and the
# shortest window wins among equal totals; over starts a = i, i-1, ... that is "the
# latest start among equal totals", i.e. ArgMax(select_last_index=1).
_DP_SELECT_LAST = 1


def temporal_segment_function(opset: int = DEFAULT_OPSET) -> onnx.FunctionProto:
    """The local function of ``holitom::TemporalSegment`` (contract: ``plugins_trt.ops``).

    C(a, e) for all windows costs O(F * P + F^2) here instead of O(F^2 * P): a
    position's static run containing frame a ends at ``run_end[a, p]``, so
    n(a, e) = #{p : run_end[a, p] >= e} is a histogram of ``run_end`` rows
    accumulated from the right. The DP and its backtrack are Loops over frames
    (F is small and each step depends on the previous one).
    """
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    g = _Nodes("ts_", opset)
    x = "features"  # (F, P, D)
    tau = g.attr_scalar("tau", AttributeProto.FLOAT)
    max_window = g.attr_scalar("max_window", AttributeProto.INT)
    zero, one = g.scalar(0, np.int64), g.scalar(1, np.int64)

    frames1 = g.dim(x, 0)  # (1,) F
    frames = g.scalar_of(frames1)  # () F
    fp_shape = g.op("Shape", x, start=0, end=2)  # (2,) [F, P]

    # Stage I step 1-2: a "break" between t and t+1 ends every static run at p.
    similar = g.op("Greater", _cosine_consecutive(g, x), tau)  # (F-1, P)
    breaks = g.cast(g.op("Not", similar), i64)  # (F-1, P)
    first_row = g.op("ConstantOfShape", g.op("Concat", g.i64(1), g.dim(x, 1), axis=0), value=_tensor(0, np.int64))
    run_id = g.op("Concat", first_row, g.op("CumSum", breaks, zero), axis=0)  # (F, P) breaks before frame t

    # run_end[a, p]: last frame of the run holding frame a; run_id is non-decreasing in t, so
    # run_end = (number of frames whose run_id <= run_id[a, p]) - 1.
    ones_fp = g.op("ConstantOfShape", fp_shape, value=_tensor(1, np.int64))  # (F, P)
    zeros_fp = g.op("ConstantOfShape", fp_shape, value=_tensor(0, np.int64))
    per_run = g.op("ScatterElements", zeros_fp, run_id, ones_fp, axis=0, reduction="add")  # (F, P) frames per run id
    upto = g.op("CumSum", per_run, zero)  # (F, P)
    run_end = g.op("Sub", g.op("GatherElements", upto, run_id, axis=0), one)  # (F, P)

    # n_static[a, e] = #{p : run_end[a, p] >= e}
    ff_shape = g.op("Concat", frames1, frames1, axis=0)  # (2,) [F, F]
    zeros_ff = g.op("ConstantOfShape", ff_shape, value=_tensor(0, np.int64))
    ends_hist = g.op("ScatterElements", zeros_ff, run_end, ones_fp, axis=1, reduction="add")  # (F, F) [a, v]
    n_static = g.op("CumSum", ends_hist, one, reverse=1)  # (F, F) [a, e]

    t = g.arange(frames)  # (F,)
    span = g.op("Sub", g.unsqueeze(t, 0), g.unsqueeze(t, 1))  # (F, F) [a, e] = e - a
    allowed = g.op("GreaterOrEqual", span, zero)
    unbounded = g.op("LessOrEqual", max_window, zero)
    allowed = g.op("And", allowed, g.op("Or", unbounded, g.op("Less", span, max_window)))  # length e-a+1 <= W
    removed = g.cast(g.op("Mul", span, n_static), f32)  # (F, F) C(a, e), exact in float32 (< 2^24)
    table = g.op("Where", allowed, removed, g.scalar(-np.inf, np.float32))  # (F, F); -inf: no such window

    # DP over end frames i: dp[i] = max_a dp[a-1] + C(a, i) (a = i is the single-frame window, C = 0).
    # dp_ext[0] = dp[-1] = 0, dp_ext[i+1] = dp[i]. Ties: the latest start (see _DP_SELECT_LAST).
    dp0 = g.op("ConstantOfShape", g.op("Add", frames1, g.i64(1)), value=_tensor(0.0, np.float32))  # (F+1,)
    t_ext = g.arange(g.op("Add", frames, one))  # (F+1,)
    b = g.sub("ts_dp_")
    col = b.op("Gather", table, "dp_i", axis=1)  # (F,) C(a, i)
    cand = b.op("Add", b.slice("dp_in", 0, -1, 0), col)  # (F,) dp[a-1] + C(a, i)
    best = b.reduce("ReduceMax", cand, None, keepdims=0)  # ()
    arg = b.op("ArgMax", cand, axis=0, keepdims=0, select_last_index=_DP_SELECT_LAST)  # ()
    dp_out = b.op("Where", b.op("Equal", t_ext, b.op("Add", "dp_i", b.scalar(1, np.int64))), best, "dp_in")
    cond_out = b.op("Identity", "dp_cond")
    dp_body = b.graph(
        "temporal_dp",
        [_vi("dp_i", i64, []), _vi("dp_cond", TensorProto.BOOL, []), _vi("dp_in", f32, [None])],
        [_vi(cond_out, TensorProto.BOOL, []), _vi(dp_out, f32, [None]), _vi(arg, i64, [])],
    )
    _, best_start = g.op("Loop", frames, "", dp0, n_out=2, body=dp_body)  # (F,) argmax start per end frame

    # Backtrack from the last frame: frame t = F-1-k belongs to the window ending at next_end.
    last = g.op("Sub", frames, one)
    k = g.sub("ts_bt_")
    t_k = k.op("Sub", last, "bt_k")
    start_here = k.op("Gather", best_start, t_k, axis=0)  # ()
    start = k.op("Where", k.op("Equal", t_k, "bt_end"), start_here, "bt_start")
    end = k.op("Identity", "bt_end")
    next_end = k.op("Where", k.op("Equal", t_k, start), k.op("Sub", t_k, k.scalar(1, np.int64)), "bt_end")
    start_scan = k.op("Identity", start)
    cond_out = k.op("Identity", "bt_cond")
    bt_body = k.graph(
        "temporal_backtrack",
        [_vi("bt_k", i64, []), _vi("bt_cond", TensorProto.BOOL, []), _vi("bt_end", i64, []), _vi("bt_start", i64, [])],
        [
            _vi(cond_out, TensorProto.BOOL, []),
            _vi(next_end, i64, []),
            _vi(start, i64, []),
            _vi(start_scan, i64, []),
            _vi(end, i64, []),
        ],
    )
    _, _, starts_rev, ends_rev = g.op("Loop", frames, "", last, zero, n_out=4, body=bt_body)  # (F,) from the last frame
    window_start = g.op("Slice", starts_rev, g.i64(-1), g.i64(_INT64_MIN), g.i64(0), g.i64(-1))  # (F,)
    window_end = g.op("Slice", ends_rev, g.i64(-1), g.i64(_INT64_MIN), g.i64(0), g.i64(-1))  # (F,)

    # p is static in [a, e] (e > a) iff its run holding a reaches e.
    reach = g.op("Gather", run_end, window_start, axis=0)  # (F, P)
    static = g.op("GreaterOrEqual", reach, g.unsqueeze(window_end, 1))
    multi = g.unsqueeze(g.op("Greater", window_end, window_start), 1)  # (F, 1)
    static = g.op("And", static, multi)  # (F, P)
    return _function(O.TEMPORAL_SEGMENT_CONTRACT, g, [window_start, window_end, static], opset)


def _vi(name: str, elem_type: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


def _tensor(value, dtype) -> onnx.TensorProto:
    """A one-element tensor (ConstantOfShape's ``value`` attribute)."""
    return numpy_helper.from_array(np.asarray([value], dtype=dtype))


# --------------------------------------------------------------------------- DensityPeakMerge


def density_peak_merge_function(opset: int = DEFAULT_OPSET) -> onnx.FunctionProto:
    """The local function of ``holitom::DensityPeakMerge`` (contract: ``plugins_trt.ops``).

    Vectorized over groups and slots, mirroring the reference
    (``holitom.merge.dpc``) step for step so that both take the same decisions:

    - squared distances from one batched Gram matrix of the group-centred tokens
      (centring keeps float32 cancellation small), squared norms read off the
      Gram diagonal (exact duplicates get exactly 0), symmetrised exactly;
    - density from the running sum (CumSum) of the k smallest squared distances;
    - density ties: the lower slot counts as denser; gamma ties: the lower slot
      becomes the centre (TopK puts the lower index first); equidistant centres:
      the lower slot wins (ArgMin returns the first minimum);
    - the merge as one weighted one-hot MatMul over the top M_max ranked slots
      only: weight beta (1 without members) for the centre, (1 - beta) / members
      for each member.
    """
    f32 = TensorProto.FLOAT
    g = _Nodes("dpc_", opset)
    x, valid, num_clusters = "tokens", "valid", "num_clusters"  # (G, n, D), (G, n), (G,)
    k_nn = g.attr_scalar("k_nn", AttributeProto.INT)
    beta = g.attr_scalar("beta", AttributeProto.FLOAT)
    zero_f, one_f = g.scalar(0.0, np.float32), g.scalar(1.0, np.float32)
    one = g.scalar(1, np.int64)
    inf = g.scalar(np.inf, np.float32)

    slots1 = g.dim(x, 1)  # (1,) n
    slots = g.scalar_of(slots1)
    gn_shape = g.op("Shape", valid)  # (2,) [G, n]
    hidden = g.cast(g.scalar_of(g.dim(x, 2)), f32)  # () D
    weights_valid = g.cast(valid, f32)  # (G, n)

    # d_ij^2 = |x_i - x_j|^2 / D of the group-centred tokens, via the Gram matrix.
    count = g.op("Max", g.reduce("ReduceSum", weights_valid, (1,), keepdims=1), one_f)  # (G, 1)
    group_mean = g.op("Div", g.op("MatMul", g.unsqueeze(weights_valid, 1), x), g.unsqueeze(count, 2))  # (G, 1, D)
    centred = g.op("Sub", x, group_mean)  # (G, n, D)
    gram = g.op("MatMul", centred, g.op("Transpose", centred, perm=[0, 2, 1]))  # (G, n, n)
    eye = g.cast(g.op("EyeLike", g.op("ConstantOfShape", g.op("Concat", slots1, slots1, axis=0), value=_tensor(0.0, np.float32))), TensorProto.BOOL)  # (n, n)
    sq = g.reduce("ReduceSum", g.op("Where", eye, gram, zero_f), (-1,), keepdims=1)  # (G, n, 1) Gram diagonal
    # (-2 g_ij + |c_i|^2) + |c_j|^2 in the reference's order, so both round alike.
    d2 = g.op("Add", g.op("Add", g.op("Mul", gram, g.scalar(-2.0, np.float32)), sq), g.op("Transpose", sq, perm=[0, 2, 1]))
    d2 = g.op("Max", d2, zero_f)  # rounding can go below 0
    d2 = g.op("Mul", g.op("Add", d2, g.op("Transpose", d2, perm=[0, 2, 1])), g.op("Div", g.scalar(0.5, np.float32), hidden))
    d2 = g.op("Where", eye, zero_f, d2)  # (G, n, n) exactly symmetric, exact zeros on the diagonal
    pair = g.op("And", g.unsqueeze(valid, 2), g.unsqueeze(valid, 1))  # (G, n, n) both slots hold tokens

    # rho_i = exp(-mean of the k smallest d_ij^2 over valid j, i included), k = max(min(k_nn, M), 1).
    k_group = g.op("Max", g.op("Min", num_clusters, k_nn), one)  # (G,)
    k_top1 = g.op("Min", g.op("Reshape", k_nn, g.i64(1)), slots1)  # (1,) k <= M <= valid count <= n
    far = g.op("Where", g.unsqueeze(valid, 1), d2, inf)  # (G, n, n) invalid columns never among the nearest
    near, _ = g.op("TopK", far, k_top1, axis=-1, largest=0, sorted=1, n_out=2)  # (G, n, k_top) ascending
    running = g.op("CumSum", near, g.scalar(-1, np.int64))  # (G, n, k_top)
    kth = g.op("Expand", g.unsqueeze(g.op("Sub", k_group, one), 1, 2), g.op("Concat", gn_shape, g.i64(1), axis=0))  # (G, n, 1)
    knn_sum = g.op("Squeeze", g.op("GatherElements", running, kth, axis=2), g.i64(2))  # (G, n)
    rho = g.op("Exp", g.op("Neg", g.op("Div", knn_sum, g.unsqueeze(g.cast(k_group, f32), 1))))  # (G, n)

    # delta_i^2: nearest denser valid token (density ties: the lower slot is denser);
    # the group's largest valid d^2 when no token is denser.
    rho_j, rho_i = g.unsqueeze(rho, 1), g.unsqueeze(rho, 2)  # (G, 1, n), (G, n, 1)
    slot_ids = g.arange(slots)  # (n,)
    lower = g.op("Less", g.unsqueeze(slot_ids, 0), g.unsqueeze(slot_ids, 1))  # (n, n) [i, j]: j < i
    denser = g.op("Or", g.op("Greater", rho_j, rho_i), g.op("And", g.op("Equal", rho_j, rho_i), lower))
    denser = g.op("And", denser, g.unsqueeze(valid, 1))  # (G, n, n) [g, i, j]
    delta2 = g.reduce("ReduceMin", g.op("Where", denser, d2, inf), (2,), keepdims=0)  # (G, n)
    d2_max = g.reduce("ReduceMax", g.op("Where", pair, d2, g.scalar(-np.inf, np.float32)), (1, 2), keepdims=0)  # (G,)
    delta2 = g.op("Where", g.op("IsInf", delta2), g.unsqueeze(d2_max, 1), delta2)
    gamma = g.op("Where", valid, g.op("Mul", rho, g.op("Sqrt", delta2)), g.scalar(-1.0, np.float32))  # (G, n)

    # Centres: the top-M slots by gamma (TopK: the lower slot first among equal gammas).
    _, order = g.op("TopK", gamma, slots1, axis=1, largest=1, sorted=1, n_out=2)  # (G, n) slots by rank
    slot_grid = g.op("Expand", g.unsqueeze(slot_ids, 0), gn_shape)  # (G, n)
    rank = g.op("ScatterElements", g.op("ConstantOfShape", gn_shape, value=_tensor(0, np.int64)), order, slot_grid, axis=1)
    is_centre = g.op("And", valid, g.op("Less", rank, g.unsqueeze(num_clusters, 1)))  # (G, n)

    # Assignment: nearest centre by d^2, the lower slot among equal distances; centres keep themselves.
    to_centre = g.op("Where", g.unsqueeze(is_centre, 1), d2, inf)  # (G, n, n) [g, i, c]
    nearest = g.op("ArgMin", to_centre, axis=2, keepdims=0)  # (G, n)
    assignment = g.op("Where", is_centre, slot_grid, nearest)
    assigned = g.op("And", valid, g.unsqueeze(g.op("Greater", num_clusters, g.scalar(0, np.int64)), 1))  # (G, n)
    assignment = g.op("Where", assigned, assignment, g.scalar(-1, np.int64))  # (G, n)

    # Merge: merged[c] = sum over tokens i joined to c of w_i x_i, w = beta for a centre with
    # members (1 without), (1 - beta) / members for a member.
    member = g.op("And", assigned, g.op("Not", is_centre))  # (G, n)
    safe_assignment = g.op("Where", assigned, assignment, g.scalar(0, np.int64))  # (G, n) a valid index everywhere
    members = g.op(
        "ScatterElements", g.op("ConstantOfShape", gn_shape, value=_tensor(0.0, np.float32)), safe_assignment, g.cast(member, f32),
        axis=1, reduction="add",
    )  # (G, n) members per centre slot
    centre_w = g.op("Where", g.op("Greater", members, zero_f), beta, one_f)  # (G, n) an empty cluster keeps x_centre
    member_w = g.op("Div", g.op("Sub", one_f, beta), g.op("Max", g.op("GatherElements", members, safe_assignment, axis=1), one_f))
    w = g.op("Where", is_centre, centre_w, g.op("Where", assigned, member_w, zero_f))  # (G, n)
    # Only the M_max top-ranked slots can be centres: mix those rows alone (M << n), then scatter
    # them to their slots. Rows ranked past a group's M join nobody and stay zero.
    m_max1 = g.reduce("ReduceMax", g.op("Concat", num_clusters, g.i64(0), axis=0), (0,), keepdims=1)  # (1,) 0 if G = 0
    top = g.op("Slice", order, g.i64(0), m_max1, g.i64(1))  # (G, M_max) slots of rank < M_max
    mix = g.op("Where", g.op("Equal", g.unsqueeze(assignment, 1), g.unsqueeze(top, 2)), g.unsqueeze(w, 1), zero_f)  # (G, M_max, n)
    merged_top = g.op("MatMul", mix, x)  # (G, M_max, D)
    top_index = g.op("Expand", g.unsqueeze(top, 2), g.op("Shape", merged_top))  # (G, M_max, D)
    zeros = g.op("ConstantOfShape", g.op("Shape", x), value=_tensor(0.0, np.float32))  # (G, n, D)
    merged = g.op("ScatterElements", zeros, top_index, merged_top, axis=1)  # (G, n, D) zeros at non-centre slots
    return _function(O.DENSITY_PEAK_MERGE_CONTRACT, g, [merged, is_centre, assignment], opset)


# --------------------------------------------------------------------------- single custom ops

# Registry: op name -> builder of its ONNX local function (one per contract in plugins_trt.ops).
FUNCTION_BUILDERS = {
    O.TEMPORAL_SEGMENT: temporal_segment_function,
    O.DENSITY_PEAK_MERGE: density_peak_merge_function,
}

def build_custom_op_model(name: str, opset: int = DEFAULT_OPSET, **attributes) -> onnx.ModelProto:
    """A model holding one ``holitom`` custom node and its local function.

    The ONNX side of a plugin kernel's parity check and benchmark: graph inputs
    and outputs carry the contract's names, dtypes and symbolic dims; the node
    gets ``attributes`` (unset ones take the function's defaults) plus the
    TensorRT plugin attributes.
    """
    contract = O.get_contract(name)
    opset = _check_opset(opset)
    unknown = sorted(set(attributes) - set(contract.attribute_names))
    if unknown:
        raise ConfigError(f"{name} has no attribute(s) {unknown}; its attributes are {contract.attribute_names}.")

    def value_infos(ports):
        return [helper.make_tensor_value_info(p.name, _ONNX_DTYPES[p.dtype], list(p.shape)) for p in ports]

    node = helper.make_node(
        name, contract.input_names, contract.output_names, name=name, domain=contract.domain, **{**_plugin_attrs(), **attributes}
    )
    graph = helper.make_graph([node], f"holitom_{name}", value_infos(contract.inputs), value_infos(contract.outputs))
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(contract.domain, contract.version)],
        functions=[FUNCTION_BUILDERS[name](opset)],
        producer_name="holitom-deploy",
        doc_string=contract.doc,
    )
    onnx.checker.check_model(model, full_check=True)
    return model


# --------------------------------------------------------------------------- helpers


def _grid(grid) -> tuple[int, int]:
    if isinstance(grid, (int, np.integer)):
        rows = cols = int(grid)
    elif isinstance(grid, (tuple, list)) and len(grid) == 2:
        rows, cols = (int(v) for v in grid)
    else:
        raise ConfigError(f"grid={grid!r} must be an int (side of a square grid) or a (rows, cols) pair.")
    if rows < 1 or cols < 1:
        raise ConfigError(f"grid={grid!r} must have positive sides.")
    return rows, cols


def _check_opset(opset: int) -> int:
    newest = onnx.defs.onnx_opset_version()
    if not isinstance(opset, (int, np.integer)) or not MIN_OPSET <= int(opset) <= newest:
        raise ConfigError(
            f"opset={opset!r} is not supported; the HoliTom graphs need an ONNX opset in {MIN_OPSET}..{newest} "
            f"(default {DEFAULT_OPSET})."
        )
    return int(opset)


def _check_hidden(hidden_size) -> int:
    if not isinstance(hidden_size, (int, np.integer)) or int(hidden_size) < 1:
        raise ConfigError(f"hidden_size={hidden_size!r} must be a positive integer (the LLM width D).")
    return int(hidden_size)


# --------------------------------------------------------------------------- outer merge


def build_outer_merge_model(
    config,
    grid: int | tuple[int, int],
    layout: str,
    hidden_size: int,
    opset: int = DEFAULT_OPSET,
    *,
    image_newline: np.ndarray | None = None,
    metadata: bool = False,
) -> onnx.ModelProto:
    """The HoliTom outer merge (stages I+II) as a self-contained ONNX model.

    Args:
        config: a ``holitom.merge.MergeConfig``; r, tau, beta, the contextual
            share, k_nn and the maximum window are baked into the graph. A
            vanilla config (``retain_ratio=None``) gives a graph that keeps every
            token in order with the layout's newlines (no custom ops).
        grid: the pooled grid of one frame, ``(rows, cols)`` or the side of a
            square one (14 for LLaVA-OneVision, 13 for LLaVA-Video).
        layout: ``"onevision"`` (one newline after all video tokens) or
            ``"llava_video"`` (a newline after every grid row that keeps a token).
        hidden_size: D, the LLM width of the projected features.
        opset: default-domain ONNX opset.
        image_newline: ``(D,)`` the model's newline embedding to bake in as an
            initializer; None makes ``image_newline`` a graph input.
        metadata: also output ``frame_index`` and ``position_index``.

    Returns:
        A model with inputs ``features (frames, P, D)``, ``attention (frames, P)``
        [, ``image_newline (D,)``] and outputs ``merged_tokens (tokens, D)``
        [, ``frame_index (tokens,)``, ``position_index (tokens,)``] (see
        :func:`outer_merge_io`), equal to ``holitom.merge.outer_merge`` and its
        plan's ``frame_index`` / ``position_index``. It passes ``onnx.checker``
        (full check) and runs in ONNX Runtime without any custom-op library.

    The graph does not validate values: the reference raises InputError on
    NaN / Inf features or attention, the graph propagates them (check inputs
    before running it, as the runtime's stage contracts do for shapes).

    Raises:
        ConfigError: an unknown layout, a bad grid / hidden size / opset, or a
            newline of the wrong shape.
    """
    rows, cols = _grid(grid)
    hidden = _check_hidden(hidden_size)
    opset = _check_opset(opset)
    if layout not in LAYOUTS:
        raise ConfigError(f"layout={layout!r} is not supported; use one of {LAYOUTS}.")
    params = _OuterParams.from_config(config)
    newline_input = image_newline is None
    initializers = []
    if not newline_input:
        newline_array = np.asarray(image_newline, dtype=np.float32)
        if newline_array.shape != (hidden,):
            raise ConfigError(f"image_newline has shape {newline_array.shape}; expected ({hidden},) = (hidden_size,).")
        initializers.append(numpy_helper.from_array(newline_array, name="image_newline"))
    spec = outer_merge_io((rows, cols), hidden, newline_input=newline_input, metadata=metadata)

    g = _Nodes("om_", opset)
    placed = _vanilla_placement(g) if params is None else _merge_placement(g, params, rows * cols)
    outputs = _assemble_outputs(g, placed, rows, cols, layout, metadata)
    graph = helper.make_graph(
        g.nodes,
        f"holitom_outer_merge_{layout}",
        [_value_info(t) for t in spec.inputs],
        [_value_info(t) for t in spec.outputs],
        initializer=initializers,
    )
    for declared, value in zip(spec.output_names, outputs):  # bind computed values to the declared names
        graph.node.append(helper.make_node("Identity", [value], [declared], name=f"om_output_{declared}"))
    opsets = [helper.make_opsetid("", opset)]
    functions = []
    if params is not None:
        opsets.append(helper.make_opsetid(O.DOMAIN, O.OP_VERSION))
        functions = [temporal_segment_function(opset), density_peak_merge_function(opset)]
    doc = f"HoliTom outer merge, layout={layout}, grid={rows}x{cols}, D={hidden}, "
    if params is None:
        doc += "vanilla config: every token in order, with the layout's newlines."
    else:
        doc += (
            f"{params.describe()}. Custom ops {O.DOMAIN}::{O.TEMPORAL_SEGMENT} and {O.DOMAIN}::{O.DENSITY_PEAK_MERGE} "
            "are ONNX local functions of standard ops; a TensorRT plugin of the same name may replace them."
        )
    model = helper.make_model(graph, opset_imports=opsets, functions=functions, producer_name="holitom-deploy", doc_string=doc)
    _finish(model, spec)
    return model


def _finish(model: onnx.ModelProto, spec: C.StageSpec) -> None:
    """Validate the built model; a failure here is a bug of this module, reported as ExportError."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:  # pragma: no cover - only on a builder bug
        raise ExportError(f"the {spec.name} graph failed onnx.checker: {exc}") from exc
    check_model_io(model, spec)


@dataclass(frozen=True)
class _OuterParams:
    """The MergeConfig values the outer-merge graph bakes in."""

    retain_ratio: float
    tau: float
    beta: float
    contextual_frac: float
    k_nn: int
    max_window: int  # 0: unbounded (the TemporalSegment attribute's convention)

    @classmethod
    def from_config(cls, config) -> "_OuterParams | None":
        """The baked values of ``config``; None for a vanilla config (no outer merge)."""
        from holitom.merge import MergeConfig  # lazy: holitom.merge imports torch

        if not isinstance(config, MergeConfig):
            raise ConfigError(
                f"build_outer_merge_model needs a holitom.merge.MergeConfig (e.g. get_preset('r15')); "
                f"got {type(config).__name__}."
            )
        if config.retain_ratio is None:
            return None
        return cls(
            retain_ratio=float(config.retain_ratio),
            tau=float(config.tau),
            beta=float(config.beta),
            contextual_frac=float(config.contextual_frac),
            k_nn=int(config.k_nn),
            max_window=0 if config.max_window is None else int(config.max_window),
        )

    def describe(self) -> str:
        window = self.max_window or "unbounded"
        return (
            f"r={self.retain_ratio}, tau={self.tau}, beta={self.beta}, contextual_frac={self.contextual_frac}, "
            f"k_nn={self.k_nn}, max_window={window}"
        )


@dataclass(frozen=True)
class _Placement:
    """Where output tokens sit, as graph value names (see :func:`_assemble_outputs`).

    Every output token owns one *slot* (frame t, position p): a window's static
    cluster sits at (window start, centre position), a kept dynamic token at its
    own (t, p); the two never collide because a position is static or dynamic
    for the whole window.
    """

    keep_dominant: str  # (F, P) bool: dynamic tokens copied from the features
    keep_dynamic: str  # (F, P) bool: keep_dominant plus contextual cluster centres
    keep_static: str | None = None  # (F, P) bool: static cluster centres at their window's first frame
    static_table: str | None = None  # (rows_s, D) merged static tokens
    static_rows: str | None = None  # (F, P) int64 row of static_table for a static centre placed at (t, p)
    context_table: str | None = None  # (rows_c, D) merged contextual tokens
    context_rows: str | None = None  # (F, P) int64 row of context_table for a contextual centre at (t, p)


def _vanilla_placement(g: _Nodes) -> _Placement:
    """Every token kept in place (``retain_ratio=None``)."""
    every = g.op("ConstantOfShape", g.op("Shape", "attention"), value=_tensor(True, np.bool_))  # (F, P)
    return _Placement(keep_dominant=every, keep_dynamic=every)


def _merge_placement(g: _Nodes, params: _OuterParams, positions: int) -> _Placement:
    """Stages I and II: which slots keep a token, and the merged tokens' values."""
    f32, f64, i64, boolean = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64, TensorProto.BOOL
    x, attention = "features", "attention"  # (F, P, D), (F, P)
    zero = g.scalar(0, np.int64)
    num_pos = g.scalar(positions, np.int64)

    # Stage I (custom op): windows and their static positions.
    window_start, window_end, static = g.op(
        O.TEMPORAL_SEGMENT, x, n_out=3, domain=O.DOMAIN, tau=params.tau, max_window=params.max_window, **_plugin_attrs()
    )  # (F,), (F,), (F, P)
    frames = g.scalar_of(g.dim(x, 0))  # () F
    fp_shape = g.op("Shape", attention)  # (2,) [F, P]
    is_start = g.op("Equal", window_start, g.arange(frames))  # (F,)
    multi = g.op("And", is_start, g.op("Greater", window_end, window_start))  # (F,) first frames of windows >= 2 frames
    n_static = g.reduce("ReduceSum", g.cast(static, i64), (1,), keepdims=0)  # (F,) static positions of t's window

    # Stage I step 5, in float64 like the reference's host arithmetic:
    # r' = min(r * N / (N - R_total), 1); every frame after a window's first drops its static positions.
    removed = g.reduce("ReduceSum", g.op("Where", is_start, zero, n_static), None, keepdims=0)  # () R_total
    n_tokens = g.cast(g.op("Mul", frames, num_pos), f64)  # () N
    r_eff = g.op(
        "Min",
        g.op("Div", g.op("Mul", g.scalar(params.retain_ratio, np.float64), n_tokens), g.op("Sub", n_tokens, g.cast(removed, f64))),
        g.scalar(1.0, np.float64),
    )  # () r'

    # Stage II, dynamic tokens: b = ceil(n_dyn * r') per frame; the top round(b * (1 - D_frac)) by attention.
    dynamic = g.op("Not", static)  # (F, P)
    budget = g.cast(g.op("Ceil", g.op("Mul", g.cast(g.op("Sub", num_pos, n_static), f64), r_eff)), i64)  # (F,)
    dominant = g.cast(g.op("Round", g.op("Mul", g.cast(budget, f64), g.scalar(1.0 - params.contextual_frac, np.float64))), i64)
    score = g.op("Where", dynamic, attention, g.scalar(-np.inf, np.float32))  # (F, P) static positions rank last
    _, order = g.op("TopK", score, g.i64(positions), axis=1, largest=1, sorted=1, n_out=2)  # (F, P) ties: lower p first
    ranks = g.op("Expand", g.unsqueeze(g.arange(num_pos), 0), fp_shape)  # (F, P)
    rank = g.op("ScatterElements", g.op("ConstantOfShape", fp_shape, value=_tensor(0, np.int64)), order, ranks, axis=1)
    keep_dominant = g.op("And", dynamic, g.op("Less", rank, g.unsqueeze(dominant, 1)))  # (F, P)

    keep_dynamic, context_table, context_rows = keep_dominant, None, None
    if params.contextual_frac > 0.0:  # known at export: D_frac = 0 builds no contextual clustering
        contextual = g.op("Sub", budget, dominant)  # (F,)
        context_valid = g.op("And", dynamic, g.op("Not", keep_dominant))  # (F, P) dynamic tokens left after the top-k
        context_table, context_rows, context_centre = _cluster_groups(g, params, x, context_valid, contextual)
        keep_dynamic = g.op("Or", keep_dominant, context_centre)  # (F, P)

    # Stage II, static tokens: per window of >= 2 frames, the window mean of its static positions
    # clustered into round(n_st * r') tokens. Windows are compacted with NonZero (W <= F / 2).
    starts = g.op("Squeeze", g.op("NonZero", multi), g.i64(0))  # (W,)
    in_window = g.cast(g.op("Equal", g.unsqueeze(window_start, 0), g.unsqueeze(starts, 1)), f32)  # (W, F)
    # Like the reference, the mean is a sum with per-frame weights 1 / len (one MatMul over frames).
    mean_weights = g.op("Mul", in_window, g.op("Reciprocal", g.reduce("ReduceSum", in_window, (1,), keepdims=1)))  # (W, F)
    window_shape = g.op("Concat", g.dim(starts, 0), g.i64(positions), g.dim(x, 2), axis=0)  # (3,) [W, P, D]
    window_mean = g.op("Reshape", g.op("MatMul", mean_weights, g.op("Reshape", x, g.i64(0, -1))), window_shape)  # (W, P, D)
    window_static = g.op("Gather", static, starts, axis=0)  # (W, P)
    clusters = g.cast(g.op("Round", g.op("Mul", g.cast(g.op("Gather", n_static, starts, axis=0), f64), r_eff)), i64)  # (W,)
    static_table, window_rows, window_centre = _cluster_groups(g, params, window_mean, window_static, clusters)
    # Windows -> their first frames; ScatterND on int64 (bool scatter is not implemented by every runtime).
    at_starts = g.unsqueeze(starts, 1)  # (W, 1)
    zeros_fp = g.op("ConstantOfShape", fp_shape, value=_tensor(0, np.int64))
    keep_static = g.cast(g.op("ScatterND", zeros_fp, at_starts, g.cast(window_centre, i64)), boolean)  # (F, P)
    static_rows = g.op("ScatterND", zeros_fp, at_starts, window_rows)  # (F, P)
    return _Placement(
        keep_dominant=keep_dominant,
        keep_dynamic=keep_dynamic,
        keep_static=keep_static,
        static_table=static_table,
        static_rows=static_rows,
        context_table=context_table,
        context_rows=context_rows,
    )


def _cluster_groups(g: _Nodes, params: _OuterParams, tokens: str, valid: str, clusters: str) -> tuple[str, str, str]:
    """DensityPeakMerge of groups whose valid slots are first packed to the front.

    ``tokens (G, P, D)``, ``valid (G, P)``, ``clusters (G,)``. Packing the valid
    positions (ascending, so every index-based tie rule is unchanged) into
    ``n = max valid count`` slots shrinks the op's O(G n^2 D) work, e.g. to
    (0.6)^2 of it when 60% of the positions are static, and matches the
    reference, which clusters packed groups too.

    Returns ``(table (G * n, D), rows (G, P) int64, centre (G, P) bool)``: the
    merged tokens, the table row of each valid position's slot (0 elsewhere),
    and which positions are cluster centres.
    """
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    counts = g.reduce("ReduceSum", g.cast(valid, i64), (1,), keepdims=0)  # (G,)
    width1 = g.reduce("ReduceMax", g.op("Concat", counts, g.i64(0), axis=0), (0,), keepdims=1)  # (1,) n; 0 if G = 0
    positions1 = g.dim(valid, 1)  # (1,) P
    # Valid positions first, each part ascending (TopK: the lower index first among equal keys).
    _, order = g.op("TopK", g.cast(valid, f32), positions1, axis=1, largest=1, sorted=1, n_out=2)  # (G, P)
    packed_pos = g.op("Slice", order, g.i64(0), width1, g.i64(1))  # (G, n) position of each slot
    groups = g.arange(g.scalar_of(g.dim(valid, 0)))  # (G,)
    flat_d = g.op("Concat", g.i64(-1), g.dim(tokens, 2), axis=0)  # (2,) [-1, D]
    # Gather rows of the flattened tokens (an index per row, not per element as GatherElements needs).
    token_rows = g.op("Add", g.unsqueeze(g.op("Mul", groups, g.scalar_of(positions1)), 1), packed_pos)  # (G, n)
    packed = g.op("Gather", g.op("Reshape", tokens, flat_d), token_rows, axis=0)  # (G, n, D)
    packed_valid = g.op("Less", g.unsqueeze(g.arange(g.scalar_of(width1)), 0), g.unsqueeze(counts, 1))  # (G, n)
    merged, is_centre, _ = g.op(
        O.DENSITY_PEAK_MERGE, packed, packed_valid, clusters, n_out=3, domain=O.DOMAIN,
        k_nn=params.k_nn, beta=params.beta, **_plugin_attrs(),
    )  # (G, n, D), (G, n), (G, n)
    table = g.op("Reshape", merged, flat_d)  # (G * n, D)
    # Unpack: the slot of each position (rank among its group's valid positions), and the centres.
    shape_gp = g.op("Shape", valid)  # (2,) [G, P]
    slot_of = g.op(
        "ScatterElements", g.op("ConstantOfShape", shape_gp, value=_tensor(0, np.int64)), order,
        g.op("Expand", g.unsqueeze(g.arange(g.scalar_of(positions1)), 0), shape_gp), axis=1,
    )  # (G, P) rank of each position in the packing order (< n for valid positions)
    rows = g.op("Add", g.unsqueeze(g.op("Mul", groups, g.scalar_of(width1)), 1), slot_of)  # (G, P)
    # Invalid positions get row 0, so that gathering rows for every output stays in bounds.
    rows = g.op("Where", valid, rows, g.scalar(0, np.int64))
    centre = g.op(
        "ScatterElements", g.op("ConstantOfShape", shape_gp, value=_tensor(0, np.int64)), packed_pos, g.cast(is_centre, i64), axis=1,
    )  # (G, P)
    return table, rows, g.cast(centre, TensorProto.BOOL)


def _assemble_outputs(g: _Nodes, placed: _Placement, rows: int, cols: int, layout: str, metadata: bool) -> list[str]:
    """Order the kept slots per layout, gather their values, add newlines.

    The output order of both layouts is the row-major order of a boolean
    selection tensor, so NonZero yields it without any sort:

    - onevision: ``(F, 2, P)`` = per frame [static slots of the window starting
      there, dynamic slots]; one newline appended after everything;
    - llava_video: ``(F, rows, cols + 1)`` = per frame and grid row the kept
      cells, then a newline cell that is on when the row kept anything.

    Returns the value names of [merged_tokens] (+ [frame_index, position_index] with ``metadata``).
    """
    i64 = TensorProto.INT64
    positions = rows * cols
    x, newline = "features", "image_newline"
    zero, two = g.scalar(0, np.int64), g.scalar(2, np.int64)
    num_pos = g.scalar(positions, np.int64)

    is_static_o = is_newline_o = None
    if layout == "onevision":
        parts = [placed.keep_dynamic] if placed.keep_static is None else [placed.keep_static, placed.keep_dynamic]
        select = g.op("Concat", *(g.unsqueeze(p, 1) for p in parts), axis=1)  # (F, kinds, P)
        index = g.op("NonZero", select)  # (3, N)
        frame_o = g.op("Gather", index, zero, axis=0)  # (N,)
        position_o = g.op("Gather", index, two, axis=0)  # (N,)
        if placed.keep_static is not None:
            is_static_o = g.op("Equal", g.op("Gather", index, g.scalar(1, np.int64), axis=0), zero)  # (N,) kind 0
    else:
        kept = placed.keep_dynamic if placed.keep_static is None else g.op("Or", placed.keep_static, placed.keep_dynamic)
        kept = g.op("Reshape", kept, g.i64(0, rows, cols))  # (F, rows, cols)
        row_used = g.cast(g.reduce("ReduceMax", g.cast(kept, i64), (2,), keepdims=1), TensorProto.BOOL)  # (F, rows, 1)
        index = g.op("NonZero", g.op("Concat", kept, row_used, axis=2))  # (3, N) over (F, rows, cols + 1)
        frame_o = g.op("Gather", index, zero, axis=0)  # (N,)
        col_o = g.op("Gather", index, two, axis=0)
        is_newline_o = g.op("Equal", col_o, g.scalar(cols, np.int64))  # (N,)
        cell = g.op("Add", g.op("Mul", g.op("Gather", index, g.scalar(1, np.int64), axis=0), g.scalar(cols, np.int64)), col_o)
        position_o = g.op("Where", is_newline_o, zero, cell)  # (N,) newlines read slot (t, 0) below, then masked
        if placed.keep_static is not None:
            static_flat = g.op("Reshape", placed.keep_static, g.i64(-1))  # (F * P,)
            flat = g.op("Add", g.op("Mul", frame_o, num_pos), position_o)
            is_static_o = g.op("And", g.op("Not", is_newline_o), g.op("Gather", static_flat, flat, axis=0))

    # Dominant tokens copy features; every other row comes from one table
    # [static clusters (W * P) | contextual clusters (F * P) | newline], the parts that exist.
    flat_slot = g.op("Add", g.op("Mul", frame_o, num_pos), position_o)  # (N,) t * P + p
    # A static slot is never dominant (its position is static in that window), so only newlines need masking.
    from_features = g.op("Gather", g.op("Reshape", placed.keep_dominant, g.i64(-1)), flat_slot, axis=0)  # (N,)
    if is_newline_o is not None:
        from_features = g.op("And", from_features, g.op("Not", is_newline_o))
    flat_d = g.op("Concat", g.i64(-1), g.dim(x, 2), axis=0)  # (2,) [-1, D]
    tables, table_rows = [], zero  # () rows before the next part
    static_row = None
    if placed.static_table is not None:
        tables.append(placed.static_table)
        static_row = g.op("Gather", g.op("Reshape", placed.static_rows, g.i64(-1)), flat_slot, axis=0)  # (N,)
        table_rows = g.scalar_of(g.dim(placed.static_table, 0))
    if placed.context_table is not None:
        tables.append(placed.context_table)
        table_row = g.op("Add", table_rows, g.op("Gather", g.op("Reshape", placed.context_rows, g.i64(-1)), flat_slot, axis=0))
        if is_newline_o is not None:
            newline_row = g.op("Add", table_rows, g.scalar_of(g.dim(placed.context_table, 0)))  # () the last row
            table_row = g.op("Where", is_newline_o, newline_row, table_row)
    else:  # without contextual clusters every non-static, non-dominant row is the newline (the last row)
        table_row = g.op("Expand", table_rows, g.op("Shape", flat_slot))  # (N,)
    tables.append(g.unsqueeze(newline, 0))  # (1, D); also keeps the table non-empty when W = 0
    if static_row is not None:
        table_row = g.op("Where", is_static_o, static_row, table_row)
    table = tables[0] if len(tables) == 1 else g.op("Concat", *tables, axis=0)  # (rows, D)
    tokens = g.op(
        "Where",
        g.unsqueeze(from_features, 1),
        g.op("Gather", g.op("Reshape", x, flat_d), flat_slot, axis=0),
        g.op("Gather", table, table_row, axis=0),
    )  # (N, D)

    if layout == "onevision":  # one newline after all video tokens
        tokens = g.op("Concat", tokens, g.unsqueeze(newline, 0), axis=0)  # (N + 1, D)
    if not metadata:
        return [tokens]
    if layout == "onevision":  # the newline "closes" the last frame
        frame_o = g.op("Concat", frame_o, g.op("Sub", g.dim(x, 0), g.i64(1)), axis=0)  # (N + 1,)
        position_o = g.op("Concat", position_o, g.i64(NEWLINE_POSITION), axis=0)
    else:
        position_o = g.op("Where", is_newline_o, g.scalar(NEWLINE_POSITION, np.int64), position_o)
    return [tokens, frame_o, position_o]


# --------------------------------------------------------------------------- inner merge


def build_inner_merge_model(mode: str, ratio: float, hidden_size: int, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """The HoliTom inner merge (stage III) as an ONNX model of standard ops only.

    Keeps the top ``round(L_v * (1 - ratio))`` visual tokens by ``attn_row``
    (lower index first among equal scores), assigns every dropped token to the
    kept token of highest cosine similarity (lower kept index first among equal
    similarities) and merges:

    - ``"sequential"`` (official): for a kept token j with dropped members
      i_1 < ... < i_m, the running average h_j <- (h_j + h_i) / 2 in ascending
      order, in its closed form h_j / 2^m + sum_k h_{i_k} / 2^(m - k + 1);
    - ``"mean"``: (h_j + sum_k h_{i_k}) / (m + 1).

    Args:
        mode: ``"sequential"`` or ``"mean"``.
        ratio: R in [0, 1), the share of visual tokens merged away.
        hidden_size: D.
        opset: default-domain ONNX opset.

    Returns:
        A model with inputs ``hidden_states (1, S, D)``, ``attn_row (L_v,)``,
        ``position_ids (1, S)``, ``visual_span (2,)`` = [start, end) and outputs
        ``merged_hidden_states (1, S', D)`` and ``merged_position_ids (1, S')``: the
        prefix, the kept visual tokens in ascending order, the suffix; kept
        tokens keep their original position ids (see :func:`inner_merge_io`).
    """
    if mode not in INNER_MODES:
        raise ConfigError(f"mode={mode!r} is not supported; use one of {INNER_MODES}.")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) < 1.0:
        raise ConfigError(f"ratio={ratio!r} must be a number in [0, 1) (the share of visual tokens merged away).")
    hidden = _check_hidden(hidden_size)
    opset = _check_opset(opset)
    spec = inner_merge_io(hidden)

    g = _Nodes("im_", opset)
    outputs = _inner_merge_graph(g, mode, float(ratio))
    graph = helper.make_graph(
        g.nodes,
        f"holitom_inner_merge_{mode}",
        [_value_info(t) for t in spec.inputs],
        [_value_info(t) for t in spec.outputs],
    )
    for declared, value in zip(spec.output_names, outputs):
        graph.node.append(helper.make_node("Identity", [value], [declared], name=f"im_output_{declared}"))
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="holitom-deploy",
        doc_string=f"HoliTom inner merge, mode={mode}, ratio={float(ratio)}, D={hidden}.",
    )
    _finish(model, spec)
    return model


def _inner_merge_graph(g: _Nodes, mode: str, ratio: float) -> list[str]:
    """Nodes of the inner merge; returns the value names of [merged_hidden_states, merged_position_ids].

    Everything is one pass of dense ops over the visual span: TopK for the kept
    set, NonZero for the ascending kept / dropped lists, one MatMul for the
    similarities, a one-hot (L_d, L_k) matrix for the assignment, a reversed
    CumSum over it for each member's rank (the sequential weights) and one
    MatMul for the weighted sums.
    """
    f32, f64, i64 = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64
    hidden_states, scores, position_ids, span = "hidden_states", "attn_row", "position_ids", "visual_span"
    one = g.scalar(1, np.int64)

    h = g.op("Squeeze", hidden_states, g.i64(0))  # (S, D)
    positions = g.op("Squeeze", position_ids, g.i64(0))  # (S,)
    start1, end1 = g.op("Slice", span, g.i64(0), g.i64(1)), g.op("Slice", span, g.i64(1), g.i64(2))  # (1,), (1,)
    visual = g.op("Slice", h, start1, end1, g.i64(0))  # (L_v, D)
    prefix, suffix = g.op("Slice", h, g.i64(0), start1, g.i64(0)), g.op("Slice", h, end1, g.i64(_INT64_MAX), g.i64(0))
    visual_len1 = g.op("Sub", end1, start1)  # (1,) L_v

    # Keep count round(L_v * (1 - R)) in float64, half to even (Python round), and at least one
    # token when L_v >= 1 so that the dropped tokens have somewhere to go.
    keep_count = g.cast(g.op("Round", g.op("Mul", g.cast(visual_len1, f64), g.scalar(1.0 - ratio, np.float64))), i64)  # (1,)
    keep_count = g.op("Max", keep_count, g.op("Min", visual_len1, one))
    _, top = g.op("TopK", scores, keep_count, axis=0, largest=1, sorted=1, n_out=2)  # (L_k,) ties: lower index first
    keep_mask = g.cast(
        g.op("ScatterElements", g.op("ConstantOfShape", visual_len1, value=_tensor(0, np.int64)), top, g.op("Expand", one, g.op("Shape", top)), axis=0),
        TensorProto.BOOL,
    )  # (L_v,)
    kept = g.op("Squeeze", g.op("NonZero", keep_mask), g.i64(0))  # (L_k,) ascending
    dropped = g.op("Squeeze", g.op("NonZero", g.op("Not", keep_mask)), g.i64(0))  # (L_d,) ascending
    kept_h = g.op("Gather", visual, kept, axis=0)  # (L_k, D)
    dropped_h = g.op("Gather", visual, dropped, axis=0)  # (L_d, D)

    # Each dropped token joins the kept token of highest cosine similarity. Scaling a dropped
    # row by its own norm cannot change its argmax, so (like the reference) only kept rows are normalised.
    similarity = g.op("MatMul", dropped_h, g.op("Transpose", _unit_rows(g, kept_h), perm=[1, 0]))  # (L_d, L_k)
    target = g.op("ArgMax", similarity, axis=1, keepdims=1)  # (L_d, 1) first maximum: lower kept index
    kept_ids = g.unsqueeze(g.arange(g.scalar_of(g.op("Shape", kept))), 0)  # (1, L_k)
    joins = g.cast(g.op("Equal", target, kept_ids), f32)  # (L_d, L_k) one-hot
    members = g.reduce("ReduceSum", joins, (0,), keepdims=0)  # (L_k,) m_j

    # merged_j = w_j h_j + sum over members i of w_i h_i
    if mode == "sequential":
        # Member i of j is averaged in after the members before it: w_i = 2^-(members of j at or after i),
        # w_j = 2^-m_j (powers of two: exact, and underflowing to 0 like repeated halving).
        later = g.op("CumSum", joins, g.scalar(0, np.int64), reverse=1)  # (L_d, L_k) [i, j]: members of j with index >= i
        exponent = g.reduce("ReduceSum", g.op("Mul", later, joins), (1,), keepdims=1)  # (L_d, 1) m - k + 1
        half = g.scalar(0.5, np.float32)
        drop_weights = g.op("Mul", joins, g.op("Pow", half, exponent))  # (L_d, L_k)
        kept_weight = g.op("Pow", half, members)  # (L_k,)
    else:
        kept_weight = g.op("Reciprocal", g.op("Add", members, g.scalar(1.0, np.float32)))  # (L_k,) 1 / (m + 1)
        drop_weights = g.op("Mul", joins, g.unsqueeze(kept_weight, 0))  # (L_d, L_k)
    merged = g.op(
        "Add",
        g.op("Mul", kept_h, g.unsqueeze(kept_weight, 1)),
        g.op("MatMul", g.op("Transpose", drop_weights, perm=[1, 0]), dropped_h),
    )  # (L_k, D)

    merged_h = g.op("Concat", prefix, merged, suffix, axis=0)  # (S', D)
    visual_pos = g.op("Slice", positions, start1, end1, g.i64(0))  # (L_v,)
    merged_pos = g.op(
        "Concat",
        g.op("Slice", positions, g.i64(0), start1, g.i64(0)),
        g.op("Gather", visual_pos, kept, axis=0),
        g.op("Slice", positions, end1, g.i64(_INT64_MAX), g.i64(0)),
        axis=0,
    )  # (S',)
    return [g.unsqueeze(merged_h, 0), g.unsqueeze(merged_pos, 0)]


def _unit_rows(g: _Nodes, x: str) -> str:
    """Rows scaled to unit L2 norm (norms clamped at 1e-8 like torch's cosine_similarity)."""
    norm = g.op("Sqrt", g.reduce("ReduceSum", g.op("Mul", x, x), (-1,), keepdims=1))  # (n, 1)
    return g.op("Div", x, g.op("Max", norm, g.scalar(1e-8, np.float32)))


__all__ = [
    "DEFAULT_OPSET",
    "FRAME_INDEX",
    "FUNCTION_BUILDERS",
    "INNER_MODES",
    "LAYOUTS",
    "MIN_OPSET",
    "NEWLINE_POSITION",
    "POSITION_INDEX",
    "build_custom_op_model",
    "build_inner_merge_model",
    "build_outer_merge_model",
    "check_model_io",
    "density_peak_merge_function",
    "function_op_types",
    "inner_merge_io",
    "onnx_op_types",
    "outer_merge_io",
    "temporal_segment_function",
]
