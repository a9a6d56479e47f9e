"""Helpers around ONNX files: declare I/O per the stage contract, check it, save with sizes."""

from __future__ import annotations

import math
from pathlib import Path

from holitom.contracts import StageSpec
from holitom.errors import ExportError, MissingDependencyError

# Above this, weights go to an external-data file next to the graph (protobuf's 2 GiB limit).
EXTERNAL_DATA_THRESHOLD = 1_800_000_000

_ONNX_DTYPES = {1: "float32", 7: "int64", 10: "float16", 16: "bfloat16", 9: "bool", 6: "int32"}


def import_onnx():
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover
        raise MissingDependencyError("onnx", "exporting to ONNX") from exc
    return onnx


def _value_infos(model, which: str):
    return list(model.graph.input if which == "inputs" else model.graph.output)


def name_dynamic_dims(model, spec: StageSpec) -> None:
    """Give every dynamic dimension of the graph's inputs/outputs its contract name (in place)."""
    for which, tensors in (("inputs", spec.inputs), ("outputs", spec.outputs)):
        by_name = {t.name: t for t in tensors}
        for vi in _value_infos(model, which):
            t = by_name.get(vi.name)
            if t is None:
                continue
            dims = vi.type.tensor_type.shape.dim
            if len(dims) != len(t.shape):
                continue  # reported by check_graph_io
            for dim, want in zip(dims, t.shape):
                if isinstance(want, str):
                    dim.ClearField("dim_value")
                    dim.dim_param = want


def graph_io(model) -> dict[str, list[tuple[str, str, tuple]]]:
    """``{"inputs": [(name, dtype, shape)], "outputs": [...]}`` as written in the file."""

    def describe(vi):
        tt = vi.type.tensor_type
        shape = tuple(d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else "?") for d in tt.shape.dim)
        return vi.name, _ONNX_DTYPES.get(tt.elem_type, str(tt.elem_type)), shape

    # Older IR versions list initializers among the inputs too; those are weights, not inputs.
    weights = {init.name for init in model.graph.initializer}
    inputs = [describe(v) for v in model.graph.input if v.name not in weights]
    return {"inputs": inputs, "outputs": [describe(v) for v in model.graph.output]}


def check_graph_io(model, spec: StageSpec, allow_dropped_inputs: bool = True) -> None:
    """Raise ExportError listing every way the graph's declared I/O differs from the stage contract.

    Inputs that the exporter dropped because the graph does not use them are
    allowed when ``allow_dropped_inputs`` (the runtime feeds only what exists).
    """
    problems = io_mismatches(graph_io(model), spec, allow_dropped_inputs)
    if problems:
        raise ExportError(f"graph '{spec.name}' does not match its declared I/O: " + "; ".join(problems) + ".")


def io_mismatches(io: dict[str, list[tuple[str, str, tuple]]], spec: StageSpec, allow_dropped_inputs: bool = True) -> list[str]:
    """Every way ``io`` (``{"inputs"|"outputs": [(name, dtype, shape)]}``) differs from the stage contract.

    Shared by the exporter (on the ModelProto it wrote) and the onnxruntime
    backend (on the session it loaded), so both hold a file to the same contract.
    """
    problems = []
    for which, tensors in (("inputs", spec.inputs), ("outputs", spec.outputs)):
        got = {name: (dtype, shape) for name, dtype, shape in io[which]}
        order = [name for name, _, _ in io[which]]
        want_names = [t.name for t in tensors]
        extra = [n for n in order if n not in want_names]
        if extra:
            problems.append(f"unexpected {which} {extra}")
        kept = [n for n in want_names if n in got]
        if which == "outputs" or not allow_dropped_inputs:
            missing = [n for n in want_names if n not in got]
            if missing:
                problems.append(f"missing {which} {missing}")
        if [n for n in order if n in want_names] != kept:
            problems.append(f"{which} are out of order: {order}, expected {want_names}")
        for t in tensors:
            if t.name not in got:
                continue
            dtype, shape = got[t.name]
            if dtype != t.dtype:
                problems.append(f"{t.name}: dtype {dtype}, expected {t.dtype}")
            if len(shape) != len(t.shape) or any(a != b for a, b in zip(shape, t.shape)):
                problems.append(f"{t.name}: shape {shape}, expected {t.shape}")
    return problems


def initializer_bytes(model) -> int:
    """Bytes of the graph's initializers, from their types and shapes.

    Not ``model.ByteSize()``: protobuf refuses to size a message above 2 GiB
    (``EncodeError``), which is exactly the case this decides (a 7B decoder).
    """
    onnx = import_onnx()
    return sum(
        onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize * math.prod(t.dims) for t in model.graph.initializer
    )


def save_model(model, path: Path) -> dict[str, int]:
    """Save ``model`` to ``path`` (external data when large); return {file name: bytes} of what was written."""
    onnx = import_onnx()
    path = Path(path)
    data_name = path.name + ".data"
    if initializer_bytes(model) > EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data_name)
    else:
        onnx.save_model(model, str(path))
    files = [path] + ([path.parent / data_name] if (path.parent / data_name).exists() else [])
    return {f.name: f.stat().st_size for f in files}


def check_model_file(path: Path) -> None:
    """onnx.checker on a saved file (by path, so external data and >2 GiB models work)."""
    onnx = import_onnx()
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # onnx raises several unrelated exception types
        raise ExportError(f"onnx.checker rejected {Path(path).name}: {exc}") from exc

