"""Every Triton kernel compiles to a GPU binary at the launch configurations the launchers use on CUDA.

No GPU is needed: Triton compiles ahead of time for a named target (its own
ptxas ships in the wheel). The launchers are run on CPU tensors with their
kernels replaced by recorders and the GPU tiles selected, so the test compiles
exactly the (kernel, argument types, block sizes) a CUDA call launches, with the
specialization Triton's JIT gives those arguments (16-byte aligned pointers and
integers divisible by 16 marked so, integers equal to 1 made constants: the
compiler's passes depend on it; a triton 3.6 pass failed on an H200 only with
those marks). Two sets: the shapes of the issue's benchmarks (F=32, P=196, 1000
inner tokens) and every launch of the CUDA kernel tests
(``test_kernels_cuda.py``, whose cases run here as on the GPU), so a Triton
version that cannot compile one of them fails on the CPU. No kernel may become
a ``tt.dot``: Triton's combine pass turns ``sum(a[:, :, None] * b[None, :, :],
axis=1)`` into one, whose float32 inputs are rounded to TF32 on the GPU (the
interpreter never shows it). The kernels' results are checked by the
interpreted tests (tests/plugins_trt/interpreted).

Targets: sm_90 (H100 / H200) and sm_87 (Jetson AGX Orin). To check another
Triton (say 3.6, the one torch 2.11's CUDA wheels pin) without changing the
venv: ``pip install --target /tmp/tr36site --no-deps triton==3.6.0`` (or its
wheel), then ``PYTHONPATH=/tmp/tr36site python -m pytest
tests/plugins_trt/test_kernels_compile.py``.
"""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from triton._C.libtriton import native_specialize_impl  # noqa: E402  (the JIT's own argument specialization)
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.compiler.compiler import make_backend  # noqa: E402

from kernel_cases import DPC_CASES, INNER_CASES, KEY_SCORE_CASES, TEMPORAL_CASES, run_dpc, run_inner, run_key_scores, run_temporal  # noqa: E402

TARGETS = {"sm_90": GPUTarget("cuda", 90, 32), "sm_87": GPUTarget("cuda", 87, 32)}
DOT_KERNELS = {"key_column_sums_kernel"}  # kernels whose tl.dot is meant (see _compile)


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


LAUNCH_OPTIONS = ("num_warps", "num_stages")  # keywords of a launch that are compile options, not kernel arguments


def _source(fn, args, constexprs, target) -> ASTSource:
    """The source Triton's JIT compiles for ``fn[grid](*args, **constexprs)`` on ``target`` (same types, constants, attributes)."""
    constexprs = {name: v for name, v in constexprs.items() if name not in LAUNCH_OPTIONS}
    runtime = [name for name in fn.arg_names if name not in constexprs]
    assert len(runtime) == len(args), fn.__name__
    backend = make_backend(target)
    signature, constants, attrs = {}, dict(constexprs), {}
    for name, value in zip(runtime, args):
        kind, spec = native_specialize_impl(backend, value, False, True, True)  # as jit.create_function_from_signature
        signature[name] = kind
        if kind == "constexpr":  # an integer equal to 1
            constants[name] = spec
        elif isinstance(spec, str):  # "D": 16-byte aligned pointer or integer divisible by 16
            attrs[(fn.arg_names.index(name),)] = backend.parse_attr(spec)
    signature = {name: signature.get(name, "constexpr") for name in fn.arg_names}
    return ASTSource(fn, signature=signature, constexprs=constants, attrs=attrs)


def _compile(fn, args, constexprs, target: str):
    options = {name: v for name, v in constexprs.items() if name in LAUNCH_OPTIONS}
    compiled = triton.compile(_source(fn, args, constexprs, TARGETS[target]), target=TARGETS[target], options=options)
    assert compiled.asm["cubin"], f"{fn.__name__} {constexprs}"
    # Every product is summed in float32 in a fixed order (kernels.py, "Precision"): a tt.dot would round to TF32.
    # The key-score kernel's logits are a tl.dot by design, with exact 16-bit products or float32-accurate
    # ones (triton_key_scores.py).
    if fn.__name__ not in DOT_KERNELS:
        assert "tt.dot" not in compiled.asm["ttir"], f"{fn.__name__} {constexprs} compiles to a tt.dot"
    return compiled


