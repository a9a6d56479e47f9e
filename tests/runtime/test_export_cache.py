"""The export cache (for the onnxruntime backend): its key must change with whatever changes the graphs."""

from __future__ import annotations

import os
import sys
import time

import pytest

from holitom.export import cache as loader


@pytest.fixture
def fake_sources(tmp_path, monkeypatch):
    """A throwaway package standing in for the graph-writing packages."""
    package = tmp_path / "fake_graph_code"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "ops.py").write_text("SCALE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(loader, "_GRAPH_SOURCES", ("fake_graph_code",))
    yield package
    sys.modules.pop("fake_graph_code", None)


def test_key_changes_with_the_exporter_source(fake_sources, tmp_path):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    before = loader.export_cache_dir(checkpoint)
    assert loader.export_cache_dir(checkpoint) == before  # stable while nothing changes
    (fake_sources / "sub" / "ops.py").write_text("SCALE = 2\n")  # same size, other bytes
    after = loader.export_cache_dir(checkpoint)
    assert after != before and after.parent == before.parent and after.name.startswith("ckpt-")


def test_key_changes_with_the_checkpoint_files(fake_sources, tmp_path):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(b"0" * 8)
    before = loader.export_cache_dir(checkpoint)
    stamp = time.time() + 10
    os.utime(weights, (stamp, stamp))
    assert loader.export_cache_dir(checkpoint) != before


def test_real_digest_covers_the_graph_packages():
    # Every package named must import and hold source files (a renamed package must not hash to "nothing").
    import importlib
    from pathlib import Path

    for name in loader._GRAPH_SOURCES:
        assert any(Path(importlib.import_module(name).__file__).parent.rglob("*.py")), name
    assert loader._graph_code_digest() == loader._graph_code_digest()


def test_own_exports_use_the_fused_attention(tmp_path, monkeypatch):
    import holitom.export
    from holitom.sources import ModelSource

    monkeypatch.setenv("HOLITOM_CACHE", str(tmp_path / "cache"))
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{}")
    seen = {}

    def fake_export(model, out, config, validator=None):
        seen.update(model=model, out=out, attention=config.attention, validator=validator)

    monkeypatch.setattr(holitom.export, "export_model", fake_export)
    out = loader.ensure_export(ModelSource("checkpoint", checkpoint))
    assert seen == {"model": str(checkpoint), "out": out, "attention": "onnxruntime", "validator": None}
    assert loader.OWN_EXPORT_ATTENTION == "onnxruntime" and out.parent == tmp_path / "cache" / "exports"
