"""Where things are in an exported vision graph: the score path HoliTom reads, each layer's output.

The exporter (torch.onnx, dynamo) records every node's module path in its
``pkg.torch.onnx.name_scopes`` metadata; a vision layer is ``model.vision.layers.N``.
Everything here reads the graph only (onnx protos), it changes nothing.
"""

from __future__ import annotations

import ast
import re

from holitom.errors import ExportError

QUANTIZED_OPS = ("MatMul", "Conv", "Gemm")  # TensorRT explicit quantization: Q/DQ on these ops' inputs
SCORES_OUTPUT = "attention"  # the vision contract's per-token attention (holitom.contracts)
_LAYER_SCOPE = re.compile(r"model\.vision\.layers\.(\d+)$")
_NAME_SCOPES = "pkg.torch.onnx.name_scopes"


def _producers(graph) -> dict[str, object]:
    return {out: node for node in graph.node for out in node.output}


def _consumers(graph) -> dict[str, list]:
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def score_path_nodes(model) -> list[str]:
    """Names of the quantizable nodes that compute the last vision layer's attention probabilities.

    From the ``attention`` output, back through the head/query mean to the
    Softmax those probabilities come from; the nodes to keep out of INT8 are the
    ``q k^T`` MatMul that feeds that Softmax (its inputs, q and k, would carry
    Q/DQ), the ``probs @ v`` MatMul that reads the probabilities (a Q/DQ on
    the probabilities is shared by every reader, the score mean included) and
    the score mean itself (a MatMul with a constant row, between the Softmax and
    the output).
    """
    graph = model.graph
    producers, users = _producers(graph), _consumers(graph)
    softmax, frontier, seen = None, [SCORES_OUTPUT], set()
    while frontier and softmax is None:
        name = frontier.pop()
        node = producers.get(name)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type == "Softmax":
            softmax = node
        else:
            frontier.extend(node.input)
    if softmax is None:
        raise ExportError(f"the vision graph has no Softmax behind its '{SCORES_OUTPUT}' output; export it with this toolkit.")
    excluded = [n.name for n in users.get(softmax.output[0], []) if n.op_type in QUANTIZED_OPS]
    # The score mean: quantizable nodes downstream of the Softmax that the output depends on.
    ancestors, frontier = set(), [SCORES_OUTPUT]
    while frontier:
        node = producers.get(frontier.pop())
        if node is not None and node.name not in ancestors:
            ancestors.add(node.name)
            frontier.extend(node.input)
    downstream, frontier = set(), [softmax.output[0]]
    while frontier:
        for node in users.get(frontier.pop(), []):
            if node.name not in downstream:
                downstream.add(node.name)
                frontier.extend(node.output)
    excluded += [n.name for n in graph.node if n.name in ancestors & downstream and n.op_type in QUANTIZED_OPS and n.name not in excluded]
    frontier, seen = [softmax.input[0]], set()
    while frontier:  # Softmax <- Mul(scale) <- MatMul(q, k^T): stop at the first quantizable node on each path
        node = producers.get(frontier.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in QUANTIZED_OPS:
            excluded.append(node.name)
        else:
            frontier.extend(node.input)
    return excluded


def node_scopes(node) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == _NAME_SCOPES:
            try:
                return list(ast.literal_eval(prop.value))
            except (SyntaxError, ValueError):
                return []
    return []


def layer_outputs(model) -> dict[str, str]:
    """``{"layer N": tensor}`` for each vision layer (its last node's output, the residual sum), plus the graph outputs."""
    last: dict[int, str] = {}
    for node in model.graph.node:  # ONNX nodes are in topological order
        for scope in node_scopes(node):
            m = _LAYER_SCOPE.match(scope)
            if m:
                last[int(m.group(1))] = node.output[0]
    names = {f"layer {i}": last[i] for i in sorted(last)}
    names.update({out.name: out.name for out in model.graph.output})
    return names
