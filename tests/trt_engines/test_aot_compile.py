"""The AOT compile step of the plugins, run for real: Triton lowers stand-in kernels with the agreed
interface to PTX for an H200 (sm_90) and a Jetson Orin (sm_87) without a GPU or TensorRT.

The stand-ins only write their outputs; the real kernels (holitom.plugins_trt.kernels) are
checked against the reference by their own tests. What this pins is the calling convention
TensorRT launches: input pointers, int32 sizes, output pointers, in the contract's order.
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


@triton.jit
def temporal_segment_kernel(features_ptr, frames, positions, hidden, window_start_ptr, window_end_ptr, static_mask_ptr,
                            TAU: tl.constexpr, MAX_WINDOW: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_P: tl.constexpr,
                            BLOCK_D: tl.constexpr):
    f = tl.arange(0, BLOCK_F)
    tl.store(window_start_ptr + f, f.to(tl.int64), mask=f < frames)
    tl.store(window_end_ptr + f, f.to(tl.int64) + MAX_WINDOW, mask=f < frames)
    x = tl.load(features_ptr + f * positions * hidden, mask=f < frames, other=0.0)
    tl.store(static_mask_ptr + f * positions, x > TAU, mask=f < frames)


@triton.jit
def density_peak_merge_kernel(tokens_ptr, valid_ptr, num_clusters_ptr, groups, slots, hidden, merged_ptr, is_centre_ptr,
                              assignment_ptr, K_NN: tl.constexpr, BETA: tl.constexpr, BLOCK_N: tl.constexpr,
                              BLOCK_D: tl.constexpr):
    g = tl.program_id(0)
    n = tl.arange(0, BLOCK_N)
    m = tl.load(num_clusters_ptr + g)
    ok = tl.load(valid_ptr + g * slots + n, mask=n < slots, other=0)
    tl.store(is_centre_ptr + g * slots + n, (n < m) & (ok != 0), mask=n < slots)
    tl.store(assignment_ptr + g * slots + n, tl.where(ok != 0, n.to(tl.int64) % K_NN, -1), mask=n < slots)
    x = tl.load(tokens_ptr + g * slots * hidden + n * hidden, mask=n < slots, other=0.0)
    tl.store(merged_ptr + g * slots * hidden + n * hidden, x * BETA, mask=n < slots)


KERNELS = {O.TEMPORAL_SEGMENT: (temporal_segment_kernel, {"tau": 0.8, "max_window": 0}),
           O.DENSITY_PEAK_MERGE: (density_peak_merge_kernel, {"k_nn": 7, "beta": 0.6})}


@pytest.mark.parametrize("arch", [90, 87])
@pytest.mark.parametrize("op", sorted(KERNELS))
def test_agreed_interface_compiles_to_ptx(op, arch):
    fn, attributes = KERNELS[op]
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
