"""What the TensorRT plugins of the HoliTom ops are, as data (no tensorrt import).

:mod:`holitom.plugins_trt.trt_register` turns these into ``tensorrt.plugin``
registrations; tests read them without TensorRT. Everything here is derived from
the op contracts in :mod:`holitom.plugins_trt.ops`, so the exporter's nodes, the
plugins and the tests cannot drift apart:

- the plugin id ``"<namespace>::<name>"`` and the attributes the plugin declares
  (the contract's attributes minus the two that only address the plugin);
- the shape rule of every output: each output dimension is the size of an input
  dimension with the same symbolic name. No output of these ops has a
  data-dependent size: the exported graph keeps every data-dependent count (how
  many tokens survive) in its standard-op glue, so no ``trtp.size_tensor`` is needed;
- the ahead-of-time (AOT) kernel interface agreed with the Triton kernels of
  :mod:`holitom.plugins_trt.kernels`: which ``@triton.jit`` function implements an
  op in one launch, its parameters in order, its compile-time constants and its grid.

TensorRT versions (from NVIDIA/TensorRT's CHANGELOG.md):
``tensorrt.plugin`` (quickly deployable Python plugins) from 10.6, the ONNX parser
preferring a registered plugin over a local function of the same name from 10.7,
AOT Python plugins from 10.9. So: plugins and the local-function swap need
TensorRT >= 10.9 (:data:`MIN_TENSORRT_FOR_PLUGINS`). Older TensorRT (JetPack 6 ships
10.3) parses the local functions' standard-op bodies as ordinary layers instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from holitom.plugins_trt.ops import OP_CONTRACTS, PLUGIN_NAMESPACE, PLUGIN_NAMESPACE_ATTR, PLUGIN_VERSION_ATTR, OpContract

MIN_TENSORRT_FOR_PLUGINS = (10, 9)  # tensorrt.plugin with aot_impl; the parser's plugin-over-local-function swap
JETPACK6_TENSORRT = (10, 3)  # no Python plugins: local-function bodies become ordinary layers

# The ONNX parser reads these to find the creator; the plugin itself does not declare them.
ADDRESSING_ATTRIBUTES = (PLUGIN_VERSION_ATTR, PLUGIN_NAMESPACE_ATTR)

# Contract dtype (numpy spelling) -> name of the tensorrt.DataType attribute (trt.float32, ...).
TRT_DTYPES = {"float32": "float32", "float16": "float16", "int64": "int64", "int32": "int32", "bool": "bool"}

# Contract attribute type -> the Python annotation tensorrt.plugin maps to the ONNX attribute type
# (ONNX FLOAT -> float32 plugin field, INT -> int32, STRING -> str).
ATTRIBUTE_TYPES = {"float": float, "int": int, "string": str}


def plugin_id(contract: OpContract) -> str:
    """``"holitom::TemporalSegment"``: the id of ``@trtp.register`` for this op."""
    return f"{PLUGIN_NAMESPACE}::{contract.name}"


def plugin_attributes(contract: OpContract) -> tuple:
    """The contract's attributes that the plugin declares (tau, max_window / k_nn, beta)."""
    return tuple(a for a in contract.attributes if a.name not in ADDRESSING_ATTRIBUTES)


def output_shape_refs(contract: OpContract) -> list[tuple[tuple[int, int], ...]]:
    """For each output, where each of its dimensions comes from: ``(input index, axis)``.

    Raises ValueError if an output dimension is not the size of some input
    dimension (a data-dependent size would need a size tensor, which no op has).
    """
    where: dict[str | int, tuple[int, int]] = {}
    for i, port in enumerate(contract.inputs):
        for axis, dim in enumerate(port.shape):
            where.setdefault(dim, (i, axis))
    refs = []
    for port in contract.outputs:
        missing = [d for d in port.shape if d not in where]
        if missing:
            raise ValueError(f"{contract.name}: output '{port.name}' has dimensions {missing} that no input has.")
        refs.append(tuple(where[d] for d in port.shape))
    return refs


