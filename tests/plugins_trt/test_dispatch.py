"""The merge ops' device dispatch: CPU tensors keep the torch path (and never import triton); on CUDA
the outer merge's stages run the kernels and the inner merge the torch code, unless use_kernels() says otherwise."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from holitom.merge._device import KERNELS_ON_CUDA, kernels_for


def run_child(code: str) -> str:
    """Run ``code`` in a child Python (so this process never imports the kernel modules); its stdout."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_cpu_tensors_run_the_torch_code():
    assert set(KERNELS_ON_CUDA) == {"temporal", "dpc", "inner"}
    for op in KERNELS_ON_CUDA:
        assert kernels_for(torch.zeros(1), op) is None


def test_an_unknown_op_is_refused():
    with pytest.raises(KeyError, match="unknown merge op 'outer'"):
        kernels_for(torch.zeros(1), "outer")


def test_cuda_defaults_kernels_for_the_outer_stages_torch_for_the_inner_merge():
    # Only the tensor's device is read: a stand-in with a CUDA device needs no GPU.
    code = (
        "import types, torch\n"
        "from holitom.merge._device import kernels_for, use_kernels\n"
        "x = types.SimpleNamespace(device=torch.device('cuda', 0))\n"
        "name = lambda m: m and m.__name__\n"
        "default = [name(kernels_for(x, op)) for op in ('temporal', 'dpc', 'inner')]\n"
        "with use_kernels():\n"
        "    forced = [name(kernels_for(x, op)) for op in ('temporal', 'dpc', 'inner')]\n"
        "with use_kernels(False):\n"
        "    torch_only = [kernels_for(x, op) for op in ('temporal', 'dpc', 'inner')]\n"
        "print(default, forced, torch_only)\n"
    )
    k = "'holitom.plugins_trt.kernels'"
    assert run_child(code) == f"[{k}, {k}, None] [{k}, {k}, {k}] [None, None, None]"


def test_forcing_is_scoped_to_the_block():
    code = (
        "import torch\n"
        "from holitom.merge._device import kernels_for, use_kernels\n"
        "x = torch.zeros(1)\n"
        "with use_kernels():\n"
        "    inside = kernels_for(x, 'inner').__name__\n"
        "    with use_kernels(False):\n"
        "        nested = kernels_for(x, 'dpc')\n"
        "    back = kernels_for(x, 'temporal').__name__\n"
        "print(inside, nested, back, kernels_for(x, 'inner'))\n"
    )
    assert run_child(code) == "holitom.plugins_trt.kernels None holitom.plugins_trt.kernels None"


def test_the_merge_ops_on_cpu_do_not_import_triton():
    code = (
        "import sys, torch\n"
        "from holitom.merge import MergeConfig, apply_inner_merge, outer_merge, plan_inner_merge, plan_temporal\n"
        "x = torch.randn(4, 9, 8)\n"
        "plan_temporal(x, 0.5)\n"
        "outer_merge(x, torch.rand(4, 9), MergeConfig(retain_ratio=0.5, tau=0.5), (3, 3), 'onevision', torch.zeros(8))\n"
        "h = torch.randn(6, 8)\n"
        "apply_inner_merge(h, (0, 6), plan_inner_merge(torch.rand(6), h, 0.5))\n"
        "print('triton' in sys.modules)\n"
    )
    assert run_child(code) == "False"
