"""One export of the embedded default model with every paper preset (what `holitom export --model default` writes)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def default_export(tmp_path_factory) -> Path:
    from holitom.export import ExportConfig, export_model

    out = tmp_path_factory.mktemp("trt") / "default-export"
    # The graphs are what these tests read; their numerics are validated by the export tests.
    export_model("default", out, ExportConfig(num_frames=2, progress=False))  # no validator: not validated
    return out


@pytest.fixture(scope="session")
def default_manifest(default_export):
    from holitom.export.manifest import read_manifest

    return read_manifest(default_export)