def output_shapes(contract: OpContract, input_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Concrete output shapes for concrete input shapes: the rule the plugin gives TensorRT symbolically."""
    return [tuple(int(input_shapes[i][axis]) for i, axis in refs) for refs in output_shape_refs(contract)]


# --------------------------------------------------------------------------- AOT kernel interface


@dataclass(frozen=True)
class AotKernel:
    """One ``@triton.jit`` function that computes a whole op in one launch (what ``@trtp.aot_impl`` compiles).

    The parameters follow TensorRT's AOT calling convention: the input pointers,
    then int32 scalars (dimension sizes, resolved by TensorRT at run time from
    symbolic shapes), then the output pointers. Attribute values become
    compile-time constants because TensorRT does not serialize an AOT plugin's
    attributes and its extra scalars are integers only (``tau``, ``beta`` are
    floats). ``grid`` names the dimension that gives the number of programs
    (``None``: one program).
    """

    op: str
    kernel: str  # attribute name in holitom.plugins_trt.kernels
    dims: tuple[tuple[str, int, int], ...]  # int32 parameters: (name, input index, axis)
    constexprs: tuple[tuple[str, str], ...]  # (kernel parameter, contract attribute)
    blocks: tuple[tuple[str, int], ...]  # fixed tile sizes the kernel is compiled with
    grid: str | None
    num_warps: int = 4

    def parameters(self, contract: OpContract) -> tuple[str, ...]:
        """The kernel's parameter names in order (what the Triton function must declare)."""
        return (
            *(f"{p.name}_ptr" for p in contract.inputs),
            *(name for name, _, _ in self.dims),
            *(f"{p.name}_ptr" for p in contract.outputs),
            *(name for name, _ in self.constexprs),
            *(name for name, _ in self.blocks),
        )


# Agreed with the kernels' author (issue 14): one program for the whole temporal DP over at most
# BLOCK_F = 64 frames (the optimization profile's maximum), one program per DPC group of at most
# BLOCK_N = 256 slots (the exported graph packs one frame's positions into the slots: 196 or 169).
# Longer inputs would need larger tiles (a recompile); the kernels do not check, as TensorRT launches them.
AOT_KERNELS: dict[str, AotKernel] = {
    "TemporalSegment": AotKernel(
        op="TemporalSegment",
        kernel="temporal_segment_kernel",
        dims=(("frames", 0, 0), ("positions", 0, 1), ("hidden", 0, 2)),
        constexprs=(("TAU", "tau"), ("MAX_WINDOW", "max_window")),
        blocks=(("BLOCK_F", 64), ("BLOCK_P", 64), ("BLOCK_D", 64)),
        grid=None,
        num_warps=8,
    ),
    "DensityPeakMerge": AotKernel(
        op="DensityPeakMerge",
        kernel="density_peak_merge_kernel",
        dims=(("groups", 0, 0), ("slots", 0, 1), ("hidden", 0, 2)),
        constexprs=(("K_NN", "k_nn"), ("BETA", "beta")),
        blocks=(("BLOCK_N", 256), ("BLOCK_D", 32)),
        grid="groups",
        num_warps=8,
    ),
}

# Triton signature types of the contract dtypes (pointer element types).
TRITON_POINTER_TYPES = {"float32": "*fp32", "float16": "*fp16", "bfloat16": "*bf16", "int64": "*i64", "bool": "*i1"}


def aot_signature(contract: OpContract, kernel: AotKernel) -> dict[str, str]:
    """``triton.compiler.ASTSource`` signature: pointer types, ``i32`` scalars, ``constexpr`` constants."""
    sig = {f"{p.name}_ptr": TRITON_POINTER_TYPES[p.dtype] for p in contract.inputs}
    sig.update({name: "i32" for name, _, _ in kernel.dims})
    sig.update({f"{p.name}_ptr": TRITON_POINTER_TYPES[p.dtype] for p in contract.outputs})
    sig.update({name: "constexpr" for name, _ in (*kernel.constexprs, *kernel.blocks)})
    return sig


def aot_constexprs(kernel: AotKernel, attributes: dict) -> dict[str, float | int]:
    """Compile-time constants for given attribute values (plus the fixed tile sizes)."""
    return {**{name: attributes[attr] for name, attr in kernel.constexprs}, **dict(kernel.blocks)}


__all__ = [
    "AOT_KERNELS",
    "ADDRESSING_ATTRIBUTES",
    "MIN_TENSORRT_FOR_PLUGINS",
    "JETPACK6_TENSORRT",
    "AotKernel",
    "aot_constexprs",
    "aot_signature",
    "output_shape_refs",
    "output_shapes",
    "plugin_attributes",
    "plugin_id",
    "OP_CONTRACTS",
]
