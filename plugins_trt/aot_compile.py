"""Compile an op's one-launch Triton kernel to PTX for ``@trtp.aot_impl`` (imports triton, not tensorrt).

Kept apart from :mod:`holitom.plugins_trt.trt_register` so the compile step (the
agreed signature of :data:`holitom.plugins_trt.trt_spec.AOT_KERNELS`, the attribute
constants, the tile sizes) is tested on machines without TensorRT or a GPU: Triton
lowers to PTX for an explicit ``GPUTarget`` without a device.
"""

from __future__ import annotations

from holitom.errors import BackendError
from holitom.plugins_trt import ops as O
from holitom.plugins_trt import trt_spec as S


def compile_aot_kernel(fn, op: str, attributes: dict, target=None):
    """``triton.compile`` of ``fn`` (the ``@triton.jit`` kernel of ``op``) with the agreed signature.

    ``target`` is a ``triton.backends.compiler.GPUTarget`` (default: the current device).
    Refuses a kernel that needs Triton's global or profile scratch buffers: TensorRT
    launches AOT kernels with exactly the contract's pointers and int32 scalars, so
    nothing would fill Triton's trailing scratch parameters.
    """
    import triton

    contract, spec = O.get_contract(op), S.AOT_KERNELS[op]
    if tuple(fn.arg_names) != spec.parameters(contract):
        raise BackendError(
            f"{op}: AOT kernel {spec.kernel} declares parameters {tuple(fn.arg_names)}; the TensorRT plugin launches it "
            f"with {spec.parameters(contract)} (holitom.plugins_trt.trt_spec.AOT_KERNELS)."
        )
    source = triton.compiler.ASTSource(fn=fn, signature=S.aot_signature(contract, spec), constexprs=S.aot_constexprs(spec, attributes))
    compiled = triton.compile(source, target=target, options={"num_warps": spec.num_warps})
    scratch = {f: getattr(compiled.metadata, f, 0) for f in ("global_scratch_size", "profile_scratch_size")}
    if any(scratch.values()):
        raise BackendError(f"{op}: AOT kernel {spec.kernel} needs Triton scratch memory {scratch}, which a TensorRT AOT plugin cannot provide.")
    return compiled
