"""The Triton kernels against the torch reference, on CPU tensors under ``TRITON_INTERPRET=1``.

Collected only in a process started with that variable (see conftest.py);
``tests/plugins_trt/test_interpreted_kernels.py`` starts one in the normal suite.
Every case runs twice, with every buffer the launchers allocate poisoned in two
patterns (conftest ``poisoned``), so an element a kernel leaves unwritten fails.
The cases and the comparisons are ``kernel_cases.py``'s (shared with the CUDA test).
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from holitom.merge import MergeConfig, outer_merge
from holitom.merge._device import use_kernels
from holitom.plugins_trt.ops import DENSITY_PEAK_MERGE, OP_CONTRACTS, REFERENCE_OPS, TEMPORAL_SEGMENT, get_contract
from holitom.plugins_trt.trt_spec import AOT_KERNELS, aot_constexprs, output_shapes
from kernel_cases import (
    DPC_CASES,
    INNER_CASES,
    KEY_SCORE_CASES,
    KEY_SCORE_LAYOUT_CASES,
    TEMPORAL_CASES,
    assert_values_close,
    case_id,
    check_dpc,
    check_inner,
    check_key_scores,
    check_temporal,
    dpc_case,
    temporal_case,
)
from merge_cases import MARGIN, make_attention, make_video, run_oracle


def test_every_op_has_a_kernel_with_the_reference_signature(kernels):
    assert set(kernels.KERNEL_OPS) == set(OP_CONTRACTS)
    for name, kernel in kernels.KERNEL_OPS.items():
        assert inspect.signature(kernel) == inspect.signature(REFERENCE_OPS[name]), name


@pytest.mark.parametrize("case", TEMPORAL_CASES, ids=case_id)
def test_temporal_segment_matches_reference(poisoned, case):
    check_temporal(poisoned, case, "cpu")


def test_temporal_stage1_table_matches_reference(poisoned):
    """The step the torch merge path takes on CUDA: similarity, run ends and the table are the reference's."""
    from holitom.merge.temporal import _similarity_and_norms, _stage1_device

    rng = np.random.default_rng(3)
    x = torch.from_numpy(make_video(rng, 11, 169, 16))
    sim, norms, run_end, table = poisoned.temporal_stage1(x, 0.7, 5)
    want = _stage1_device(x, 0.7, 5)  # CPU: the torch code
    assert torch.equal(run_end, want.run_end) and torch.equal(table, want.table)
    ref_sim, ref_norms = _similarity_and_norms(x)
    torch.testing.assert_close(sim, ref_sim, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(norms, ref_norms, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("case", DPC_CASES, ids=case_id)
def test_density_peak_merge_matches_reference(poisoned, case):
    check_dpc(poisoned, case, "cpu")


def test_dpc_plan_matches_reference_plan(poisoned):
    """The step the torch merge path takes on CUDA: the same DPCPlan as the torch core."""
    from holitom.merge.dpc import _dpc_core

    rng = np.random.default_rng(5)
    tokens, valid, clusters = dpc_case(rng, 169, 8, (169, 100, 12), 7, "clustered", torch.float32)
    plan, d2 = poisoned.dpc_plan(tokens, valid, clusters.tolist(), 7)
    want, want_d2, _ = _dpc_core(tokens.clone(), valid, clusters.tolist(), 7)
    for name in ("centres", "assign", "centre_valid", "is_centre", "member_count"):
        assert torch.equal(getattr(plan, name), getattr(want, name)), name
    finite = torch.isfinite(want_d2)
    assert torch.equal(torch.isfinite(d2), finite)
    torch.testing.assert_close(d2[finite], want_d2[finite], atol=1e-4, rtol=1e-5)
    assert torch.equal(d2, d2.transpose(1, 2)) and (d2.diagonal(dim1=1, dim2=2)[valid] == 0).all()


# --------------------------------------------------------------------------- the launch a TensorRT AOT plugin makes


def launch_like_the_aot_plugin(kernels, op: str, inputs: list[torch.Tensor], attributes: dict) -> list[torch.Tensor]:
    """The op's one-launch kernel as trt_register's aot_impl launches it: the agreed parameters, int32 sizes,
    fixed tile sizes, attribute constants, warps and grid of trt_spec.AOT_KERNELS; outputs shaped by the plugin's
    shape rule and allocated (poisoned) through kernels._empty."""
    contract, spec = get_contract(op), AOT_KERNELS[op]
    shapes = output_shapes(contract, [tuple(t.shape) for t in inputs])
    outputs = [kernels._empty(shape, getattr(torch, port.dtype), inputs[0].device) for port, shape in zip(contract.outputs, shapes)]
    sizes = {name: inputs[i].shape[axis] for name, i, axis in spec.dims}
    grid = (1,) if spec.grid is None else (sizes[spec.grid],)
    fn = getattr(kernels, spec.kernel)
    fn[grid](*inputs, *sizes.values(), *outputs, **aot_constexprs(spec, attributes), num_warps=spec.num_warps)
    return outputs


AOT_TEMPORAL_CASES = [c for c in TEMPORAL_CASES if c[-1] == torch.float32 and (c[0] in (1, 9, 64) or c[2] > 64 or c[3] == "repeated")]
# The plugin's tiles walk BLOCK_N = 256 lanes two rows at a time whatever n is, slowly under the interpreter: small n.
AOT_DPC_CASES = [
    # (slots, hidden, valid counts per group, k_nn, tokens, dtype), as DPC_CASES
    (24, 40, (24, 13, 0), 1, "clustered", torch.float32),  # k = 1: every density ties; a group with M = 0
    (20, 16, (20, 17), 100, "clustered", torch.float32),  # k_nn above every count: k = M
    (24, 8, (24, 19), 7, "duplicated", torch.float32),
]


def test_aot_cases_cover_the_limits():
    assert {c[0] for c in AOT_TEMPORAL_CASES} >= {1, 9, 64} and any(c[3] == "repeated" for c in AOT_TEMPORAL_CASES)
    blocks = dict(AOT_KERNELS[TEMPORAL_SEGMENT].blocks)
    assert any(c[1] > blocks["BLOCK_P"] for c in AOT_TEMPORAL_CASES) and any(c[2] > blocks["BLOCK_D"] for c in AOT_TEMPORAL_CASES)
    assert {c[3] for c in AOT_DPC_CASES} >= {1, 100} and any(0 in c[2] for c in AOT_DPC_CASES)  # k = 1 ties, M = 0 group
    assert any(c[1] > dict(AOT_KERNELS[DENSITY_PEAK_MERGE].blocks)["BLOCK_D"] for c in AOT_DPC_CASES)  # several hidden chunks
    assert {c[4] for c in AOT_DPC_CASES} == {"clustered", "duplicated"}


@pytest.mark.parametrize("case", AOT_TEMPORAL_CASES, ids=case_id)
def test_aot_temporal_segment_kernel_matches_reference(poisoned, case):
    frames, positions, dim, video, tau, max_window, dtype = case
    x = temporal_case(frames, positions, dim, video, tau, dtype)
    attributes = {"tau": tau, "max_window": max_window}
    got = launch_like_the_aot_plugin(poisoned, TEMPORAL_SEGMENT, [x], attributes)
    want = REFERENCE_OPS[TEMPORAL_SEGMENT](x, **attributes)
    for name, g, w in zip(("window_start", "window_end", "static_mask"), got, want):
        assert g.dtype == w.dtype and torch.equal(g, w), name


@pytest.mark.parametrize("case", AOT_DPC_CASES, ids=case_id)
def test_aot_density_peak_merge_kernel_matches_reference(poisoned, case):
    slots, dim, counts, k_nn, kind, dtype = case
    rng = np.random.default_rng(slots * 100 + dim + len(counts))
    inputs = list(dpc_case(rng, slots, dim, counts, k_nn, kind, dtype))
    attributes = {"k_nn": k_nn, "beta": float(rng.uniform(0.2, 0.9))}
    merged, is_centre, assignment = launch_like_the_aot_plugin(poisoned, DENSITY_PEAK_MERGE, inputs, attributes)
    want_merged, want_centre, want_assignment = REFERENCE_OPS[DENSITY_PEAK_MERGE](*inputs, **attributes)
    assert torch.equal(is_centre, want_centre)
    assert torch.equal(assignment, want_assignment)
    assert_values_close(merged, want_merged)


@pytest.mark.parametrize("case", INNER_CASES, ids=case_id)
def test_inner_merge_matches_reference(poisoned, case):
    check_inner(poisoned, case, "cpu")


def test_inner_merge_rows_fold_members_sequentially(poisoned):
    """Hand-worked: kept token 0 takes members 1 then 2: ((h0 + h1) / 2 + h2) / 2; mean: (h0 + h1 + h2) / 3."""
    from holitom.merge.inner import InnerMergePlan

    h = torch.tensor([[8.0, 0.0], [0.0, 4.0], [2.0, 2.0], [1.0, 1.0]])
    plan = InnerMergePlan(keep=torch.tensor([0, 3]), dropped=torch.tensor([1, 2]), assign=torch.tensor([0, 0]), num_visual=4)
    seq = poisoned.inner_merge_rows(h, plan, "sequential")
    assert torch.equal(seq, torch.tensor([[3.0, 2.0], [1.0, 1.0]]))
    mean = poisoned.inner_merge_rows(h, plan, "mean")
    torch.testing.assert_close(mean, torch.tensor([[10 / 3, 2.0], [1.0, 1.0]]))


# --------------------------------------------------------------------------- the torch merge path on the kernels


@pytest.mark.parametrize("layout", ["onevision", "llava_video"])
def test_outer_merge_through_the_kernels_matches_torch(poisoned, monkeypatch, layout):
    """The device dispatch, forced on the CPU: outer_merge runs the kernels and gives the torch path's result."""
    calls = []
    for step in ("temporal_stage1", "dpc_plan"):
        original = getattr(poisoned, step)
        monkeypatch.setattr(poisoned, step, lambda *a, _f=original, _s=step, **k: calls.append(_s) or _f(*a, **k))
    rng = np.random.default_rng(11)
    config = MergeConfig(retain_ratio=0.25, tau=0.7, contextual_frac=0.5, k_nn=5)
    while True:
        x, attention = make_video(rng, 7, 36, 16), make_attention(rng, 7, 36)
        if run_oracle(x, attention, config, (6, 6), layout).margin >= MARGIN:
            break
    xt, at, newline = torch.from_numpy(x), torch.from_numpy(attention), torch.zeros(16)
    want = outer_merge(xt, at, config, (6, 6), layout, newline)
    with use_kernels():
        got = outer_merge(xt, at, config, (6, 6), layout, newline)
    assert "temporal_stage1" in calls and "dpc_plan" in calls
    for name in ("src_index", "dst_index", "frame_index", "position_index", "newline_index"):
        assert torch.equal(getattr(got.plan, name), getattr(want.plan, name)), name
    assert_values_close(got.tokens, want.tokens)


@pytest.mark.parametrize("split", [False, True], ids=["padded-head", "split-head"])
@pytest.mark.parametrize("case", KEY_SCORE_CASES, ids=case_id)
def test_key_column_sums_match_float64(poisoned, case, split):
    check_key_scores(poisoned, case, "cpu", poisoned.KeyScoreLaunch(split_head_dim=split))


@pytest.mark.parametrize("case, heads", KEY_SCORE_LAYOUT_CASES, ids=lambda v: case_id(v) if isinstance(v, tuple) else f"heads{v}")
def test_key_column_sums_read_the_attention_layout_in_place(poisoned, case, heads):
    check_key_scores(poisoned, case, "cpu", heads=heads)
