"""The TensorRT 10.3 operator-list check: the table, hand-made graphs that must fail, and the default export."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from holitom.export.trt_ops import OperatorTable, check_export, check_model, format_reports

TABLE = OperatorTable.load()


def _model(nodes, initializers=(), functions=(), opset=18, extra_opsets=()):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=list(initializers))
    opsets = [helper.make_opsetid("", opset), *extra_opsets]
    return helper.make_model(graph, opset_imports=opsets, functions=list(functions))


def test_table_records_its_source_and_10_3_changes():
    assert TABLE.tensorrt == "10.3"
    assert "onnx/onnx-tensorrt" in TABLE.source["file"] and len(TABLE.source["commit"]) == 40
    assert TABLE.opset_range == (9, 20)
    assert TABLE.supported("Loop") and TABLE.supported("NonZero") and not TABLE.supported("Unique")
    assert TABLE.operators["Slice"]["restrictions"] == ""  # 10.3: tensor axes for Slice
    assert "initializer" in TABLE.operators["Pad"]["restrictions"]  # lifted only in 10.4
    assert len(TABLE.operators) == 196


def test_supported_graph_passes():
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    report = check_model(_model([helper.make_node("ReduceSum", ["x", "axes"], ["y"])], [axes]), TABLE)
    assert report.ok and report.ops == {"ReduceSum"}


@pytest.mark.parametrize(
    "nodes, initializers, expected",
    [
        ([helper.make_node("Unique", ["x"], ["y"])], [], "unsupported"),
        ([helper.make_node("GroupQueryAttention", ["x"], ["y"], domain="com.microsoft")], [], "unsupported"),
        ([helper.make_node("Shape", ["x"], ["s"]), helper.make_node("ReduceSum", ["x", "s"], ["y"])], [], "computed"),
        ([helper.make_node("TopK", ["x", "k"], ["y", "i"], sorted=0)], [numpy_helper.from_array(np.array([1], np.int64), "k")], "sorted=0"),
        ([helper.make_node("TopK", ["x", "k"], ["y", "i"])], [numpy_helper.from_array(np.array([4000], np.int64), "k")], "K=4000"),
        ([helper.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction="add")], [], "reduction=add"),
        ([helper.make_node("Resize", ["x", "", "s"], ["y"], mode="cubic")], [], "mode=cubic"),
    ],
)
def test_violations_are_found(nodes, initializers, expected):
    report = check_model(_model(nodes, initializers), TABLE)
    assert not report.ok
    text = " ".join([*report.unsupported, *report.violations])
    assert (expected == "unsupported" and report.unsupported) or expected in text


def test_loop_scan_output_without_trip_count():
    body = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["c_out"]), helper.make_node("Identity", ["x"], ["scan"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []), helper.make_tensor_value_info("scan", TensorProto.FLOAT, None)],
    )
    cond = numpy_helper.from_array(np.array(True), "cond")
    trip = numpy_helper.from_array(np.array(3, np.int64), "trip")
    bad = check_model(_model([helper.make_node("Loop", ["", "cond"], ["y"], body=body)], [cond]), TABLE)
    assert any("no trip count" in v for v in bad.violations)
    good = check_model(_model([helper.make_node("Loop", ["trip", "cond"], ["y"], body=body)], [cond, trip]), TABLE)
    assert good.ok and {"Loop", "Identity"} <= good.ops


def test_function_bodies_and_opset_are_checked():
    body = helper.make_function("holitom", "Op", ["a"], ["b"], [helper.make_node("Unique", ["a"], ["b"])], [helper.make_opsetid("", 18)])
    node = helper.make_node("Op", ["x"], ["y"], domain="holitom")
    report = check_model(_model([node], functions=[body], opset=21, extra_opsets=[helper.make_opsetid("holitom", 1)]), TABLE)
    assert report.unsupported == {"Unique"}  # the custom node itself is fine: it has a local function
    assert any("opset 21" in v for v in report.violations)
    without_function = check_model(_model([node], extra_opsets=[helper.make_opsetid("holitom", 1)]), TABLE)
    assert without_function.unsupported == {"holitom::Op"}


def test_default_export_parses_on_tensorrt_10_3(default_export):
    """The documented result: every graph of `holitom export --model default` uses only listed operators."""
    reports = check_export(default_export, TABLE)
    assert len(reports) == 11  # 5 model stages, 5 outer-merge presets, 1 inner merge
    assert all(r.ok for r in reports), format_reports(reports, TABLE)
    merge = next(r for r in reports if r.file == "outer_merge.r15.onnx")
    assert {"Loop", "TopK", "EyeLike", "holitom::TemporalSegment", "holitom::DensityPeakMerge"} <= merge.ops
    notes = set().union(*(r.notes for r in reports))
    assert notes == {
        "EyeLike: `input` must have static dimensions",
        "Loop: The shape of Loop carried dependencies must be the same across all loop iterations.",
        "TopK: `K` input must be less than 3840.",
    }
