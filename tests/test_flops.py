"""FLOPs: the paper's published figures, the measured counter, and where the two agree."""

from __future__ import annotations

import math
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from holitom.errors import ConfigError, InputError
from holitom.flops import (
    FLOPS_PER_MAC,
    count_matmul_flops,
    decoder_matmul_flops,
    holitom_prefill_flops,
    model_prefill_flops,
    prefill_flops,
)

# Qwen2-7B, the LLaVA-OneVision-7B decoder.
L, D, M = 28, 3584, 18944
HEADS, KV_HEADS = 28, 4
N_FULL = 32 * 196  # 6272 visual tokens


# ---------------------------------------------------------------------------
# The paper's figures (DESIGN.md: 40.8 TFLOPs; r=0.10, K=18, R=0.5: 2.8 TFLOPs, 6.9%)
# ---------------------------------------------------------------------------


def test_vanilla_prefill_is_40_8_tflops():
    full = prefill_flops(L, N_FULL, D, M)
    print(f"vanilla: {full:.0f} = {full / 1e12:.4f} T")
    assert full == 40_765_480_763_392  # exact: every term is an integer below 2**53
    assert f"{full / 1e12:.3g}" == "40.8"


def test_holitom_r010_reproduces_2_8_tflops_and_explains_6_9_percent():
    full = prefill_flops(L, N_FULL, D, M)

    # n = round(0.1 * 6272) = 627 (HoliTom's nominal r * N), R = 0.5 unrounded as in the formula.
    nominal = holitom_prefill_flops(L, 18, 627, D, M, 0.5)
    # The runtime keeps round(627 * 0.5) = 314 tokens (half to even) after layer 18.
    runtime = model_prefill_flops(SimpleNamespace(num_hidden_layers=L, hidden_size=D, intermediate_size=M), 627, n_after_inner=314, inner_layer=18)
    # n = 640 = 32 frames x ceil(0.1 * 196): Stage II's per-frame budget ceil(n_dyn * r')
    # when no position is static (r' = r), i.e. each frame's budget rounded UP.
    per_frame_ceil = holitom_prefill_flops(L, 18, 32 * math.ceil(0.1 * 196), D, M, 0.5)
    for name, value in [("n=627", nominal), ("n=627/314", runtime), ("n=640", per_frame_ceil)]:
        print(f"{name}: {value / 1e12:.4f} T, {100 * value / full:.3f}%")

    assert nominal == 2_756_958_285_312
    assert runtime == 2_757_916_628_992
    assert per_frame_ceil == 2_815_342_673_920
    # Every reading gives the published 2.8 TFLOPs ...
    assert {f"{v / 1e12:.2g}" for v in (nominal, runtime, per_frame_ceil)} == {"2.8"}
    # ... but the nominal n = 627 gives 6.76%, i.e. 6.8%, not the published 6.9%.
    assert f"{100 * nominal / full:.1f}" == f"{100 * runtime / full:.1f}" == "6.8"
    # 6.9% comes out either as the ratio of the two ROUNDED published figures
    # (2.8 / 40.8 = 6.86%), or from n = 640 (6.906%): the per-frame ceil budget.
    # Both agree with the paper; which one the authors used cannot be told apart.
    assert f"{100 * 2.8 / 40.8:.1f}" == "6.9"
    assert f"{100 * per_frame_ceil / full:.1f}" == "6.9"


def test_holitom_formula_composes_and_degenerates():
    # K = L (no inner merge) and R = 0 both fall back to the plain formula.
    assert holitom_prefill_flops(L, L, 1000, D, M, 0.5) == prefill_flops(L, 1000, D, M)
    assert holitom_prefill_flops(L, 18, 1000, D, M, 0.0) == prefill_flops(L, 1000, D, M)
    assert holitom_prefill_flops(L, 0, 1000, D, M, 0.5) == prefill_flops(L, 500, D, M)
    cfg = SimpleNamespace(num_layers=L, hidden_size=D, intermediate_size=M)
    assert model_prefill_flops(cfg, 1000) == prefill_flops(L, 1000, D, M)
    assert model_prefill_flops(cfg, 1000, n_after_inner=500.0, inner_layer=18) == holitom_prefill_flops(L, 18, 1000, D, M, 0.5)


def test_real_qwen2_7b_matmul_flops_differ_from_the_paper_units():
    paper_in_flops = FLOPS_PER_MAC * prefill_flops(L, N_FULL, D, M)
    real = decoder_matmul_flops(L, N_FULL, D, M, HEADS, KV_HEADS, ffn_matrices=3)
    print(f"Qwen2-7B, 6272 tokens: paper formula x2 = {paper_in_flops / 1e12:.2f} TFLOPs, GQA+SwiGLU = {real / 1e12:.2f} TFLOPs")
    assert paper_in_flops == 81_530_961_526_784
    assert real == 97_643_799_773_184  # 3rd FFN matrix adds more than GQA's smaller k/v save
    # The formula's layer (MHA, two-matrix FFN) is exactly the paper formula in FLOPs.
    assert decoder_matmul_flops(L, N_FULL, D, M, HEADS, HEADS, ffn_matrices=2) == paper_in_flops


