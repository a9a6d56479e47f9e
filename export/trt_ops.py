"""Static check: can TensorRT 10.3's ONNX parser (JetPack 6) read an export, op by op?

TensorRT 10.3 has neither Python plugins nor the parser's plugin-over-local-function
swap, so there the HoliTom ops run as their ONNX local functions' bodies. This
check walks every exported graph, its Loop/If bodies and its local functions, and
compares each operator against TensorRT 10.3's supported-operator list,
transcribed with its source into ``tensorrt_10_3_onnx_operators.json``.

Beyond membership it checks the list's restrictions that can be decided from the
file alone (:data:`RULES`, each grounded in the list's text and, for Loop, in
onnx-tensorrt's Loop importer: a scan output takes the trip count as its length, so
only a Loop without trip count has scan outputs of unknown length). Restrictions
that depend on shapes or values known only to TensorRT's builder (EyeLike's static
input, TopK's K below 3840 when K is computed) are reported as notes to review.

    holitom check-ops EXPORT_DIR
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

TABLE_FILE = Path(__file__).with_name("tensorrt_10_3_onnx_operators.json")
TOPK_MAX_K = 3840  # "K input must be less than 3840"
RESIZE_MODES = ("nearest", "linear")
RESIZE_COORDINATES = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners")
# Input index that the list says "must be an initializer" (constant at parse time), per operator.
CONSTANT_INPUTS = {
    **{op: (1, "axes") for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
                                  "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare")},
    "Squeeze": (1, "axes"),
    "Unsqueeze": (1, "axes"),
    "CumSum": (1, "axis"),
    "Pad": (3, "axes"),
}


@dataclass(frozen=True)
class OperatorTable:
    tensorrt: str
    source: dict
    opset_range: tuple[int, int]
    operators: dict[str, dict]

    @classmethod
    def load(cls, path: Path = TABLE_FILE) -> "OperatorTable":
        data = json.loads(Path(path).read_text())
        return cls(str(data["tensorrt"]), data["source"], tuple(data["opset_range"]), data["operators"])

    def supported(self, op_type: str) -> bool:
        return bool(self.operators.get(op_type, {}).get("supported", False))


@dataclass
class GraphReport:
    file: str
    ops: set[str] = field(default_factory=set)  # "domain::op" or "op" (default domain), every scope
    unsupported: set[str] = field(default_factory=set)
    violations: list[str] = field(default_factory=list)
    notes: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.unsupported and not self.violations


def _attr(node, name, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            # A function body's reference to the function's attribute: fixed when the parser instantiates it.
            return None if a.ref_attr_name else onnx.helper.get_attribute_value(a)
    return default


def _loop(node, constants) -> str | None:
    has_scan_outputs = len(node.output) > len(node.input) - 2  # inputs: M, cond, states; outputs: states, scans
    if has_scan_outputs and (not node.input or not node.input[0]):
        return "Loop has scan outputs but no trip count: their length would be dynamic"
    return None


def _topk(node, constants) -> str | None:
    if int(_attr(node, "sorted", 1)) != 1:
        return "TopK with sorted=0"
    k = constants.get(node.input[1]) if len(node.input) > 1 else None
    if k is not None and k.size and int(k.reshape(-1)[0]) >= TOPK_MAX_K:
        return f"TopK with K={int(k.reshape(-1)[0])} >= {TOPK_MAX_K}"
    return None


def _scatter_nd(node, constants) -> str | None:
    reduction = _attr(node, "reduction", b"none")
    reduction = reduction.decode() if isinstance(reduction, bytes) else reduction
    return None if reduction == "none" else f"ScatterND with reduction={reduction}"


def _resize(node, constants) -> str | None:
    def text(name, default):
        value = _attr(node, name, default)
        return value.decode() if isinstance(value, bytes) else value

    mode, coordinates = text("mode", "nearest"), text("coordinate_transformation_mode", "half_pixel")
    if mode not in RESIZE_MODES or coordinates not in RESIZE_COORDINATES or int(_attr(node, "antialias", 0)):
        return f"Resize with mode={mode}, coordinate_transformation_mode={coordinates}, antialias={_attr(node, 'antialias', 0)}"
    return None


def _layer_norm(node, constants) -> str | None:
    return "LayerNormalization with its Mean/InvStdDev outputs used" if any(node.output[1:]) else None


def _constant_input(node, constants) -> str | None:
    index, what = CONSTANT_INPUTS[node.op_type]
    if len(node.input) > index and node.input[index] and node.input[index] not in constants:
        return f"{node.op_type} whose '{what}' input ({node.input[index]}) is computed, not an initializer or Constant"
    return None


def _constant(node, constants) -> str | None:
    bad = [a.name for a in node.attribute if a.name in ("sparse_value", "value_string", "value_strings")]
    return f"Constant with attribute {bad[0]}" if bad else None


RULES: dict[str, Callable] = {
    "Constant": _constant,
    "Loop": _loop,
    "TopK": _topk,
    "ScatterND": _scatter_nd,
    "Resize": _resize,
    "LayerNormalization": _layer_norm,
    **{op: _constant_input for op in CONSTANT_INPUTS},
}
# The part of each listed restriction that RULES decide; what remains of a used op's restriction is a note.
CHECKED = {
    "Loop": "Scan output length cannot be dynamic.",
    "TopK": "`sorted` must be 1.",
    **{op: None for op in ("Constant", "ScatterND", "Resize", "LayerNormalization", *CONSTANT_INPUTS)},  # None: all of it
}


def _remaining(op_type: str, restriction: str) -> str:
    if op_type not in CHECKED:
        return restriction.strip()
    handled = CHECKED[op_type]
    return "" if handled is None else restriction.replace(handled, "").strip()


def _scope_constants(nodes, initializers, outer: dict) -> dict:
    """Names fixed at parse time in this scope -> value (None when it is a function attribute reference)."""
    import numpy as np
    from onnx import numpy_helper

    constants = dict(outer)
    constants.update({init.name: numpy_helper.to_array(init) for init in initializers})
    for node in nodes:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            value = next((_attr(node, a.name) for a in node.attribute), None)
            constants[node.output[0]] = numpy_helper.to_array(value) if hasattr(value, "dims") else (None if value is None else np.asarray(value))
    return constants


def check_model(model, table: OperatorTable, file: str = "") -> GraphReport:
    """Every operator of ``model`` (main graph, subgraphs, local functions) against ``table``."""
    import onnx

    report = GraphReport(file)
    functions = {(f.domain, f.name) for f in model.functions}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    lo, hi = table.opset_range
    if opset is not None and not lo <= opset <= hi:
        report.violations.append(f"default-domain opset {opset} is outside TensorRT {table.tensorrt}'s range {lo}..{hi}")

    def walk(nodes, initializers, outer, scope):
        constants = _scope_constants(nodes, initializers, outer)
        for node in nodes:
            domain = node.domain if node.domain not in ("", "ai.onnx") else ""
            name = f"{domain}::{node.op_type}" if domain else node.op_type
            report.ops.add(name)
            if domain:
                if (node.domain, node.op_type) not in functions:
                    report.unsupported.add(name)  # neither a standard op nor a local function (a plugin only)
                continue
            if not table.supported(node.op_type):
                report.unsupported.add(name)
                continue
            rule = RULES.get(node.op_type)
            problem = rule(node, constants) if rule else None
            if problem:
                report.violations.append(f"{scope}: {problem} (node '{node.name}')")
            remaining = _remaining(node.op_type, table.operators[node.op_type].get("restrictions", ""))
            if remaining:
                report.notes.add(f"{node.op_type}: {remaining}")
            for a in node.attribute:
                subgraphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
                for g in subgraphs:
                    walk(g.node, g.initializer, constants, f"{scope}/{node.op_type}")

    walk(model.graph.node, model.graph.initializer, {}, "main graph")
    for f in model.functions:
        walk(f.node, [], {}, f"function {f.domain}::{f.name}")
    return report


def check_export(folder: str | Path, table: OperatorTable | None = None) -> list[GraphReport]:
    """One report per ONNX graph named in the export's manifest."""
    import onnx

    from holitom.export.engines import graph_jobs
    from holitom.export.manifest import read_manifest

    folder = Path(folder)
    table = table or OperatorTable.load()
    manifest = read_manifest(folder)
    return [check_model(onnx.load(str(folder / job.onnx_file), load_external_data=False), table, job.onnx_file) for job in graph_jobs(manifest)]


def format_reports(reports: list[GraphReport], table: OperatorTable) -> str:
    lines = [f"TensorRT {table.tensorrt} ONNX operator check (list: {table.source['file']})"]
    for r in reports:
        status = "ok" if r.ok else "NOT SUPPORTED"
        lines.append(f"  {r.file}: {status}, {len(r.ops)} operator types")
        lines += [f"    unsupported operator: {op}" for op in sorted(r.unsupported)]
        lines += [f"    violates: {v}" for v in r.violations]
    notes = sorted(set().union(*(r.notes for r in reports))) if reports else []
    if notes:
        lines.append("  restrictions to review (not decidable from the file):")
        lines += [f"    {n}" for n in notes]
    return "\n".join(lines)
