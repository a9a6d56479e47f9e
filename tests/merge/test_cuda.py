"""The merge stages on CUDA agree with the CPU (skipped without a GPU).

Indices must match exactly (cases are redrawn when the float64 oracle reports a
near-tie, as in test_outer_oracle); merged values use atol = rtol = 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from holitom.merge import MergeConfig, apply_inner_merge, outer_merge, plan_inner_merge

from merge_cases import MARGIN, make_attention, make_video, run_oracle


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("layout", ["onevision", "llava_video"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_outer_merge_cuda_matches_cpu(layout, dtype):
    rng = np.random.default_rng(0)
    config = MergeConfig(retain_ratio=0.2, tau=0.7, contextual_frac=0.5, k_nn=5)
    done = 0
    while done < 10:
        x, attention = make_video(rng, 12, 36, 32), make_attention(rng, 12, 36)
        if run_oracle(x, attention, config, (6, 6), layout).margin < MARGIN:
            continue
        done += 1
        xt, at = torch.from_numpy(x).to(dtype), torch.from_numpy(attention)
        cpu = outer_merge(xt, at, config, (6, 6), layout, torch.zeros(32, dtype=dtype))
        gpu = outer_merge(xt.cuda(), at.cuda(), config, (6, 6), layout, torch.zeros(32, dtype=dtype, device="cuda"))
        for name in ("src_index", "dst_index", "frame_index", "position_index", "newline_index"):
            assert torch.equal(getattr(cpu.plan, name), getattr(gpu.plan, name).cpu()), name
        torch.testing.assert_close(gpu.tokens.cpu().float(), cpu.tokens.float(), atol=1e-5 if dtype == torch.float32 else 1e-2, rtol=1e-5 if dtype == torch.float32 else 1e-2)


def test_inner_merge_cuda_matches_cpu():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(1200, 256, generator=g)
    scores = torch.rand(1000, generator=g)
    cpu_plan = plan_inner_merge(scores, hidden[100:1100], 0.5)
    gpu_plan = plan_inner_merge(scores.cuda(), hidden[100:1100].cuda(), 0.5)
    assert torch.equal(cpu_plan.keep, gpu_plan.keep.cpu()) and torch.equal(cpu_plan.dropped, gpu_plan.dropped.cpu())
    # Assignments must agree wherever the float64 best cosine beats the runner-up by > 1e-4.
    visual = hidden[100:1100].double()
    unit = visual / visual.norm(dim=-1, keepdim=True)
    top2 = (unit[cpu_plan.dropped] @ unit[cpu_plan.keep].T).topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-4
    assert clear.float().mean() > 0.9
    assert torch.equal(cpu_plan.assign[clear], gpu_plan.assign.cpu()[clear])
    # Apply: the CPU plan on the GPU gives the CPU result.
    moved = type(cpu_plan)(cpu_plan.keep.cuda(), cpu_plan.dropped.cuda(), cpu_plan.assign.cuda(), cpu_plan.num_visual)
    for mode in ("sequential", "mean"):
        out_cpu, kept_cpu = apply_inner_merge(hidden, (100, 1100), cpu_plan, mode)
        out_gpu, kept_gpu = apply_inner_merge(hidden.cuda(), (100, 1100), moved, mode)
        assert torch.equal(kept_cpu, kept_gpu.cpu())
        torch.testing.assert_close(out_gpu.cpu(), out_cpu, atol=1e-5, rtol=1e-5)