def _record(run) -> list:
    """The kernel launches ``run()`` makes through the launchers on CPU tensors, with the GPU tiles.

    Buffers the launchers allocate are zeros (an index the torch glue between
    launches reads is then in range); no kernel runs.
    """
    from holitom.plugins_trt import kernels, triton_dpc, triton_inner, triton_key_scores, triton_temporal

    recorded: list = []
    patch = pytest.MonkeyPatch()
    modules = (triton_temporal, triton_dpc, triton_inner, triton_key_scores)
    for name, module in ((m.__name__.rsplit(".", 1)[1], m) for m in modules):
        patch.setattr(kernels, name, _RecordingModule(module, recorded))
    patch.setattr(kernels, "_tiles", lambda x: kernels._GPU_TILES)
    patch.setattr(kernels, "_empty", lambda shape, dtype, device: torch.zeros(shape, dtype=dtype, device=device))
    try:
        run()
    finally:
        patch.undo()
    return recorded


@pytest.fixture(scope="module")
def launches():
    """Every launch of the launchers (the ops and the torch path's steps) on CUDA-sized inputs (bfloat16 features and hidden states)."""
    from holitom.merge.inner import InnerMergePlan
    from holitom.plugins_trt import kernels

    def run():
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
            for split in (False, True):
                kernels.key_column_sums(qk, qk, torch.zeros(32 * 16, 729), 0.17, kernels.KeyScoreLaunch(split_head_dim=split))
            qk4 = torch.zeros(32, 729, 16, 72, dtype=dtype).transpose(1, 2)  # (F, H, N, hd): the attention's view, read in place
            kernels.key_column_sums(qk4, qk4, torch.zeros(32 * 16, 729), 0.17)

    return _record(run)


@pytest.fixture(scope="module")
def cuda_test_launches():
    """The distinct launches of ``test_kernels_cuda.py``: its cases, run as there, on CPU tensors."""
    from holitom.plugins_trt import kernels

    def run():
        for cases, launch in ((TEMPORAL_CASES, run_temporal), (DPC_CASES, run_dpc), (INNER_CASES, run_inner), (KEY_SCORE_CASES, run_key_scores)):
            for case in cases:
                launch(kernels, case, "cpu")

    distinct = {}
    for fn, args, constexprs in _record(run):
        source = _source(fn, args, constexprs, TARGETS["sm_90"])
        distinct.setdefault((fn.__name__, repr(source.signature), repr(source.constants), repr(source.attrs)), (fn, args, constexprs))
    return list(distinct.values())


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
        _compile(fn, args, constexprs, target)


def test_the_cuda_tests_cover_every_kernel_and_the_dpc_row_chunk_sizes(cuda_test_launches):
    from holitom.plugins_trt.kernels import DPC_ROW_ELEMENTS

    names = {(fn.fn.__module__.rsplit(".", 1)[-1], fn.__name__) for fn, _, _ in cuda_test_launches}
    assert names == {
        ("triton_temporal", "temporal_segment_kernel"),  # the ops' one launches
        ("triton_dpc", "density_peak_merge_kernel"),
        ("triton_inner", "kept_norm_kernel"),  # the inner merge's steps
        ("triton_inner", "assign_kernel"),
        ("triton_inner", "merge_kernel"),
        ("triton_key_scores", "key_column_sums_kernel"),  # the vision tower's key scores
    }
    # The one-launch DPC kernel at BLOCK_N = 64, 128, 256, and its row chunk at 16 (where the broadcast
    # product became a TF32 tt.dot with triton 3.6 and 3.8) and below.
    dpc = [c for fn, _, c in cuda_test_launches if fn.__name__ == "density_peak_merge_kernel"]
    assert {c["BLOCK_N"] for c in dpc} == {64, 128, 256}
    rows = {DPC_ROW_ELEMENTS.value // (c["BLOCK_N"] * c["BLOCK_D"]) for c in dpc}
    assert 16 in rows and min(rows) < 16


@pytest.mark.slow  # about 40 compiles: a minute on one core
def test_every_launch_of_the_cuda_tests_compiles_for_sm_90(cuda_test_launches):
    failures = []
    for fn, args, constexprs in cuda_test_launches:
        try:
            _compile(fn, args, constexprs, "sm_90")
        except (AssertionError, RuntimeError) as exc:  # a failed compiler pass is a RuntimeError (its IR on stderr)
            failures.append(str(exc).splitlines()[0] if isinstance(exc, AssertionError) else f"{fn.__name__} {constexprs}: {exc}")
    assert not failures, f"triton {triton.__version__}:\n" + "\n".join(failures)
