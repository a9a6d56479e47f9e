"""Damaged export folders and cache entries: every damage is detected and named, never run.

The export under test is the one the concurrency test wrote (preset ``none``); each test
damages its own copy.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pytest
from hostile_helpers import assert_refused, cli, read_manifest_json, write_manifest

from holitom import contracts as C
from holitom.errors import ManifestError
from holitom.export import digests
from holitom.export.manifest import read_manifest


@pytest.fixture
def export_copy(concurrent_exports, tmp_path, monkeypatch, hostile_cache) -> Path:
    root = concurrent_exports[0]
    monkeypatch.setenv("HOLITOM_CACHE", str(hostile_cache))
    return Path(shutil.copytree(root / "shared", tmp_path / "export"))


def _flip_bytes(path: Path, at_fraction: float = 0.7, count: int = 4) -> None:
    data = bytearray(path.read_bytes())
    at = int(len(data) * at_fraction)
    for i in range(at, at + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "field, value, pattern",
    [
        ("graphs", [], r"malformed field 'graphs' \(expected dict, got list\)"),
        ("outer_merge", "none", r"malformed field 'outer_merge' \(expected dict, got str\)"),
        ("dims", {"num_layers": "4"}, r"malformed field 'dims.num_layers' \(expected int, got str\)"),
        ("stop_token_ids", ["eos"], r"'stop_token_ids' \(expected a list of integers\)"),
        ("grid", [14], r"'grid' \(expected \[rows, columns\]"),
        ("model_config", {"text": "x"}, r"malformed field 'model_config'"),
        ("precision", "int4", r"'precision' \('int4' is not float32"),
        ("assets", ["../../etc/passwd"], r"'\.\./\.\./etc/passwd' is not a plain file name inside the export folder"),
    ],
)
def test_manifest_fields_of_the_wrong_type_are_refused(export_copy, field, value, pattern):
    data = read_manifest_json(export_copy)
    data[field] = value
    write_manifest(export_copy, data)
    with pytest.raises(ManifestError, match=pattern):
        read_manifest(export_copy)


def test_a_graph_entry_that_breaks_the_stage_contract_is_refused(export_copy):
    data = read_manifest_json(export_copy)
    data["graphs"][C.EMBED]["outputs"][0]["dtype"] = "float16"
    write_manifest(export_copy, data)
    with pytest.raises(ManifestError, match=r"'graphs.embed_tokens.outputs' \(does not match the 'embed_tokens' stage contract: inputs_embeds: float16"):
        read_manifest(export_copy)


def test_a_manifest_without_digests_is_refused(export_copy):
    data = read_manifest_json(export_copy)
    del data["files"]
    write_manifest(export_copy, data)
    with pytest.raises(ManifestError, match=r"records no content digests.*export the model again with `holitom export"):
        read_manifest(export_copy)


def test_flipped_bytes_in_weights_are_detected_even_after_a_verified_load(export_copy):
    read_manifest(export_copy)  # verified and recorded
    target = export_copy / "decoder_tail.onnx"
    stamp = target.stat()
    _flip_bytes(target)
    os.utime(target, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # same size and mtime: only the content and ctime differ
    with pytest.raises(ManifestError, match=r"decoder_tail.onnx' does not have the content manifest.json records \(sha256"):
        read_manifest(export_copy)


def test_a_graph_swapped_for_another_stages_graph_is_refused(export_copy):
    shutil.copy(export_copy / "embed_tokens.onnx", export_copy / "decoder_tail.onnx")
    with pytest.raises(ManifestError, match=r"decoder_tail.onnx' has \d+ bytes but manifest.json records"):
        read_manifest(export_copy)


def test_a_swapped_graph_with_a_rewritten_manifest_fails_the_session_check(export_copy):
    from holitom.runtime import RuntimeConfig, load_pipeline

    # Someone copies another stage's graph over a file and "fixes" the manifest's size and digest too.
    shutil.copy(export_copy / "embed_tokens.onnx", export_copy / "decoder_tail.onnx")
    data = read_manifest_json(export_copy)
    data["files"]["decoder_tail.onnx"] = {"bytes": (export_copy / "decoder_tail.onnx").stat().st_size, "sha256": digests.file_digest(export_copy / "decoder_tail.onnx")}
    data["graphs"][C.DECODER_TAIL]["sizes"]["decoder_tail.onnx"] = data["files"]["decoder_tail.onnx"]["bytes"]
    write_manifest(export_copy, data)
    with pytest.raises(ManifestError, match=r"decoder_tail.onnx' is not a 'decoder_tail' graph of this export: unexpected inputs \['input_ids'\]"):
        with load_pipeline(export_copy, RuntimeConfig(backend="onnxruntime", preset="none")):
            pass


def test_verification_is_recorded_and_costs_nothing_the_second_time(export_copy):
    manifest_path = export_copy / "manifest.json"
    files = read_manifest_json(export_copy)["files"]
    first = digests.verify_files(export_copy, files, manifest_path, "fix.")
    second = digests.verify_files(export_copy, files, manifest_path, "fix.")
    assert first == 0 or first == sum(f["bytes"] for f in files.values())  # 0 when an earlier test verified this very copy
    assert second == 0


def test_a_corrupt_tokenizer_in_an_export_is_one_error(export_copy):
    from holitom.runtime import RuntimeConfig, load_pipeline

    (export_copy / "tokenizer.json").write_text("{")
    data = read_manifest_json(export_copy)
    data["files"]["tokenizer.json"] = {"bytes": 1, "sha256": digests.file_digest(export_copy / "tokenizer.json")}
    write_manifest(export_copy, data)
    with pytest.raises(ManifestError, match=r"tokenizer.json' is not valid JSON"):
        load_pipeline(export_copy, RuntimeConfig(backend="onnxruntime", preset="none"))


def test_a_preset_the_export_lacks_gets_advice_the_toolkit_accepts(export_copy):
    from holitom.cli import build_parser
    from holitom.export import ExportConfig
    from holitom.runtime import RuntimeConfig, load_pipeline

    with pytest.raises(ManifestError) as info:
        load_pipeline(export_copy, RuntimeConfig(backend="onnxruntime", preset="r10"))
    message = str(info.value)
    assert "pass one of those with --preset" in message
    command = message.split("`")[1].split()
    args = build_parser().parse_args(command[1:])  # the advised command parses ...
    ExportConfig(presets=tuple(args.preset))  # ... and its presets are exportable


def test_a_corrupt_export_is_one_line_from_the_cli(export_copy, tiny_clip, tmp_path):
    _flip_bytes(export_copy / "vision_encoder.onnx")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = cli(
        "run", "--model", export_copy, "--backend", "onnxruntime", "--preset", "none", "--video", tiny_clip, "--prompt", "hi",
        "--frames", "2", "--max-new-tokens", "2", cwd=cwd, env={"HOLITOM_CACHE": str(tmp_path / "cache")},
    )
    assert_refused(result, r"vision_encoder.onnx' does not have the content manifest.json records.*export the model again")


# ---- the toolkit's own cache mends itself


@pytest.fixture
def cache_with_entry(concurrent_exports, tmp_path, monkeypatch):
    """A private cache whose entry for the default model is a copy of the test export; rebuilding copies it again."""
    import holitom.export
    from holitom.default_model import default_model_dir
    from holitom.export import cache as loader

    monkeypatch.setenv("HOLITOM_CACHE", str(tmp_path / "cache"))
    source = concurrent_exports[0] / "shared"
    entry = loader.export_cache_dir(default_model_dir())
    shutil.copytree(source, entry)
    rebuilt = []

    def fake_export(model, out, config, validator=None):  # the real export is covered by the concurrency test; this one is instant
        assert config.keep_existing and not out.exists()
        shutil.copytree(source, out)
        rebuilt.append(out)

    monkeypatch.setattr(holitom.export, "export_model", fake_export)
    return entry, rebuilt


@pytest.mark.parametrize(
    "damage, pattern",
    [
        (lambda e: _flip_bytes(e / "decode_step.onnx"), r"the cached export of '.*' is damaged: file '.*decode_step.onnx' does not have the content.*; rebuilding this cached export\."),
        (lambda e: (e / "decoder_head.onnx").unlink(), r"decoder_head.onnx' named in manifest.json is missing; rebuilding this cached export\."),
        (lambda e: (e / "manifest.json").unlink(), r"the cached export '.*' is incomplete \(no manifest.json\); rebuilding this cached export\."),
        (lambda e: (e / "manifest.json").write_text("{"), r"manifest.json is not valid JSON .*; rebuilding this cached export\."),
    ],
)
def test_a_damaged_cache_entry_is_rebuilt_with_one_warning(cache_with_entry, damage, pattern):
    from holitom.default_model import default_model_dir
    from holitom.export.cache import CacheRebuildWarning, ensure_export
    from holitom.sources import ModelSource

    entry, rebuilt = cache_with_entry
    damage(entry)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ensure_export(ModelSource("checkpoint", default_model_dir())) == entry
    assert [str(w.message) for w in caught if w.category is CacheRebuildWarning] and len(caught) == 1, [str(w.message) for w in caught]
    import re

    assert re.search(pattern, str(caught[0].message)), str(caught[0].message)
    assert rebuilt == [entry] and read_manifest(entry).graphs
    assert sorted(p.name for p in entry.parent.iterdir()) == [entry.name]  # the damaged copy is gone


def test_an_intact_cache_entry_is_used_as_it_is(cache_with_entry):
    from holitom.default_model import default_model_dir
    from holitom.export.cache import ensure_export
    from holitom.sources import ModelSource

    entry, rebuilt = cache_with_entry
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ensure_export(ModelSource("checkpoint", default_model_dir())) == entry
    assert rebuilt == []
