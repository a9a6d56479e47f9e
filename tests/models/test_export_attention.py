"""The two export forms of the attentions in exported graphs (holitom.models.export_attention).

Eager results never depend on the form. The exported "onnxruntime" form is a chain of
com.microsoft.GroupQueryAttention nodes (one per query chunk) per attention and must give onnxruntime the
outputs of eager PyTorch (float32, atol 1e-5) at sequence lengths other than the
traced one; the "standard" form holds only ai.onnx ops.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from holitom.errors import ConfigError
from holitom.models import export_attention as ea
from holitom.models import ops
from holitom.models.config import TextConfig
from holitom.models.ops import repeat_kv, rope_cos_sin
from holitom.models.qwen2 import DecoderAttention

ATOL = 1e-5


def make_attention(heads: int = 4, kv_heads: int = 2, head_dim: int = 8) -> DecoderAttention:
    cfg = TextConfig(vocab_size=16, hidden_size=heads * head_dim, intermediate_size=8, num_layers=1, num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim)
    torch.manual_seed(0)
    return DecoderAttention(cfg).eval()


class Prefill(torch.nn.Module):
    """x (1, S, D) -> attention output (1, S, D), positions 0..S-1."""

    def __init__(self, attn: DecoderAttention):
        super().__init__()
        self.attn = attn

    def forward(self, x):
        positions = torch.arange(x.shape[1])[None]  # (1, S)
        cos, sin = rope_cos_sin(positions, self.attn.head_dim, 10000.0, x.dtype)
        return self.attn(x, cos, sin)[0]


def export(module: torch.nn.Module, flavor: str):
    x = torch.randn(1, 11, module.attn.q_proj.in_features)
    with ea.export_attention(flavor), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, (x,), None, input_names=["x"], output_names=["out"], dynamic_shapes=({1: torch.export.Dim("seq", min=2, max=4096)},), dynamo=True, opset_version=18
        )
    return program.model_proto


def op_types(model) -> set[tuple[str, str]]:
    nodes = [*model.graph.node, *(n for f in model.functions for n in f.node)]
    return {(n.domain, n.op_type) for n in nodes}


@pytest.mark.parametrize("heads, kv_heads", [(4, 2), (4, 4), (6, 1)])
def test_eager_is_causal_sdpa_over_repeated_kv(heads, kv_heads):
    g = torch.Generator().manual_seed(heads * 10 + kv_heads)
    q = torch.randn(2, heads, 9, 8, generator=g)
    k, v = (torch.randn(2, kv_heads, 9, 8, generator=g) for _ in range(2))
    groups = heads // kv_heads
    want = F.scaled_dot_product_attention(q, repeat_kv(k, groups), repeat_kv(v, groups), is_causal=True, scale=0.3)
    for flavor in ea.FLAVORS:  # outside an export the form changes nothing
        with ea.export_attention(flavor):
            got = ea.causal_prefill_attention(q, k, v, 0.3)
        assert torch.equal(got, want.transpose(1, 2).reshape(2, 9, heads * 8))


def test_flavor_is_checked_and_restored():
    with pytest.raises(ConfigError, match=r"attention='flash' is not an export attention form; choose one of \['standard', 'onnxruntime'\]"):
        with ea.export_attention("flash"):
            pass
    with pytest.raises(RuntimeError):
        with ea.export_attention("onnxruntime"):
            assert ea._active == "onnxruntime"
            raise RuntimeError("boom")
    assert ea._active == ea.DEFAULT_FLAVOR == "standard"


def test_onnxruntime_form_is_chained_fused_nodes_and_matches_eager():
    module = Prefill(make_attention())
    model = export(module, "onnxruntime")
    ops = op_types(model)
    nodes = [*model.graph.node, *(n for f in model.functions for n in f.node)]
    assert sum(n.op_type == "GroupQueryAttention" for n in nodes) == ea.PREFILL_CHUNKS
    assert ("", "Softmax") not in ops and ("", "Trilu") not in ops  # no (S, S) matrix anywhere
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    # Other lengths than the traced 11: a single token, fewer tokens than chunks (padded chunks), a multiple of the
    # chunk count, one more than it, and a long prompt of unequal chunks.
    for seq in (1, 5, ea.PREFILL_CHUNKS, ea.PREFILL_CHUNKS * 3 + 1, 601):
        x = torch.randn(1, seq, module.attn.q_proj.in_features, generator=torch.Generator().manual_seed(seq))
        with torch.no_grad():
            want = module(x).numpy()
        (got,) = session.run(None, {"x": x.numpy()})
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=ATOL)


def test_standard_form_holds_only_onnx_ops():
    model = export(Prefill(make_attention()), "standard")
    assert {domain for domain, _ in op_types(model)} <= {""}
    assert ("", "Softmax") in op_types(model)


class VisionNoScores(torch.nn.Module):
    """x (F, N, D) -> a vision layer's attention output without scores (F, N, D)."""

    def __init__(self):
        super().__init__()
        from holitom.models.config import VisionConfig
        from holitom.models.vision import VisionAttention

        cfg = VisionConfig(hidden_size=32, intermediate_size=8, num_layers=1, num_heads=4, image_size=28, patch_size=14)
        torch.manual_seed(1)
        self.attn = VisionAttention(cfg).eval()

    def forward(self, x):
        return self.attn(x)[0]


