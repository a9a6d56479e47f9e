"""The HoliTom merge stages as ONNX graphs that ONNX Runtime runs as they are.

- :func:`build_outer_merge_model` (stages I+II) and :func:`build_inner_merge_model`
  (stage III) are exported by ``torch.onnx.export`` from the torch code of
  :mod:`holitom.merge` (:func:`holitom.merge.outer.plan_tensors` /
  ``apply_tensors``, :func:`holitom.merge.inner.plan_tensors` /
  ``apply_tensors``), the same code the torch runtime runs (its outer apply
  aside: ``embedding_bag`` eager, two batched products exported, tested equal):
  budgets, placement, window means, assembly and the layout's newlines exist once.
- The two custom ops (:mod:`holitom.plugins_trt.ops`: ``TemporalSegment``,
  ``DensityPeakMerge``) appear in the outer graph as nodes of the custom domain
  (emitted by :mod:`holitom.merge.custom_ops` during the export). The model
  also carries an ONNX local function of each name whose body uses only
  default-domain ops, so ONNX Runtime (which inlines local functions) runs the
  very same file; a TensorRT build with the plugins registered swaps them in.

Hand-built graph code (``onnx.helper`` through the small node builder
:class:`_Nodes`) remains for exactly these two function bodies, because they
are the ops' own ONNX form and ``torch.onnx.export`` cannot produce them:

- ``TemporalSegment``: the frame DP with its backtrack is a sequential Loop
  whose trip count is the symbolic frame count; torch code of it is a Python
  loop that an export unrolls for one fixed F.
- ``DensityPeakMerge``: its torch reference (:func:`holitom.merge.dpc._dpc_core`)
  takes the per-group cluster counts as host integers (top-k widths), which an
  export would bake in; the function body computes the same decisions with
  data-dependent TopK / masks.

Numerics follow the PyTorch reference decision for decision: ONNX ``TopK``
puts the lower index first among equal values (the exporter's translation of a
stable sort, :mod:`holitom.export.tracing`), ``Round`` rounds half to even like
Python's ``round``, and the budget arithmetic runs in float64.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from holitom import contracts as C
from holitom.limits import DEFAULT_OPSET, check_int, check_opset
from holitom.export.onnx_io import check_graph_io
from holitom.errors import ConfigError, ExportError
from holitom.plugins_trt import ops as O



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
        """``ReduceX`` over ``axes`` (None: all); every reduction takes its axes as an input since opset 18."""
        if axes is None:
            return self.op(op_type, x, keepdims=keepdims)
        return self.op(op_type, x, self.i64(*axes), keepdims=keepdims)

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


def _check_hidden(hidden_size) -> int:
    return check_int(hidden_size, "hidden_size (the LLM width D)", 1)


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
    """The HoliTom outer merge (stages I+II) as a self-contained ONNX model, exported from the torch code.

    ``torch.onnx.export`` traces :class:`holitom.export.wrappers.OuterMerge`,
    i.e. :func:`holitom.merge.outer.plan_tensors` + ``apply_tensors`` (the torch
    runtime's plan and, as two batched products, its linear map); its two custom
    ops become ``holitom::`` nodes and their local functions (:func:`temporal_segment_function`,
    :func:`density_peak_merge_function`) are attached, so ONNX Runtime runs the
    file as it is and a TensorRT build with the plugins swaps them in.

    Args:
        config: a ``holitom.merge.MergeConfig``; r, tau, beta, the contextual
            share, k_nn and the maximum window are baked into the graph. A
            vanilla config (``retain_ratio=None``) gives a graph that keeps every
            token in order with the layout's newlines (no custom ops).
        grid: the pooled grid of one frame, ``(rows, cols)`` or the side of a
            square one (14 for LLaVA-OneVision, 13 for LLaVA-Video).
        layout: a registered layout name (:func:`holitom.merge.layout_names`).
        hidden_size: D, the LLM width of the projected features.
        opset: default-domain ONNX opset.
        image_newline: ``(D,)`` the model's newline embedding to bake in as an
            initializer; None makes ``image_newline`` a graph input.
        metadata: also output ``frame_index`` and ``position_index``.

    Returns:
        A model with inputs ``features (frames, P, D)``, ``attention (frames, P)``
        [, ``image_newline (D,)``] and outputs ``merged_tokens (tokens, D)``
        [, ``frame_index (tokens,)``, ``position_index (tokens,)``] (see
        :func:`outer_merge_io`). It passes ``onnx.checker`` (full check).

    The graph does not validate values: the reference raises InputError on
    NaN / Inf features or attention, the graph propagates them (check inputs
    before running it, as the runtime's stage contracts do for shapes).

    Raises:
        ConfigError: an unknown layout, a bad grid / hidden size / opset, or a
            newline of the wrong shape.
    """
    from holitom.merge import MergeConfig, get_layout

    rows, cols = _grid(grid)
    hidden = _check_hidden(hidden_size)
    opset = check_opset(opset)
    if not isinstance(config, MergeConfig):
        raise ConfigError(
            f"build_outer_merge_model needs a holitom.merge.MergeConfig (e.g. get_preset('r15')); got {type(config).__name__}."
        )
    get_layout(layout)  # a registered layout, else ConfigError naming them
    newline = None
    if image_newline is not None:
        newline = np.array(image_newline, dtype=np.float32)
        if newline.shape != (hidden,):
            raise ConfigError(f"image_newline has shape {newline.shape}; expected ({hidden},) = (hidden_size,).")
    model = onnx.load_from_string(_traced_outer_merge(config, (rows, cols), layout, hidden, opset, metadata))
    if newline is not None:  # the model's weight becomes an initializer: the inputs are then the runtime contract's
        model.graph.input.remove(next(i for i in model.graph.input if i.name == NEWLINE_INPUT))
        model.graph.initializer.append(numpy_helper.from_array(newline, name=NEWLINE_INPUT))
    _finish(model, outer_merge_io((rows, cols), hidden, newline_input=newline is None, metadata=metadata))
    return model


NEWLINE_INPUT = "image_newline"


@functools.lru_cache(maxsize=64)
def _traced_outer_merge(config, grid: tuple[int, int], layout: str, hidden: int, opset: int, metadata: bool) -> bytes:
    """The serialized outer-merge model with ``image_newline`` as an input, traced once per process and setting.

    Tracing takes seconds; an export folder's graphs, a test session or a
    benchmark ask for the same setting again (the newline is baked in afterwards).
    """
    import torch

    from holitom.export.tracing import export_module
    from holitom.export.wrappers import OuterMerge
    from holitom.merge import get_layout

    g = torch.Generator().manual_seed(0)
    frames, positions = 3, grid[0] * grid[1]  # the frame axis is dynamic; any example traces the same graph
    args = (torch.randn(frames, positions, hidden, generator=g), torch.rand(frames, positions, generator=g), torch.zeros(hidden))
    spec = outer_merge_io(grid, hidden, newline_input=True, metadata=metadata)
    model = export_module(OuterMerge(config, grid, get_layout(layout), metadata).eval(), args, spec, opset)
    doc = f"HoliTom outer merge, layout={layout}, grid={grid[0]}x{grid[1]}, D={hidden}, "
    if config.outer_enabled:
        model.functions.extend([temporal_segment_function(opset), density_peak_merge_function(opset)])
        window = config.max_window or "unbounded"
        doc += (
            f"r={config.retain_ratio}, tau={config.tau}, beta={config.beta}, contextual_frac={config.contextual_frac}, "
            f"k_nn={config.k_nn}, max_window={window}. Custom ops {O.DOMAIN}::{O.TEMPORAL_SEGMENT} and "
            f"{O.DOMAIN}::{O.DENSITY_PEAK_MERGE} are ONNX local functions of standard ops; a TensorRT plugin of the "
            "same name may replace them."
        )
    else:
        doc += "vanilla config: every token in order, with the layout's newlines."
    model.doc_string = doc
    model.producer_name = "holitom-deploy"
    return model.SerializeToString()


def _finish(model: onnx.ModelProto, spec: C.StageSpec) -> None:
    """Validate the built model; a failure here is a bug of this module, reported as ExportError."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:  # pragma: no cover - only on a builder bug
        raise ExportError(f"the {spec.name} graph failed onnx.checker: {exc}") from exc
    check_model_io(model, spec)


# --------------------------------------------------------------------------- inner merge


def build_inner_merge_model(mode: str, ratio: float, hidden_size: int, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """The HoliTom inner merge (stage III) as an ONNX model of standard ops, exported from the torch code.

    ``torch.onnx.export`` traces :class:`holitom.export.wrappers.InnerMerge`,
    i.e. :func:`holitom.merge.inner.plan_tensors` + ``apply_tensors``: keep the
    top ``round(L_v * (1 - ratio))`` visual tokens by ``attn_row`` (lower index
    first among equal scores), assign every dropped token to the kept token of
    highest cosine similarity (lower kept index first among ties), merge
    (``"sequential"``: the official running average; ``"mean"``).

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
    from holitom.merge.config import INNER_MODES

    if mode not in INNER_MODES:
        raise ConfigError(f"mode={mode!r} is not supported; use one of {list(INNER_MODES)}.")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) < 1.0:
        raise ConfigError(f"ratio={ratio!r} must be a number in [0, 1) (the share of visual tokens merged away).")
    hidden = _check_hidden(hidden_size)
    opset = check_opset(opset)
    spec = inner_merge_io(hidden)
    model = onnx.load_from_string(_traced_inner_merge(mode, float(ratio), hidden, opset))
    _finish(model, spec)
    return model


@functools.lru_cache(maxsize=16)
def _traced_inner_merge(mode: str, ratio: float, hidden: int, opset: int) -> bytes:
    """The serialized inner-merge model, traced once per process and setting."""
    import torch

    from holitom.export.tracing import export_module
    from holitom.export.wrappers import InnerMerge

    g = torch.Generator().manual_seed(0)
    seq, start, end = 11, 2, 9  # every size distinct: nothing is specialised
    args = (torch.randn(1, seq, hidden, generator=g), torch.rand(end - start, generator=g), torch.arange(seq)[None], torch.tensor([start, end]))
    model = export_module(InnerMerge(ratio, mode).eval(), args, inner_merge_io(hidden), opset)
    model.doc_string = f"HoliTom inner merge, mode={mode}, ratio={ratio}, D={hidden}."
    model.producer_name = "holitom-deploy"
    return model.SerializeToString()


__all__ = [
    "DEFAULT_OPSET",
    "FRAME_INDEX",
    "FUNCTION_BUILDERS",
    "NEWLINE_POSITION",
    "POSITION_INDEX",
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
