"""Register the HoliTom ops as TensorRT Python plugins (``tensorrt.plugin``, TensorRT >= 10.9).

Imports tensorrt: import this module only where TensorRT is installed (the engine
builder and the tensorrt runtime backend do, through :func:`register_plugins`).

Each op of :mod:`holitom.plugins_trt.ops` becomes the plugin
``holitom::<name>`` (the exported node's domain, op_type, ``plugin_namespace``
and ``plugin_version`` attributes), declaring the attributes of
:func:`holitom.plugins_trt.trt_spec.plugin_attributes`, with:

- ``@trtp.register``: output shapes from input shapes
  (:func:`~holitom.plugins_trt.trt_spec.output_shape_refs`) and the contract's dtypes;
- ``@trtp.impl`` (``mode="jit"``): a Python callback that runs the Triton kernels of
  :mod:`holitom.plugins_trt.kernels` on TensorRT's stream and copies their results
  into TensorRT's output buffers; engines built so need this module registered in the
  process that runs them;
- ``@trtp.aot_impl`` (``mode="aot"``): compiles the op's one-launch Triton kernel
  (:data:`~holitom.plugins_trt.trt_spec.AOT_KERNELS`) to PTX at build time, which
  TensorRT bakes into the engine: such engines run without Python (``trtexec``, C++).

Only one of the two implementations is registered per process, so TensorRT never
has to be told which to prefer. The API follows NVIDIA/TensorRT's
samples/python/quickly_deployable_plugins and the ``tensorrt.plugin`` reference;
nothing here was run (TensorRT cannot be installed on this project's machines).
"""

from __future__ import annotations

from typing import Tuple

import tensorrt as trt
import tensorrt.plugin as trtp

from holitom.errors import BackendError
from holitom.plugins_trt import ops as O
from holitom.plugins_trt import trt_spec as S

MODES = ("aot", "jit")
_registered: str | None = None


def _output_descs(contract: O.OpContract, inputs: tuple) -> tuple:
    """Each output's symbolic shape, built from the input dimensions of the same name."""
    return tuple(
        trtp.from_shape_expr(tuple(inputs[i].shape_expr[axis] for i, axis in refs), dtype=getattr(trt, S.TRT_DTYPES[port.dtype]))
        for port, refs in zip(contract.outputs, S.output_shape_refs(contract))
    )


def _register_shapes() -> None:
    ts, dpm = O.TEMPORAL_SEGMENT_CONTRACT, O.DENSITY_PEAK_MERGE_CONTRACT

    @trtp.register(S.plugin_id(ts))
    def _temporal_segment_desc(
        features: trtp.TensorDesc, tau: float, max_window: int
    ) -> Tuple[trtp.TensorDesc, trtp.TensorDesc, trtp.TensorDesc]:
        return _output_descs(ts, (features,))

    @trtp.register(S.plugin_id(dpm))
    def _density_peak_merge_desc(
        tokens: trtp.TensorDesc, valid: trtp.TensorDesc, num_clusters: trtp.TensorDesc, k_nn: int, beta: float
    ) -> Tuple[trtp.TensorDesc, trtp.TensorDesc, trtp.TensorDesc]:
        return _output_descs(dpm, (tokens, valid, num_clusters))


def _kernels():
    try:
        from holitom.plugins_trt import kernels
    except ImportError as exc:
        raise BackendError(
            f"the TensorRT plugins run the Triton kernels of holitom.plugins_trt.kernels, which could not be imported ({exc}); "
            "install triton (`pip install 'holitom-deploy[gpu]'`)."
        ) from exc
    return kernels


