"""The vision key scores are computed only for methods that read them; exported graphs always carry them."""

from __future__ import annotations

import pytest

from holitom import contracts as C
from holitom.export.manifest import read_manifest
from holitom.runtime import RuntimeConfig, load_pipeline


@pytest.mark.parametrize(
    "preset, reads_attention",
    [("none", False), ("r15", True), ("pool-r10", False), ("evs-r25", False), ("topk-r10", True), ("fastv-r10", True)],
)
def test_torch_contract_has_attention_only_when_the_method_reads_it(preset, reads_attention, monkeypatch):
    import holitom.models.vision as vision

    with load_pipeline("default", RuntimeConfig(backend="torch", preset=preset, num_frames=2)) as pipe:
        vision_spec = pipe.stages.runners[C.VISION].spec
        merge_spec = pipe.stages.runners[C.OUTER_MERGE].spec
        assert ("attention" in vision_spec.output_names) is reads_attention
        assert ("attention" in merge_spec.input_names) is reads_attention
        if not reads_attention:  # and no scoring pass runs at all
            def refuse(*args):
                raise AssertionError("the vision stage computed key scores that nothing reads")

            monkeypatch.setattr(vision, "attention_with_key_scores", refuse)
        pixels = pipe.load_video(pipe_frames(), 2)
        out = pipe.stages.runners[C.VISION].infer({"pixel_values": pixels})
        assert sorted(out) == sorted(vision_spec.output_names)


def pipe_frames():
    from holitom.video.synthetic import make_frames

    return make_frames(2, 64, 64, seed=3)


def test_exported_vision_graph_keeps_the_attention_output(default_export):
    import onnx

    manifest = read_manifest(default_export)
    graph = onnx.load(str(default_export / manifest.graphs[C.VISION].file), load_external_data=False).graph
    assert [o.name for o in graph.output] == ["features", "attention"]
    assert C.stage_specs(manifest.dims)[C.VISION].output_names == ["features", "attention"]
