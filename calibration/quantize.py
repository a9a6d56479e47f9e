"""Quantize one exported graph with onnxruntime.quantization; returns what was done, for the manifest.

- Vision encoder: static INT8 in QDQ form. Weights int8, symmetric, per output
  channel; activations int8, symmetric, per tensor, ranges from the calibration
  frames. Q/DQ sit on the inputs of MatMul / Conv / Gemm only: the placement
  TensorRT's explicit quantization builds INT8 kernels from (its int8 Q/DQ must be
  symmetric, zero point 0), so the same file is the input for an INT8 engine.
  MatMul and Gemm outputs stay float (:data:`_FLOAT_OUTPUT_OPS`).
- Decoder graphs: weight-only INT8 / INT4, block-wise symmetric (onnxruntime's
  MatMulNBits: each MatMul with a constant weight becomes one contrib node that
  dequantizes a block at a time). Activations and KV caches stay float32.
"""

from __future__ import annotations

from pathlib import Path

from holitom.errors import ExportError, MissingDependencyError

from holitom.calibration.config import INT4, INT8, METHODS
from holitom.calibration.graphs import QUANTIZED_OPS, score_path_nodes

# Weight and activation symmetry come from their types (ACTIVATIONS below: TensorRT reads only zero-point-0 int8 Q/DQ).
_QDQ_OPTIONS = {
    # A Q/DQ pair per consumer: onnxruntime fuses a DQ into its MatMul (one integer kernel) only when
    # the DQ feeds that MatMul alone (q/k/v read one tensor), and a reader outside the quantized ops
    # (the attention-score means) keeps the float tensor (measured 1.26x against 1.11x shared, 4 frames, so400m width).
    "DedicatedQDQPair": True,
    # One batch (clip) per collection pass, folded into the ranges / histograms at once: the
    # histogram calibrators otherwise keep every quantized input of every clip, and one clip's
    # (F, H, N, N) attention probabilities alone are 272 MB per layer at SigLIP-so400m's width.
    "CalibStridedMinMax": 1,
}
_BITS = {INT8: 8, INT4: 4}
# Ops whose outputs get no Q/DQ. A MatMul whose output is quantized too becomes onnxruntime's QLinearMatMul, whose
# int8 result is dequantized again for the float bias Add / LayerNorm / GELU that follow, and the attention's
# Softmax between two such MatMuls becomes QLinearSoftmax; with float outputs each MatMul becomes one
# MatMulIntegerToFloat and the Softmax stays float. Measured (scripts/profile_vision_int8.py, so400m width, 4 layers,
# 4 frames, AVX-512 VNNI CPU): int8 vision 905 -> 730 ms against 1973 / 1888 ms float32 (2.18x -> 2.58x), features
# cosine 0.99893 -> 0.99910. The patch Conv keeps its output Q/DQ: onnxruntime has no integer Conv with a float
# output, so without it the Conv would run float.
_FLOAT_OUTPUT_OPS = ["MatMul", "Gemm"]


def _quantization():
    try:
        import onnxruntime.quantization as q
    except ImportError as exc:  # pragma: no cover - onnxruntime is a dependency
        raise MissingDependencyError("onnxruntime", "quantizing an export") from exc
    return q


# Activation types: int8 symmetric (TensorRT reads only zero-point-0 int8) or uint8 asymmetric
# (onnxruntime's fast U8S8 kernels on x86 CPUs without VNNI; not an input for TensorRT).
ACTIVATIONS = {"int8": ("QInt8", True), "uint8": ("QUInt8", False)}


# Graph forms: "qdq" (Q/DQ pairs around float ops: TensorRT's explicit quantization, onnxruntime fuses them) or
# "qoperator" (onnxruntime's own integer ops, QLinearMatMul / QLinearConv: CPU-only, no TensorRT input).
FORMATS = {"qdq": "QDQ", "qoperator": "QOperator"}


