"""The decoder entry points trace with torch.export and symbolic sequence lengths (what the ONNX exporter needs).

Only torch.export is exercised here; ONNX conversion and its parity belong to export/.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.export import Dim

from holitom.models.loading import load_llava
from tiny_llava import max_diff

K = 2


class Head(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inputs_embeds, position_ids):
        out = self.model.decoder_head(inputs_embeds, position_ids, K, None)
        return (out.hidden, out.attn_row, *[t for kv in out.present for t in kv])


class Tail(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, hidden, position_ids):
        out = self.model.decoder_tail(hidden, position_ids, K)
        return (out.logits, *[t for kv in out.present for t in kv])


class Step(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inputs_embeds, position_ids, past):
        pairs = [(past[2 * i], past[2 * i + 1]) for i in range(len(past) // 2)]
        logits, present = self.model.decode_step(inputs_embeds, position_ids, pairs)
        return (logits, *[t for kv in present for t in kv])


@torch.no_grad()
def test_tail_and_decode_step_export_with_dynamic_lengths(onevision_ckpt):
    model = load_llava(onevision_ckpt.path)
    seq = Dim("seq", min=2, max=4096)
    emb, pos = torch.randn(1, 9, 64), torch.arange(9)[None]
    emb2 = torch.randn(1, 13, 64)

    tail = torch.export.export(Tail(model), (emb, pos), dynamic_shapes=({1: seq}, {1: seq}))
    gapped = torch.tensor([[0, 1, 2, 5, 9, 10]])
    assert max_diff(tail.module()(emb2[:, :6], gapped)[0], model.decoder_tail(emb2[:, :6], gapped, K).logits) <= 1e-5

    # Layers < K and >= K hold caches of different, independent lengths.
    full, kept = Dim("full", min=1, max=4096), Dim("kept", min=1, max=4096)
    past = tuple(torch.randn(1, 2, 9 if i < 2 * K else 5, 16) for i in range(8))
    step = torch.export.export(
        Step(model),
        (emb[:, :1], torch.tensor([[30]]), past),
        dynamic_shapes=(None, None, tuple({2: full if i < 2 * K else kept} for i in range(8))),
    )
    past2 = tuple(torch.randn(1, 2, 12 if i < 2 * K else 4, 16) for i in range(8))
    got = step.module()(emb[:, :1], torch.tensor([[40]]), past2)
    ref_logits, ref_present = model.decode_step(emb[:, :1], torch.tensor([[40]]), [(past2[2 * i], past2[2 * i + 1]) for i in range(4)])
    assert max_diff(got[0], ref_logits) <= 1e-5
    assert [t.shape[2] for t in got[1::2]] == [13, 13, 5, 5] == [kv[0].shape[2] for kv in ref_present]


@torch.no_grad()
def test_head_exports_with_a_static_length(onevision_ckpt):
    model = load_llava(onevision_ckpt.path)
    emb, pos = torch.randn(1, 9, 64), torch.arange(9)[None] * 2
    head = torch.export.export(Head(model), (emb, pos))
    got = head.module()(emb, pos)
    ref = model.decoder_head(emb, pos, K, None)
    assert max_diff(got[0], ref.hidden) <= 1e-5 and max_diff(got[1], ref.attn_row) <= 1e-6


@torch.no_grad()
def test_head_exports_with_a_dynamic_length(onevision_ckpt):
    model = load_llava(onevision_ckpt.path)
    seq = Dim("seq", min=2, max=4096)
    emb, pos = torch.randn(1, 9, 64), torch.arange(9)[None]
    head = torch.export.export(Head(model), (emb, pos), dynamic_shapes=({1: seq}, {1: seq}))
    emb2, pos2 = torch.randn(1, 13, 64), torch.arange(13)[None]
    got = head.module()(emb2, pos2)
    ref = model.decoder_head(emb2, pos2, K, None)
    assert max_diff(got[0], ref.hidden) <= 1e-5 and max_diff(got[1], ref.attn_row) <= 1e-6
