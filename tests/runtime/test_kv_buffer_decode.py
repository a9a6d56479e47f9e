"""An --attention onnxruntime export: fused vision attention, and the decode step over preallocated KV buffers.

Oracles: the eager torch model (its functional decode step, float32, tolerances of the export
validator) and the greedy tokens of the standard export and of the torch backend.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from holitom import contracts as C
from holitom.export.manifest import read_manifest
from holitom.runtime import GenerationConfig, RuntimeConfig, load_pipeline
from holitom.runtime.backends.onnxruntime import kv_buffers
from holitom.runtime.backends.onnxruntime.loader import session_from_file
from holitom.runtime.backends.onnxruntime.runner import OnnxrtRunner
from holitom.runtime.validate import tolerance_for

FRAMES = 4


@pytest.fixture(scope="module")
def ort_form_export(tmp_path_factory, llava_video_checkpoint) -> Path:
    from holitom.export import ExportConfig, export_model
    from holitom.runtime.validate import validate_export

    out = tmp_path_factory.mktemp("exports") / "llava_video_ort"
    config = ExportConfig(num_frames=FRAMES, presets=("none", "r15"), attention="onnxruntime", progress=False)
    export_model(str(llava_video_checkpoint), out, config, validator=validate_export)
    return out


def _ops(path: Path) -> Counter:
    return Counter((n.domain, n.op_type) for n in onnx.load(path).graph.node)


def test_graphs_hold_the_fused_nodes(ort_form_export, llava_video_checkpoint):
    import json

    manifest = read_manifest(ort_form_export)
    vision_layers = json.loads((llava_video_checkpoint / "config.json").read_text())["vision_config"]["num_hidden_layers"]
    decode = manifest.graphs[C.DECODE_STEP]
    assert decode.input_names[:3] == ["inputs_embeds", "position_ids", C.KV_LENGTHS]
    assert _ops(ort_form_export / decode.file)[("com.microsoft", "GroupQueryAttention")] == manifest.dims.num_layers
    vision = _ops(ort_form_export / manifest.graphs[C.VISION].file)
    # Every layer but the last (whose scores HoliTom reads) is one fused node.
    assert vision[("com.microsoft", "MultiHeadAttention")] == vision_layers - 1
    assert vision[("", "Softmax")] == 1


def _torch_model(checkpoint):
    from holitom.models.loading import load_llava

    return load_llava(checkpoint, dtype=torch.float32).eval()


def test_decode_steps_match_torch_and_write_in_place(ort_form_export, llava_video_checkpoint, monkeypatch):
    monkeypatch.setattr(kv_buffers, "ROOM", 2)  # the buffers fill up and are regrown within the test
    manifest = read_manifest(ort_form_export)
    dims = manifest.dims
    spec = C.stage_specs(dims)[C.DECODE_STEP]
    runner = OnnxrtRunner(spec, lambda: session_from_file(ort_form_export / manifest.graphs[C.DECODE_STEP].file, ["CPUExecutionProvider"], spec)).activate()
    model = _torch_model(llava_video_checkpoint)
    g = torch.Generator().manual_seed(3)
    head_len, tail_len = 9, 5  # the groups' lengths differ, as after an inner merge
    past = [
        tuple(torch.randn(1, dims.num_kv_heads, head_len if i < dims.inner_layer else tail_len, dims.head_dim, generator=g) for _ in (0, 1))
        for i in range(dims.num_layers)
    ]
    feed_past = {n: t.numpy() for i, (k, v) in enumerate(past) for n, t in ((C.past_key_name(i), k), (C.past_value_name(i), v))}
    buffers_seen = []
    for step in range(5):
        embeds = torch.randn(1, 1, dims.hidden_size, generator=g)
        position = torch.tensor([[head_len + step]])
        with torch.no_grad():
            want_logits, past = model.decode_step(embeds, position, past)
        got = runner.infer({"inputs_embeds": embeds.numpy(), "position_ids": position.numpy(), **feed_past})
        want = {"logits": want_logits, **{n: t for i, (k, v) in enumerate(past) for n, t in ((C.present_key_name(i), k), (C.present_value_name(i), v))}}
        for name, ref in want.items():
            value = torch.from_numpy(np.array(got[name]))
            assert value.shape == ref.shape, name
            assert float((value - ref).abs().max()) <= tolerance_for(name, ref), f"step {step} {name}"
        buffers_seen.append(runner._kv_decoder._keys[0])
        feed_past = {C.past_key_name(i): got[C.present_key_name(i)] for i in range(dims.num_layers)}
        feed_past |= {C.past_value_name(i): got[C.present_value_name(i)] for i in range(dims.num_layers)}
    # Fed back its own views, the runner writes into the same buffers; it copies only to grow (room 2: steps 2, 4).
    assert [b is buffers_seen[0] for b in buffers_seen[:2]] == [True, True]
    assert buffers_seen[2] is not buffers_seen[1] and buffers_seen[3] is buffers_seen[2]
    assert np.shares_memory(got[C.present_key_name(0)], runner._kv_decoder._keys[0])
    runner.deactivate()


def test_mixed_group_lengths_are_refused(ort_form_export):
    from holitom.errors import InputError

    manifest = read_manifest(ort_form_export)
    dims = manifest.dims
    spec = C.stage_specs(dims)[C.DECODE_STEP]
    runner = OnnxrtRunner(spec, lambda: session_from_file(ort_form_export / manifest.graphs[C.DECODE_STEP].file, ["CPUExecutionProvider"]), check_inputs=False).activate()
    kv = lambda n: np.zeros((1, dims.num_kv_heads, n, dims.head_dim), np.float32)  # noqa: E731
    feed = {"inputs_embeds": np.zeros((1, 1, dims.hidden_size), np.float32), "position_ids": np.array([[4]])}
    feed |= {name(i): kv(3 + (i == 0)) for i in range(dims.num_layers) for name in (C.past_key_name, C.past_value_name)}
    with pytest.raises(InputError, match="must have one length"):
        runner.infer(feed)


@pytest.mark.parametrize("preset,inner", [("none", True), ("r15", False), ("r15", True)])
def test_greedy_tokens_match_the_standard_export_and_torch(ort_form_export, llava_video_export, llava_video_checkpoint, tmp_path, preset, inner):
    from holitom.video import make_frames, write_video

    clips = [write_video(tmp_path / f"clip{s}.mp4", make_frames(2 * FRAMES, 96, 128, seed=s, scene_cut_at=FRAMES), fps=8) for s in (0, 1, 2)]
    answers = {}
    for name, model, backend in (("ort form", ort_form_export, "onnxruntime"), ("standard", llava_video_export, "onnxruntime"), ("torch", llava_video_checkpoint, "torch")):
        with load_pipeline(model, RuntimeConfig(backend=backend, preset=preset, inner_merge=inner, num_frames=FRAMES)) as pipe:
            answers[name] = [pipe.run(clip, "What is moving?", FRAMES, GenerationConfig(max_new_tokens=8, stop_token_ids=())).token_ids for clip in clips]
    assert all(len(tokens) == 8 for tokens in answers["torch"])
    assert answers["ort form"] == answers["standard"] == answers["torch"]
