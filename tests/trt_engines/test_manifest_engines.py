"""The manifest's engine fields and the refusal of engines built for another TensorRT or GPU."""

from __future__ import annotations

import shutil

import pytest

from holitom.errors import EngineMismatchError, ManifestError
from holitom.export.manifest import EngineEntry, EngineSet, read_manifest
from holitom.plugins_trt.tensorrt_env import EngineTarget

BUILT = EngineTarget("10.9.0.34", "NVIDIA H200", "9.0")


def _engine_set(files) -> EngineSet:
    return EngineSet(
        target=BUILT,
        plugins="aot",
        profile={"frames": [1, 32, 64]},
        files={f: EngineEntry(f.replace(".onnx", ".engine"), 123, "fp16") for f in files},
    )


def test_engine_fields_round_trip(default_export, default_manifest, tmp_path):
    folder = tmp_path / "export"
    shutil.copytree(default_export, folder)
    manifest = read_manifest(folder)
    assert manifest.engines is None  # a fresh export has none
    manifest.engines = _engine_set([e.file for e in manifest.all_graph_entries()])
    manifest.write(folder)
    again = read_manifest(folder)
    assert again.engines == manifest.engines
    assert again.to_dict()["engines"] == {
        "tensorrt_version": "10.9.0.34", "device_name": "NVIDIA H200", "compute_capability": "9.0", "plugins": "aot",
        "profile": {"frames": [1, 32, 64]}, "files": {k: v.to_dict() for k, v in manifest.engines.files.items()},
    }
    assert not list(folder.glob(".manifest.json*"))  # written by rename


def test_malformed_engine_fields_are_a_manifest_error(default_export, tmp_path):
    import json

    folder = tmp_path / "export"
    shutil.copytree(default_export, folder)
    data = json.loads((folder / "manifest.json").read_text())
    data["engines"] = {"tensorrt_version": "10.9"}
    (folder / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="malformed"):
        read_manifest(folder)


def test_matching_target_is_accepted():
    _engine_set(["a.onnx"]).check_target(EngineTarget("10.9.0.34", "NVIDIA H200", "9.0"), "DIR")


@pytest.mark.parametrize(
    "current, named",
    [
        (EngineTarget("10.8.0.43", "NVIDIA H200", "9.0"), "TensorRT '10.8.0.43' (built for '10.9.0.34')"),
        (EngineTarget("10.9.0.34", "NVIDIA H100 80GB HBM3", "9.0"), "GPU 'NVIDIA H100 80GB HBM3' (built for 'NVIDIA H200')"),
        (EngineTarget("10.9.0.34", "Orin", "8.7"), "compute capability '8.7' (built for '9.0')"),
    ],
)
def test_mismatch_is_refused_naming_it_and_the_fix(current, named):
    with pytest.raises(EngineMismatchError) as info:
        _engine_set(["a.onnx"]).check_target(current, "out/x")
    message = str(info.value)
    assert named in message and "holitom build-engines out/x --force" in message
