"""The AOT compile step of the plugins, run for real: Triton lowers the ops' one-launch kernels
(holitom.plugins_trt.kernels.temporal_segment_kernel / density_peak_merge_kernel) with the agreed
interface to PTX for an H200 (sm_90) and a Jetson Orin (sm_87) without a GPU or TensorRT.

What this pins is the calling convention TensorRT launches (input pointers, int32 sizes, output
pointers, in the contract's order) and that the kernels need no Triton scratch memory;
their results are checked against the reference under the Triton interpreter
(tests/plugins_trt/interpreted, the same launch as the plugin's).
"""

from __future__ import annotations

import re

import pytest

from holitom.errors import BackendError
from holitom.plugins_trt import ops as O
from holitom.plugins_trt import trt_spec as S

triton = pytest.importorskip("triton", reason="triton is not installed")
tl = pytest.importorskip("triton.language")
from holitom.plugins_trt.aot_compile import compile_aot_kernel  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402


def _kernels():
    from holitom.plugins_trt import kernels

    return {O.TEMPORAL_SEGMENT: (kernels.temporal_segment_kernel, {"tau": 0.8, "max_window": 0}),
            O.DENSITY_PEAK_MERGE: (kernels.density_peak_merge_kernel, {"k_nn": 7, "beta": 0.6})}


@pytest.mark.parametrize("arch", [90, 87])
@pytest.mark.parametrize("op", sorted(O.OP_CONTRACTS))
def test_agreed_interface_compiles_to_ptx(op, arch):
    fn, attributes = _kernels()[op]
    compiled = compile_aot_kernel(fn, op, attributes, target=GPUTarget("cuda", arch, 32))
    ptx = compiled.asm["ptx"]
    assert f".target sm_{arch}" in ptx
    assert compiled.metadata.name == S.AOT_KERNELS[op].kernel
    assert compiled.metadata.num_warps == S.AOT_KERNELS[op].num_warps
    # The entry's leading parameters are what TensorRT passes: pointers (u64) and int32 sizes (u32), in order.
    params = re.findall(rf"\.param \.(u64|u32)[^\n]*{compiled.metadata.name}_param_(\d+)", ptx)
    contract, spec = O.get_contract(op), S.AOT_KERNELS[op]
    expected = ["u64"] * len(contract.inputs) + ["u32"] * len(spec.dims) + ["u64"] * len(contract.outputs)
    assert [kind for kind, _ in params[: len(expected)]] == expected


def test_wrong_parameter_order_is_refused():
    @triton.jit
    def temporal_segment_kernel(window_start_ptr, features_ptr, frames, positions, hidden, window_end_ptr, static_mask_ptr,
                                TAU: tl.constexpr, MAX_WINDOW: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_P: tl.constexpr,
                                BLOCK_D: tl.constexpr):
        pass

    with pytest.raises(BackendError, match="declares parameters"):
        compile_aot_kernel(temporal_segment_kernel, O.TEMPORAL_SEGMENT, {"tau": 0.8, "max_window": 0}, target=GPUTarget("cuda", 90, 32))
