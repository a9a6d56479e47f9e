"""export.onnx_io.save_model: when weights go to an external-data file, decided without serialising the model."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from holitom.export import onnx_io  # noqa: E402


def _matmul_model(rows: int, cols: int):
    weight = numpy_helper.from_array(np.arange(rows * cols, dtype=np.float32).reshape(rows, cols) / (rows * cols), "w")
    bias = numpy_helper.from_array(np.ones((cols,), np.float16), "b16")  # unused: counts at 2 bytes per element
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cols])],
        [weight, bias],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_initializer_bytes_counts_types_and_shapes():
    model = _matmul_model(30, 50)
    assert onnx_io.initializer_bytes(model) == 30 * 50 * 4 + 50 * 2


def test_initializer_bytes_does_not_read_the_data():
    # A tensor of 3 GB declared by its dims (its data is external): protobuf could not size the
    # message holding such data (> 2 GiB), the count from types and shapes does not need to.
    big = TensorProto(name="big", data_type=TensorProto.FLOAT, dims=[750_000_000], data_location=TensorProto.EXTERNAL)
    graph = helper.make_graph([], "g", [], [], [big])
    assert onnx_io.initializer_bytes(helper.make_model(graph)) == 3_000_000_000


@pytest.mark.parametrize("threshold, external", [(10**9, False), (1000, True)])
def test_save_model_moves_large_weights_to_one_data_file(tmp_path, monkeypatch, threshold, external):
    monkeypatch.setattr(onnx_io, "EXTERNAL_DATA_THRESHOLD", threshold)
    model = _matmul_model(30, 50)
    weight = numpy_helper.to_array(model.graph.initializer[0])  # (30, 50); saving moves it out of the proto
    sizes = onnx_io.save_model(model, tmp_path / "m.onnx")
    assert sorted(sizes) == (["m.onnx", "m.onnx.data"] if external else ["m.onnx"])
    x = np.linspace(-1, 1, 30, dtype=np.float32)[None]
    (y,) = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(y, x @ weight, rtol=1e-6, atol=1e-6)
