"""One HoliTom custom node and its local function as a model: the ONNX side of an op's parity check (tests only), and its torch reference run as a backend."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx
import torch
from onnx import helper

from holitom.limits import check_opset
from holitom.errors import ConfigError
from holitom.export import holitom_onnx as H
from holitom.plugins_trt import ops as O


def build_custom_op_model(name: str, opset: int = H.DEFAULT_OPSET, **attributes) -> onnx.ModelProto:
    """A model holding one ``holitom`` custom node and its local function.

    The ONNX side of a plugin kernel's parity check and benchmark: graph inputs
    and outputs carry the contract's names, dtypes and symbolic dims; the node
    gets ``attributes`` (unset ones take the function's defaults) plus the
    TensorRT plugin attributes.
    """
    contract = O.get_contract(name)
    opset = check_opset(opset)
    unknown = sorted(set(attributes) - set(contract.attribute_names))
    if unknown:
        raise ConfigError(f"{name} has no attribute(s) {unknown}; its attributes are {contract.attribute_names}.")

    def value_infos(ports):
        return [helper.make_tensor_value_info(p.name, H._ONNX_DTYPES[p.dtype], list(p.shape)) for p in ports]

    node = helper.make_node(
        name, contract.input_names, contract.output_names, name=name, domain=contract.domain, **{**H._plugin_attrs(), **attributes}
    )
    graph = helper.make_graph([node], f"holitom_{name}", value_infos(contract.inputs), value_infos(contract.outputs))
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(contract.domain, contract.version)],
        functions=[H.FUNCTION_BUILDERS[name](opset)],
        producer_name="holitom-deploy",
        doc_string=contract.doc,
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def run_reference_op(name: str, inputs: Mapping, attributes: Mapping | None = None) -> dict:
    """Run op ``name``'s reference as a backend: ``{input name: tensor}`` in, ``{output name: tensor}`` out.

    Numpy arrays are accepted and converted to torch tensors. Unknown or missing
    inputs and unknown attributes raise KeyError naming what the contract expects.
    """
    contract = O.get_contract(name)
    missing = [n for n in contract.input_names if n not in inputs]
    extra = [n for n in inputs if n not in contract.input_names]
    unknown_attrs = [a for a in (attributes or {}) if a not in contract.attribute_names]
    if missing or extra or unknown_attrs:
        raise KeyError(
            f"{name}: missing inputs {missing}, unexpected inputs {extra}, unknown attributes {unknown_attrs}; "
            f"the contract has inputs {contract.input_names} and attributes {contract.attribute_names}."
        )
    args = [torch.from_numpy(np.asarray(v)) if not isinstance(v, torch.Tensor) else v for v in (inputs[n] for n in contract.input_names)]
    outputs = O.REFERENCE_OPS[name](*args, **dict(attributes or {}))
    return dict(zip(contract.output_names, outputs))