# ---------------------------------------------------------------------------
# The counter against hand-computed numbers
# ---------------------------------------------------------------------------


def test_count_linear_stack():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3, bias=False))
    x = torch.randn(4, 5)
    with torch.no_grad():
        count = count_matmul_flops(model, x)
    # 2 FLOPs per multiply-add: 2*4*5*7 (addmm; the bias add is not a matmul) + 2*4*7*3 (mm).
    assert count.by_op == {"aten.addmm": 280, "aten.mm": 168}
    assert count.total == 448 == sum(count.by_op.values())
    assert torch.equal(count.result, model(x))


def _attention(q, k, v):
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, S, S)
    return scores.softmax(dim=-1) @ v  # (B, H, S, hd)


def test_count_attention_block():
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 8, 4, generator=gen) for _ in range(3))  # (B, H, S, hd)
    expected = 2 * 1 * 2 * 8 * 8 * 4 * 2  # Q K^T and P V: B*H*S*S*hd multiply-adds each
    manual = count_matmul_flops(_attention, q, k, v)
    assert manual.by_op == {"aten.bmm": expected}
    # Fused SDPA on CPU: torch's FlopCounterMode alone has no formula for the CPU
    # kernel (it would report 0); count_matmul_flops adds it.
    fused = count_matmul_flops(F.scaled_dot_product_attention, q, k, v)
    assert fused.total == expected
    torch.testing.assert_close(fused.result, manual.result, atol=1e-6, rtol=1e-6)
    # Causal masking is not discounted (same convention as torch's CUDA formulas and the paper).
    assert count_matmul_flops(F.scaled_dot_product_attention, q, k, v, is_causal=True).total == expected
    # GQA: 4 query heads share 2 KV heads; the score work scales with the query heads.
    q4 = torch.randn(1, 4, 8, 4, generator=gen)
    gqa = count_matmul_flops(F.scaled_dot_product_attention, q4, k, v, enable_gqa=True)
    assert gqa.total == 2 * 1 * 4 * 8 * 8 * 4 * 2


