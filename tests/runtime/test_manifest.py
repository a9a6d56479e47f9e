"""The manifest declares the ecosystem I/O names; damaged exports are refused with a clear message."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest

from holitom import contracts as C
from holitom.errors import ConfigError, ExportError, ManifestError, OutputError
from holitom.export import ExportConfig, export_model
from holitom.export.manifest import FORMAT_VERSION, MANIFEST_NAME, read_manifest
from holitom.export.onnx_io import graph_io
from holitom.runtime import RuntimeConfig, load_pipeline


def test_manifest_declares_io_names_and_dynamic_axes(default_export):
    m = read_manifest(default_export)
    L, K = m.dims.num_layers, m.dims.inner_layer
    assert m.format_version == FORMAT_VERSION and m.precision == "float32"
    assert set(m.graphs) == {C.VISION, C.EMBED, C.DECODER_HEAD, C.DECODER_TAIL, C.DECODE_STEP}
    step = m.graphs[C.DECODE_STEP]
    assert step.input_names[:2] == ["inputs_embeds", "position_ids"]
    assert step.input_names[2:] == [f"past_key_values.{i}.{kv}" for i in range(L) for kv in ("key", "value")]
    assert step.output_names == ["logits"] + [f"present.{i}.{kv}" for i in range(L) for kv in ("key", "value")]
    assert m.graphs[C.DECODER_HEAD].output_names[2:] == [f"present.{i}.{kv}" for i in range(K) for kv in ("key", "value")]
    assert m.graphs[C.DECODER_TAIL].output_names[1:] == [f"present.{i}.{kv}" for i in range(K, L) for kv in ("key", "value")]
    assert m.graphs[C.VISION].dynamic_axes["pixel_values"] == {"0": "frames"}
    assert step.dynamic_axes["past_key_values.0.key"] == {"2": "past_head"}
    assert step.dynamic_axes[f"past_key_values.{L - 1}.key"] == {"2": "past_tail"}


def test_graph_files_carry_the_declared_io(default_export):
    m = read_manifest(default_export)
    for entry in m.all_graph_entries():
        io = graph_io(onnx.load(str(default_export / entry.file), load_external_data=False))
        assert [n for n, _, _ in io["outputs"]] == entry.output_names
        declared = {t["name"]: tuple(t["shape"]) for t in entry.inputs + entry.outputs}
        for name, _, shape in io["inputs"] + io["outputs"]:
            assert shape == declared[name], name


def test_exported_outer_merge_holds_the_plugin_ops_as_local_functions(default_export):
    from holitom.export.holitom_onnx import function_op_types, onnx_op_types
    from holitom.plugins_trt import ops

    m = read_manifest(default_export)
    merged = onnx.load(str(default_export / m.outer_merge["r15"]["graph"]["file"]))
    assert {(ops.DOMAIN, ops.TEMPORAL_SEGMENT), (ops.DOMAIN, ops.DENSITY_PEAK_MERGE)} <= onnx_op_types(merged)
    bodies = function_op_types(merged)
    assert {ops.TEMPORAL_SEGMENT, ops.DENSITY_PEAK_MERGE} <= set(bodies)
    assert all(domain == "" for body in bodies.values() for domain, _ in body)  # standard ops only
    assert [i.name for i in merged.graph.input] == ["features", "attention"]  # newline baked in



def test_exported_vision_encoder_has_one_softmax_per_layer(default_export):
    # The last layer's output and its key scores share one MatMul -> Softmax
    # (holitom.models.vision.attention_with_key_scores), not one each.
    from holitom.default_model import default_model_dir
    from holitom.models.config import LlavaConfig

    m = read_manifest(default_export)
    graph = onnx.load(str(default_export / m.graphs[C.VISION].file), load_external_data=False)
    nodes = [*graph.graph.node, *(node for f in graph.functions for node in f.node)]
    layers = LlavaConfig.from_pretrained(default_model_dir()).num_vision_layers_used
    assert layers == 3 and sum(node.op_type == "Softmax" for node in nodes) == layers


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_folder_without_manifest_is_refused(tmp_path):
    with pytest.raises(ManifestError, match="no manifest.json"):
        read_manifest(tmp_path)


def test_other_major_version_is_refused(default_export, tmp_path):
    folder = _copy(default_export, tmp_path / "e")
    data = json.loads((folder / MANIFEST_NAME).read_text())
    data["format_version"] = "2.0"
    (folder / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="format version '2.0'.*export the model again"):
        load_pipeline(folder, RuntimeConfig(backend="onnxruntime"))



def test_attention_form_is_recorded_and_checked(default_export, tmp_path):
    assert read_manifest(default_export).attention == "standard"  # the default export form
    folder = _copy(default_export, tmp_path / "e")
    data = json.loads((folder / MANIFEST_NAME).read_text())
    del data["attention"]  # a 1.0 manifest predates the field: its graphs are standard
    (folder / MANIFEST_NAME).write_text(json.dumps(data))
    assert read_manifest(folder).attention == "standard"
    data["attention"] = "flash"
    (folder / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=r"declares attention 'flash'.*export the model again"):
        read_manifest(folder)
    with pytest.raises(ConfigError, match=r"attention='flash' is not an export attention form"):
        ExportConfig(attention="flash")

def test_missing_graph_file_is_refused(default_export, tmp_path):
    folder = _copy(default_export, tmp_path / "e")
    (folder / "decoder_tail.onnx").unlink()
    with pytest.raises(ManifestError, match="decoder_tail.onnx.*missing"):
        read_manifest(folder)


def test_truncated_graph_file_is_refused(default_export, tmp_path):
    folder = _copy(default_export, tmp_path / "e")
    path = folder / "vision_encoder.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ManifestError, match="vision_encoder.onnx.*truncated"):
        read_manifest(folder)


def test_preset_not_in_export_is_refused(default_export):
    with pytest.raises(ManifestError, match=r"pass one of those with --preset, or export the preset with `holitom export --model default --out NEW_FOLDER --preset r10`"):
        load_pipeline(default_export, RuntimeConfig(backend="onnxruntime", preset="r10"))


def test_existing_output_folder_is_refused_without_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="exists.*--force"):
        export_model("default", out, ExportConfig(progress=False))
    assert (out / "keep.txt").read_text() == "mine"


def test_failed_export_leaves_nothing_behind(tmp_path, monkeypatch):
    from holitom.export import exporter

    def boom(*args, **kwargs):
        raise ExportError("simulated failure while writing the outer-merge graph")

    monkeypatch.setattr("holitom.export.holitom_onnx.build_outer_merge_model", boom)
    out = tmp_path / "out"
    with pytest.raises(ExportError, match="simulated"):
        exporter.export_model("default", out, ExportConfig(progress=False, presets=("r15",)))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # the partial folder was removed too
