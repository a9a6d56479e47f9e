"""The compiled kernels on a CUDA GPU against the torch reference on the CPU (skipped without a GPU).

Same cases and comparisons as the interpreted tests (``kernel_cases.py``):
identical windows, masks, centres, assignments and kept indices; merged values
within 1e-5 (float32 outputs) or one rounding step of a 16-bit output.
"""

from __future__ import annotations

import pytest
import torch

from kernel_cases import DPC_CASES, INNER_CASES, KEY_SCORE_CASES, KEY_SCORE_LAYOUT_CASES, TEMPORAL_CASES, case_id, check_dpc, check_inner, check_key_scores, check_temporal

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def kernels():
    from holitom.plugins_trt import kernels

    return kernels


@pytest.mark.parametrize("case", TEMPORAL_CASES, ids=case_id)
def test_temporal_segment_on_cuda(kernels, case):
    check_temporal(kernels, case, "cuda")


@pytest.mark.parametrize("case", DPC_CASES, ids=case_id)
def test_density_peak_merge_on_cuda(kernels, case):
    check_dpc(kernels, case, "cuda")


@pytest.mark.parametrize("case", INNER_CASES, ids=case_id)
def test_inner_merge_on_cuda(kernels, case):
    check_inner(kernels, case, "cuda")


# Every product mode of the key-score kernel (the default's and the others), so the sweep's pick is covered.
KEY_SCORE_MODES = {"default": {}, "native-16bit": {"upcast_16bit": False}, "upcast-16bit": {"upcast_16bit": True},
                   "tf32x3": {"float32_products": "tf32x3"}, "ieee": {"float32_products": "ieee"},
                   "padded-head": {"split_head_dim": False}, "padded-head-upcast": {"split_head_dim": False, "upcast_16bit": True}}


@pytest.mark.parametrize("mode", sorted(KEY_SCORE_MODES))
@pytest.mark.parametrize("case", KEY_SCORE_CASES, ids=case_id)
def test_key_column_sums_on_cuda(kernels, case, mode):
    check_key_scores(kernels, case, "cuda", kernels.KeyScoreLaunch(**KEY_SCORE_MODES[mode]))


@pytest.mark.parametrize("case, heads", KEY_SCORE_LAYOUT_CASES, ids=lambda v: case_id(v) if isinstance(v, tuple) else f"heads{v}")
def test_key_column_sums_on_cuda_read_the_attention_layout_in_place(kernels, case, heads):
    check_key_scores(kernels, case, "cuda", heads=heads)
