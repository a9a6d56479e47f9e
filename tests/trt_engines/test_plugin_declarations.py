"""The exported custom nodes carry exactly what the TensorRT plugins declare (no tensorrt needed)."""

from __future__ import annotations

import importlib.util

import onnx
import pytest
import torch

from holitom.plugins_trt import ops as O
from holitom.plugins_trt import trt_spec as S

ONNX_ATTRIBUTE_TYPES = {"float": onnx.AttributeProto.FLOAT, "int": onnx.AttributeProto.INT, "string": onnx.AttributeProto.STRING}


def _custom_nodes(model):
    nodes = list(model.graph.node)
    return [n for n in nodes if n.domain == O.DOMAIN]


@pytest.mark.parametrize("preset", ["r10", "r15", "r20", "r25"])
def test_exported_nodes_match_plugin_declarations(default_export, default_manifest, preset):
    model = onnx.load(str(default_export / default_manifest.outer_merge[preset]["graph"]["file"]))
    nodes = _custom_nodes(model)
    assert sorted({n.op_type for n in nodes}) == sorted(O.OP_CONTRACTS)
    assert onnx.helper.make_opsetid(O.DOMAIN, O.OP_VERSION) in model.opset_import
    functions = {(f.domain, f.name): f for f in model.functions}
    for node in nodes:
        contract = O.get_contract(node.op_type)
        attrs = {a.name: a for a in node.attribute}
        assert S.plugin_id(contract) == f"{onnx.helper.get_attribute_value(attrs[O.PLUGIN_NAMESPACE_ATTR]).decode()}::{node.op_type}"
        assert onnx.helper.get_attribute_value(attrs[O.PLUGIN_VERSION_ATTR]).decode() == str(contract.version)
        assert sorted(attrs) == sorted(contract.attribute_names)
        for spec in S.plugin_attributes(contract):  # what the plugin creator reads from the node
            assert attrs[spec.name].type == ONNX_ATTRIBUTE_TYPES[spec.type], spec.name
        assert (len(node.input), len(node.output)) == (len(contract.inputs), len(contract.outputs))
        body = functions[(node.domain, node.op_type)]  # what TensorRT < 10.7 and onnxruntime run instead
        assert (list(body.input), list(body.output)) == (contract.input_names, contract.output_names)


def test_plugin_attributes_leave_out_the_addressing_ones():
    assert [a.name for a in S.plugin_attributes(O.TEMPORAL_SEGMENT_CONTRACT)] == ["tau", "max_window"]
    assert [a.name for a in S.plugin_attributes(O.DENSITY_PEAK_MERGE_CONTRACT)] == ["k_nn", "beta"]


def test_shape_rule_matches_the_reference_outputs():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(5, 9, 16, generator=g)
    tokens, valid = torch.randn(3, 7, 16, generator=g), torch.rand(3, 7, generator=g) > 0.3
    num_clusters = torch.minimum(valid.sum(1), torch.tensor(2))
    cases = {
        O.TEMPORAL_SEGMENT: (features,),
        O.DENSITY_PEAK_MERGE: (tokens, valid, num_clusters),
    }
    for name, inputs in cases.items():
        contract = O.get_contract(name)
        outputs = O.REFERENCE_OPS[name](*inputs)
        assert S.output_shapes(contract, [tuple(t.shape) for t in inputs]) == [tuple(t.shape) for t in outputs]
        assert [S.TRT_DTYPES[p.dtype] for p in contract.outputs] == [str(t.dtype).removeprefix("torch.") for t in outputs]


def test_aot_kernel_interface():
    assert sorted(S.AOT_KERNELS) == sorted(O.OP_CONTRACTS)
    ts = S.AOT_KERNELS[O.TEMPORAL_SEGMENT]
    assert ts.parameters(O.TEMPORAL_SEGMENT_CONTRACT) == (
        "features_ptr", "frames", "positions", "hidden", "window_start_ptr", "window_end_ptr", "static_mask_ptr",
        "TAU", "MAX_WINDOW", "BLOCK_F", "BLOCK_P", "BLOCK_D",
    )
    dpm = S.AOT_KERNELS[O.DENSITY_PEAK_MERGE]
    sig = S.aot_signature(O.DENSITY_PEAK_MERGE_CONTRACT, dpm)
    assert tuple(sig) == dpm.parameters(O.DENSITY_PEAK_MERGE_CONTRACT)
    assert [sig[k] for k in ("tokens_ptr", "valid_ptr", "num_clusters_ptr", "groups", "merged_ptr", "assignment_ptr", "BETA")] == [
        "*fp32", "*i1", "*i64", "i32", "*fp32", "*i64", "constexpr",
    ]
    assert S.aot_constexprs(dpm, {"k_nn": 7, "beta": 0.6}) == {"K_NN": 7, "BETA": 0.6, "BLOCK_N": 256, "BLOCK_D": 32}
    for kernel in S.AOT_KERNELS.values():  # every int32 argument and the grid read a real input dimension
        contract = O.get_contract(kernel.op)
        for name, i, axis in kernel.dims:
            assert contract.inputs[i].shape[axis] == name
        assert kernel.grid is None or kernel.grid in [d for d, _, _ in kernel.dims]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_aot_kernels_declare_the_agreed_parameters():
    from holitom.plugins_trt import kernels

    for kernel in S.AOT_KERNELS.values():
        fn = getattr(kernels, kernel.kernel)
        assert tuple(fn.arg_names) == kernel.parameters(O.get_contract(kernel.op))
        assert fn.constexprs == list(range(len(fn.arg_names) - len(kernel.constexprs) - len(kernel.blocks), len(fn.arg_names)))


def test_output_shape_refs_refuse_a_data_dependent_output():
    contract = O.OpContract(
        name="Bad", doc="", attributes=(),
        inputs=(O.PortSpec("x", "float32", ("n",), ""),),
        outputs=(O.PortSpec("y", "int64", ("m",), ""),),
    )
    with pytest.raises(ValueError, match="no input has"):
        S.output_shape_refs(contract)


def test_registration_with_tensorrt():
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (it cannot be on this project's machines)")
    from holitom.plugins_trt.trt_register import register_plugins

    if tuple(int(p) for p in trt.__version__.split(".")[:2]) < S.MIN_TENSORRT_FOR_PLUGINS:
        pytest.skip(f"TensorRT {trt.__version__} has no AOT Python plugins")
    register_plugins("aot")
    registry = trt.get_plugin_registry()
    for contract in O.OP_CONTRACTS.values():
        assert registry.get_creator(contract.name, str(contract.version), O.PLUGIN_NAMESPACE) is not None
