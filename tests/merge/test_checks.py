"""The shared finiteness test: a fast sum, with the exact test where the sum overflows."""

from __future__ import annotations

import pytest
import torch

from holitom.errors import InputError
from holitom.merge._checks import all_finite, check_finite


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_non_finite_values_are_found(dtype):
    x = torch.randn(64, 33).to(dtype)
    assert all_finite(x)
    for bad in (float("nan"), float("inf"), -float("inf")):
        y = x.clone()
        y[17, 5] = bad
        assert not all_finite(y), bad
    y = x.clone()
    y[0, 0], y[1, 1] = float("inf"), -float("inf")  # the sum is NaN, not Inf
    assert not all_finite(y)


def test_finite_values_whose_sum_overflows_are_finite():
    big = torch.full((1000,), 3e38, dtype=torch.float32)  # the float32 sum overflows to Inf
    assert all_finite(big) and all_finite(-big)
    half = torch.full((100,), 60000.0, dtype=torch.float16)  # above float16's max once summed in float16
    assert all_finite(half)


def test_empty_is_finite_and_check_names_the_input():
    assert all_finite(torch.empty(0, 4))
    with pytest.raises(InputError, match="hidden_visual holds NaN or Inf"):
        check_finite("hidden_visual", torch.tensor([1.0, float("nan")]))