class TanhGelu(torch.nn.Module):
    def forward(self, x):
        return ops.ACTIVATIONS["gelu_pytorch_tanh"](x)


def export_frames_both_forms(module: torch.nn.Module) -> dict[str, object]:
    """``{form: ONNX model}`` of a module over ``(frames, n, 32)`` inputs, traced at (3, 7), both dims dynamic."""
    x = torch.randn(3, 7, 32)
    dims = ({0: torch.export.Dim("frames", min=1, max=64), 1: torch.export.Dim("n", min=2, max=1024)},)
    models = {}
    for flavor in ea.FLAVORS:
        with ea.export_attention(flavor), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            models[flavor] = torch.onnx.export(module, (x,), None, input_names=["x"], output_names=["out"], dynamic_shapes=dims, dynamo=True, opset_version=18).model_proto
    return models


def test_tanh_gelu_is_one_fastgelu_node_in_the_onnxruntime_form():
    models = export_frames_both_forms(TanhGelu())
    assert op_types(models["onnxruntime"]) == {("com.microsoft", "FastGelu")}
    assert ("", "Tanh") in op_types(models["standard"]) and {domain for domain, _ in op_types(models["standard"])} <= {""}
    session = ort.InferenceSession(models["onnxruntime"].SerializeToString(), providers=["CPUExecutionProvider"])
    for frames, n in ((1, 5), (4, 49)):  # other sizes than the traced (3, 7)
        x = 4 * torch.randn(frames, n, 32, generator=torch.Generator().manual_seed(n))  # well into both tails
        want = F.gelu(x, approximate="tanh").numpy()  # the oracle: torch's own tanh GELU
        (got,) = session.run(None, {"x": x.numpy()})
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=ATOL)


def test_vision_attention_without_scores_is_one_fused_node_in_the_onnxruntime_form():
    module = VisionNoScores()
    models = export_frames_both_forms(module)
    assert ("com.microsoft", "MultiHeadAttention") in op_types(models["onnxruntime"])
    assert ("", "Softmax") not in op_types(models["onnxruntime"])
    assert {domain for domain, _ in op_types(models["standard"])} <= {""}
    session = ort.InferenceSession(models["onnxruntime"].SerializeToString(), providers=["CPUExecutionProvider"])
    for frames, n in ((1, 5), (4, 49)):  # other sizes than the traced (3, 7)
        x = torch.randn(frames, n, 32, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            want = module(x).numpy()
        (got,) = session.run(None, {"x": x.numpy()})
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=ATOL)


def test_shared_buffer_decode_attention_eager_writes_one_position_and_attends_over_the_filled_prefix():
    g = torch.Generator().manual_seed(4)
    q, k, v = torch.randn(1, 4, 1, 8, generator=g), torch.randn(1, 2, 1, 8, generator=g), torch.randn(1, 2, 1, 8, generator=g)
    key, value = torch.randn(1, 2, 9, 8, generator=g), torch.randn(1, 2, 9, 8, generator=g)
    past = ea.SharedKVBuffer(key, value, torch.tensor([5], dtype=torch.int32), torch.tensor(6, dtype=torch.int32))
    out, new_key, new_value = ea.shared_buffer_decode_attention(q, k, v, past, 0.3)
    assert torch.equal(new_key[:, :, :5], key[:, :, :5]) and torch.equal(new_key[:, :, 5:6], k) and torch.equal(new_key[:, :, 6:], key[:, :, 6:])
    assert torch.equal(new_value[:, :, 5:6], v)
    keys, values = torch.cat((key[:, :, :5], k), 2), torch.cat((value[:, :, :5], v), 2)  # (1, 2, 6, 8)
    want = F.scaled_dot_product_attention(q, repeat_kv(keys, 2), repeat_kv(values, 2), scale=0.3)  # (1, 4, 1, 8)
    torch.testing.assert_close(out, want.transpose(1, 2).reshape(1, 1, 32), atol=ATOL, rtol=ATOL)