def quantize_vision(
    src: Path,
    dst: Path,
    reader,
    method: str,
    keep_scores_float: bool,
    activations: str = "int8",
    *,
    fmt: str = "qdq",
    weights: str = "int8",
    per_channel: bool = True,
    reduce_range: bool = False,
    quantize_outputs: bool = False,
) -> dict:
    """Static INT8 of the vision graph at ``src`` into ``dst``; ``reader`` yields ``{"pixel_values": (F, 3, H, W)}``.

    ``keep_scores_float`` leaves the last layer's attention-probability MatMuls (the
    input of HoliTom's top-k) in float32 (:func:`calibration.graphs.score_path_nodes`).
    ``fmt`` (:data:`FORMATS`), ``weights`` (:data:`ACTIVATIONS`' types: uint8 is asymmetric, no TensorRT input),
    ``per_channel`` weights, ``reduce_range`` (7-bit weights, for
    the U8S8 kernels of CPUs without VNNI) and ``quantize_outputs`` (Q/DQ on MatMul outputs as well, the placement
    before :data:`_FLOAT_OUTPUT_OPS`) are the variants ``scripts/profile_vision_int8.py`` measures.
    """
    import onnx

    q = _quantization()
    model = onnx.load(str(src), load_external_data=False)
    excluded = score_path_nodes(model) if keep_scores_float else []
    targets = [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS and n.name not in excluded]
    del model
    q.quantize_static(
        str(src),
        str(dst),
        reader,
        quant_format=getattr(q.QuantFormat, FORMATS[fmt]),
        op_types_to_quantize=list(QUANTIZED_OPS),
        per_channel=per_channel,
        reduce_range=reduce_range,
        activation_type=getattr(q.QuantType, ACTIVATIONS[activations][0]),
        weight_type=getattr(q.QuantType, ACTIVATIONS[weights][0]),
        nodes_to_exclude=excluded,
        calibrate_method=getattr(q.CalibrationMethod, METHODS[method]),
        extra_options={
            **_QDQ_OPTIONS,
            "ActivationSymmetric": ACTIVATIONS[activations][1],
            "WeightSymmetric": ACTIVATIONS[weights][1],
            "OpTypesToExcludeOutputQuantization": [] if quantize_outputs else _FLOAT_OUTPUT_OPS,
        },
        use_external_data_format=False,
    )
    if reader.batches == 0:
        raise ExportError("the calibration produced no batch of frames; check the calibration videos.")
    return {
        "precision": INT8,
        "format": FORMATS[fmt],
        "weights": f"{weights}{' (7 bits)' if reduce_range else ''} {'symmetric' if ACTIVATIONS[weights][1] else 'asymmetric'} per {'output channel' if per_channel else 'tensor'}",
        "activations": f"{activations} {'symmetric' if ACTIVATIONS[activations][1] else 'asymmetric'} per tensor",
        "float_outputs": [] if quantize_outputs else _FLOAT_OUTPUT_OPS,
        "tensorrt_ready": activations == weights == "int8" and fmt == "qdq",
        "calibration_method": method,
        "op_types": list(QUANTIZED_OPS),
        "quantized_nodes": len(targets),
        "float32_nodes": excluded,
    }


def quantize_weights(src: Path, dst: Path, precision: str, block_size: int) -> dict:
    """Weight-only ``precision`` (int8 / int4) MatMulNBits of the graph at ``src`` into ``dst``."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from holitom.export.onnx_io import save_model

    model = onnx.load(str(src))
    matmuls = sum(n.op_type == "MatMul" for n in model.graph.node)
    # The quantizer rewrites the proto it is given (nothing else holds this one).
    quantizer = MatMulNBitsQuantizer(model, bits=_BITS[precision], block_size=block_size, is_symmetric=True)
    quantizer.process()
    result = quantizer.model.model
    converted = sum(n.op_type == "MatMulNBits" for n in result.graph.node)
    if converted == 0:
        raise ExportError(f"{Path(src).name} has no MatMul with a constant weight, so weight-only {precision} changes nothing; keep it float32.")
    save_model(result, dst)
    return {
        "precision": precision,
        "format": "MatMulNBits",
        "weights": f"{precision} symmetric, blocks of {block_size} along the input dimension",
        "activations": "float32",
        "quantized_nodes": converted,
        "float32_matmuls": matmuls - converted,  # activation x activation products (attention)
    }