class FormulaLayer(nn.Module):
    """A decoder layer with exactly the structure the paper's formula assumes.

    Multi-head attention with d x d q/k/v/o projections (no GQA), full (non-causal)
    SDPA, and a two-matrix FFN. Norms and activations are there to be realistic;
    they cost no matmul FLOPs.
    """

    def __init__(self, d: int, m: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.up, self.down = nn.Linear(d, m, bias=False), nn.Linear(m, d, bias=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        n, d = x.shape
        return x.view(n, self.heads, d // self.heads).transpose(0, 1)[None]  # (1, H, n, hd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, d)
        h = self.norm1(x)
        att = F.scaled_dot_product_attention(self._split(self.q(h)), self._split(self.k(h)), self._split(self.v(h)))  # (1, H, n, hd)
        x = x + self.o(att[0].transpose(0, 1).reshape(x.shape))
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class Qwen2StyleLayer(FormulaLayer):
    """The real structure: GQA (k/v project to fewer heads) and a SwiGLU FFN (three matrices)."""

    def __init__(self, d: int, m: int, heads: int, kv_heads: int):
        super().__init__(d, m, heads)
        d_kv = d // heads * kv_heads
        self.kv_heads = kv_heads
        self.k, self.v = nn.Linear(d, d_kv, bias=False), nn.Linear(d, d_kv, bias=False)
        self.gate = nn.Linear(d, m, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, d)
        n, d = x.shape
        h = self.norm1(x)
        q = self._split(self.q(h))  # (1, H, n, hd)
        k = self.k(h).view(n, self.kv_heads, d // self.heads).transpose(0, 1)[None]  # (1, Hkv, n, hd)
        v = self.v(h).view(n, self.kv_heads, d // self.heads).transpose(0, 1)[None]  # (1, Hkv, n, hd)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)  # (1, H, n, hd)
        x = x + self.o(att[0].transpose(0, 1).reshape(n, d))
        h = self.norm2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


@pytest.mark.parametrize("n", [1, 10, 33])
def test_counter_equals_paper_formula_where_the_formula_applies(n):
    d, m, heads, layers = 16, 24, 4, 3
    torch.manual_seed(n)
    stack = nn.Sequential(*(FormulaLayer(d, m, heads) for _ in range(layers)))
    with torch.no_grad():
        count = count_matmul_flops(stack, torch.randn(n, d))
    # Paper units are MACs: the counter's FLOPs are exactly twice the formula.
    assert count.total == FLOPS_PER_MAC * prefill_flops(layers, n, d, m)
    assert count.total == decoder_matmul_flops(layers, n, d, m, heads, heads, ffn_matrices=2)
    # Projections/FFN per layer: 4*n*d*d + 2*n*d*m MACs as mm; attention 2*n*n*d as SDPA.
    sdpa_key = "aten._scaled_dot_product_flash_attention_for_cpu"
    assert count.by_op[sdpa_key] == FLOPS_PER_MAC * layers * 2 * n * n * d
    assert count.by_op["aten.mm"] == FLOPS_PER_MAC * layers * (4 * n * d * d + 2 * n * d * m)


@pytest.mark.parametrize("n", [1, 10, 33])
def test_counter_on_a_qwen2_style_layer(n):
    d, m, heads, kv_heads = 16, 24, 4, 2
    torch.manual_seed(n)
    layer = Qwen2StyleLayer(d, m, heads, kv_heads)
    with torch.no_grad():
        count = count_matmul_flops(layer, torch.randn(n, d))
    assert count.total == decoder_matmul_flops(1, n, d, m, heads, kv_heads, ffn_matrices=3)
    # Here the paper formula is off: GQA saves 2*n*d*(d - d_kv) MACs, SwiGLU adds n*d*m.
    d_kv = d // heads * kv_heads
    assert count.total - FLOPS_PER_MAC * prefill_flops(1, n, d, m) == FLOPS_PER_MAC * (n * d * m - 2 * n * d * (d - d_kv))


# ---------------------------------------------------------------------------
# Bad input and import weight
# ---------------------------------------------------------------------------


def test_bad_input():
    with pytest.raises(ConfigError, match=r"num_layers must be an int >= 0; got -1"):
        prefill_flops(-1, 10, D, M)
    with pytest.raises(ConfigError, match=r"hidden_size must be an integer >= 1, got 0"):
        prefill_flops(L, 10, 0, M)
    for bad in (-1, float("nan"), float("inf"), True, "627"):
        with pytest.raises(InputError, match=r"num_tokens \(a number of visual tokens\) must be a finite number >= 0; got"):
            prefill_flops(L, bad, D, M)
    with pytest.raises(ConfigError, match=r"inner_layer K must be an int in 0\.\.28 \(num_layers\); got 29"):
        holitom_prefill_flops(L, 29, 627, D, M, 0.5)
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ConfigError, match=r"inner_ratio R must be a number in \[0, 1\); got"):
            holitom_prefill_flops(L, 18, 627, D, M, bad)
    with pytest.raises(ConfigError, match=r"has none of the attributes \['num_layers', 'num_hidden_layers'\]"):
        model_prefill_flops(SimpleNamespace(hidden_size=D, intermediate_size=M), 627)
    cfg = SimpleNamespace(num_layers=L, hidden_size=D, intermediate_size=M)
    with pytest.raises(InputError, match=r"inner_layer=18 was given without n_after_inner"):
        model_prefill_flops(cfg, 627, inner_layer=18)
    with pytest.raises(ConfigError, match=r"inner_layer K must be an int in 0\.\.28; got None"):
        model_prefill_flops(cfg, 627, n_after_inner=314)
    with pytest.raises(ConfigError, match=r"num_heads=6 must be a multiple of num_kv_heads=4"):
        decoder_matmul_flops(L, 10, 12, M, 6, 4)
    with pytest.raises(InputError, match=r"num_tokens must be an int >= 0"):
        decoder_matmul_flops(L, 10.5, D, M, HEADS, KV_HEADS)


def test_import_is_light():
    code = "import sys, holitom.flops; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_cuda_sdpa_kernels_count_grouped_query_attention_on_the_meta_device():
    # torch's own formulas for the CUDA kernels refuse fewer KV heads than query heads (torch 2.11,
    # transformers' Qwen2 on an H200); count_matmul_flops counts them like the CPU kernel.
    q = torch.empty(1, 8, 100, 64, device="meta", dtype=torch.bfloat16)  # (B, H, S, hd)
    k = torch.empty(1, 2, 100, 64, device="meta", dtype=torch.bfloat16)  # (B, H_kv, S, hd)
    expected = 2 * 2 * 8 * 100 * 100 * 64
    aten = torch.ops.aten
    assert count_matmul_flops(aten._scaled_dot_product_flash_attention, q, k, k).total == expected
    k_full = k.repeat_interleave(4, dim=1)  # the memory-efficient kernel takes equal head counts
    assert count_matmul_flops(aten._scaled_dot_product_efficient_attention, q, k_full, k_full, None, False).total == expected