def _register_jit() -> None:
    import torch

    def run(name: str, inputs: tuple, attributes: dict, outputs: tuple, stream: int) -> None:
        with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
            args = [torch.as_tensor(t, device="cuda") for t in inputs]
            results = getattr(_kernels(), O.REFERENCE_OPS[name].__name__)(*args, **attributes)
            for out, value in zip(outputs, results):
                torch.as_tensor(out, device="cuda").copy_(value)

    @trtp.impl(S.plugin_id(O.TEMPORAL_SEGMENT_CONTRACT))
    def _temporal_segment_impl(
        features: trtp.Tensor, tau: float, max_window: int, outputs: Tuple[trtp.Tensor], stream: int
    ) -> None:
        run(O.TEMPORAL_SEGMENT, (features,), {"tau": tau, "max_window": max_window}, outputs, stream)

    @trtp.impl(S.plugin_id(O.DENSITY_PEAK_MERGE_CONTRACT))
    def _density_peak_merge_impl(
        tokens: trtp.Tensor,
        valid: trtp.Tensor,
        num_clusters: trtp.Tensor,
        k_nn: int,
        beta: float,
        outputs: Tuple[trtp.Tensor],
        stream: int,
    ) -> None:
        run(O.DENSITY_PEAK_MERGE, (tokens, valid, num_clusters), {"k_nn": k_nn, "beta": beta}, outputs, stream)


def _compile_aot(name: str, inputs: tuple, attributes: dict, outputs: tuple):
    """PTX of the op's one-launch kernel, its launch parameters and its int32 arguments (symbolic sizes)."""
    from holitom.plugins_trt.aot_compile import compile_aot_kernel

    spec = S.AOT_KERNELS[name]
    compiled = compile_aot_kernel(getattr(_kernels(), spec.kernel), name, attributes)
    launch = trtp.KernelLaunchParams()
    launch.grid_x = 1
    if spec.grid is not None:
        i, axis = next((i, axis) for dim, i, axis in spec.dims if dim == spec.grid)
        launch.grid_x = inputs[i].shape_expr[axis]
    launch.block_x = compiled.metadata.num_warps * 32
    launch.shared_mem = compiled.metadata.shared
    extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(inputs[i].shape_expr[axis]) for _, i, axis in spec.dims])
    return compiled.metadata.name.encode(), compiled.asm["ptx"].encode(), launch, extra


def _register_aot() -> None:
    @trtp.aot_impl(S.plugin_id(O.TEMPORAL_SEGMENT_CONTRACT))
    def _temporal_segment_aot(
        features: trtp.TensorDesc, tau: float, max_window: int, outputs: Tuple[trtp.TensorDesc], tactic: int
    ) -> Tuple[bytes, bytes, trtp.KernelLaunchParams, trtp.SymExprs]:
        return _compile_aot(O.TEMPORAL_SEGMENT, (features,), {"tau": tau, "max_window": max_window}, outputs)

    @trtp.aot_impl(S.plugin_id(O.DENSITY_PEAK_MERGE_CONTRACT))
    def _density_peak_merge_aot(
        tokens: trtp.TensorDesc,
        valid: trtp.TensorDesc,
        num_clusters: trtp.TensorDesc,
        k_nn: int,
        beta: float,
        outputs: Tuple[trtp.TensorDesc],
        tactic: int,
    ) -> Tuple[bytes, bytes, trtp.KernelLaunchParams, trtp.SymExprs]:
        return _compile_aot(O.DENSITY_PEAK_MERGE, (tokens, valid, num_clusters), {"k_nn": k_nn, "beta": beta}, outputs)


def register_plugins(mode: str = "aot") -> None:
    """Register both plugins with the ``mode`` implementation; idempotent per mode."""
    global _registered
    if mode not in MODES:
        raise BackendError(f"plugin mode '{mode}' is not one of {MODES}.")
    if _registered == mode:
        return
    if _registered is not None:
        raise BackendError(
            f"the HoliTom TensorRT plugins are already registered with the {_registered} implementation in this process; "
            f"build or run '{mode}' engines in a separate process."
        )
    version = tuple(int(p) for p in trt.__version__.split(".")[:2])
    if version < S.MIN_TENSORRT_FOR_PLUGINS:
        raise BackendError(
            f"TensorRT {trt.__version__} has no ahead-of-time Python plugins (they need "
            f"{'.'.join(map(str, S.MIN_TENSORRT_FOR_PLUGINS))}+); build without plugins so the merge ops run as their "
            "ONNX local functions (`holitom build-engines DIR --plugins none`)."
        )
    _kernels()  # fail here, not inside TensorRT's build callbacks, when the kernels are missing
    _register_shapes()
    (_register_aot if mode == "aot" else _register_jit)()
    _registered = mode
