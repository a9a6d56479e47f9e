"""The merge ops' device dispatch: CPU tensors keep the torch path (and never import triton)."""

from __future__ import annotations

import subprocess
import sys

import torch

from holitom.merge._device import kernels_for


def run_child(code: str) -> str:
    """Run ``code`` in a child Python (so this process never imports the kernel modules); its stdout."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_cpu_tensors_run_the_torch_code():
    assert kernels_for(torch.zeros(1)) is None


def test_forcing_is_scoped_to_the_block():
    code = (
        "import torch\n"
        "from holitom.merge._device import kernels_for, use_kernels\n"
        "x = torch.zeros(1)\n"
        "with use_kernels():\n"
        "    inside = kernels_for(x).__name__\n"
        "    with use_kernels(False):\n"
        "        nested = kernels_for(x)\n"
        "    back = kernels_for(x).__name__\n"
        "print(inside, nested, back, kernels_for(x))\n"
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
