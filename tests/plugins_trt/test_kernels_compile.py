"""Every Triton kernel compiles to a GPU binary at the launch configurations the launchers use on CUDA.

No GPU is needed: Triton compiles ahead of time for a named target (its own
ptxas ships in the wheel). The launchers are run on CPU tensors with their
kernels replaced by recorders and the GPU tiles selected, so the test compiles
exactly the (kernel, argument types, block sizes) a CUDA call launches, for the
shapes of the issue's benchmarks (F=32, P=196, 1000 inner tokens). The kernels'
results are checked by the interpreted tests (tests/plugins_trt/interpreted).

Targets: sm_90 (H100 / H200) and sm_87 (Jetson AGX Orin).
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

TARGETS = {"sm_90": GPUTarget("cuda", 90, 32), "sm_87": GPUTarget("cuda", 87, 32)}
POINTER_TYPES = {torch.float32: "*fp32", torch.bfloat16: "*bf16", torch.float16: "*fp16", torch.int64: "*i64", torch.bool: "*i1"}


class _Recorder:
    """Stands in for a ``@triton.jit`` function: ``kernel[grid](*args, **constexprs)`` records the launch."""

    def __init__(self, fn, launches: list):
        self.fn = fn
        self.launches = launches

    def __getitem__(self, grid):
        return lambda *args, **constexprs: self.launches.append((self.fn, args, constexprs))


class _RecordingModule:
    def __init__(self, module, launches: list):
        for name in dir(module):
            obj = getattr(module, name)
            if isinstance(obj, triton.runtime.jit.JITFunction):
                setattr(self, name, _Recorder(obj, launches))


def _signature(fn, args, constexprs) -> dict[str, str]:
    runtime = [name for name in fn.arg_names if name not in constexprs]
    assert len(runtime) == len(args), fn.__name__
    sig = {}
    for name, value in zip(runtime, args):
        if isinstance(value, torch.Tensor):
            sig[name] = POINTER_TYPES[value.dtype]
        elif isinstance(value, bool):
            sig[name] = "i1"
        elif isinstance(value, int):
            sig[name] = "i32"
        else:
            sig[name] = "fp32"
    return {**sig, **{name: "constexpr" for name in constexprs}}


@pytest.fixture(scope="module")
def launches():
    """Every launch of the launchers (the ops and the torch path's steps) on CUDA-sized inputs (bfloat16 features and hidden states)."""
    from holitom.merge.inner import InnerMergePlan
    from holitom.plugins_trt import kernels, triton_dpc, triton_inner, triton_key_scores, triton_temporal

    recorded: list = []
    patch = pytest.MonkeyPatch()
    modules = (triton_temporal, triton_dpc, triton_inner, triton_key_scores)
    for name, module in ((m.__name__.rsplit(".", 1)[1], m) for m in modules):
        patch.setattr(kernels, name, _RecordingModule(module, recorded))
    patch.setattr(kernels, "_tiles", lambda x: kernels._GPU_TILES)
    try:
        features = torch.zeros(32, 196, 64, dtype=torch.bfloat16)
        kernels.temporal_segment(features, tau=0.8, max_window=0)
        kernels.temporal_stage1(features, 0.8, None)
        tokens, valid = torch.zeros(8, 196, 64, dtype=torch.bfloat16), torch.ones(8, 196, dtype=torch.bool)
        kernels.density_peak_merge(tokens, valid, torch.full((8,), 20), k_nn=7, beta=0.6)
        kernels._dpc_slots(tokens, valid, torch.full((8,), 20), 7)  # dpc_plan's launches (its torch glue needs real outputs)
        hidden = torch.zeros(1000, 64, dtype=torch.bfloat16)
        keep, dropped = torch.arange(0, 1000, 2), torch.arange(1, 1000, 2)
        kernels.inner_assign(hidden, keep, dropped)
        plan = InnerMergePlan(keep, dropped, torch.arange(500), 1000)
        for mode in ("sequential", "mean"):
            kernels.inner_merge_rows(hidden, plan, mode)
        for dtype in (torch.bfloat16, torch.float32):  # SigLIP's last layer: 32 frames x 16 heads, 729 patches, 72 wide
            qk = torch.zeros(32 * 16, 729, 72, dtype=dtype)
            kernels.key_column_sums(qk, qk, torch.zeros(32 * 16, 729), 0.17)
    finally:
        patch.undo()
    return recorded


def test_every_kernel_is_launched(launches):
    from holitom.plugins_trt import triton_dpc, triton_inner, triton_key_scores, triton_temporal

    defined = {
        (module.__name__, name)
        for module in (triton_temporal, triton_dpc, triton_inner, triton_key_scores)
        for name in dir(module)
        if isinstance(getattr(module, name), triton.runtime.jit.JITFunction) and not name.startswith("_")  # _helpers are inlined
    }
    assert {(fn.fn.__module__, fn.__name__) for fn, _, _ in launches} == defined


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_launch_compiles(launches, target):
    for fn, args, constexprs in launches:
        source = ASTSource(fn, signature=_signature(fn, args, constexprs), constexprs=dict(constexprs))
        compiled = triton.compile(source, target=TARGETS[target])
        assert compiled.asm["cubin"], f"{fn.__name__} {constexprs}"
