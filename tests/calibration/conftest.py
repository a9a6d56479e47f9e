"""Fixtures of the calibration tests: a tiny LLaVA-Video checkpoint (112 px, 16 tokens per frame), its
float32 export, a folder of generated clips and one quantized export, built once per session."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

FRAMES = 4
PRESETS = ("none", "r10")


def _runtime_fixtures():
    # The tiny checkpoint is defined once, in the runtime tests' conftest; load that file under another name.
    path = Path(__file__).resolve().parents[1] / "runtime" / "conftest.py"
    spec = importlib.util.spec_from_file_location("runtime_test_fixtures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def clip_frames() -> int:
    return FRAMES


@pytest.fixture(scope="session")
def float_export(tmp_path_factory) -> Path:
    from holitom.export import ExportConfig, export_model

    ckpt = _runtime_fixtures().make_llava_video_checkpoint(tmp_path_factory.mktemp("calib_ckpt"))
    out = tmp_path_factory.mktemp("calib_exports") / "float32"
    export_model(str(ckpt), out, ExportConfig(num_frames=FRAMES, presets=PRESETS, progress=False))
    return out


@pytest.fixture(scope="session")
def video_folder(tmp_path_factory) -> Path:
    from holitom.video import make_frames, write_video

    folder = tmp_path_factory.mktemp("calib_videos")
    (folder / "nested").mkdir()
    for seed, where in ((0, folder), (1, folder), (2, folder / "nested")):
        write_video(where / f"clip{seed}.mp4", make_frames(12, 96, 128, seed=seed, scene_cut_at=6), fps=8)
    (folder / "notes.txt").write_text("not a video\n")
    return folder


@pytest.fixture(scope="session")
def int8_result(float_export, video_folder, tmp_path_factory):
    from holitom.calibration import CalibrationConfig, calibrate_export

    config = CalibrationConfig(videos=video_folder, calibration_frames=10, frames_per_clip=FRAMES, report_tokens=3, progress=False)
    return calibrate_export(float_export, tmp_path_factory.mktemp("calib_out") / "int8", config)


@pytest.fixture(scope="session")
def float_recording(float_export, video_folder):
    """The float32 export's pipeline run on the first two clips, every graph's calls recorded."""
    from holitom.calibration.data import find_videos, record_pipeline

    return record_pipeline(float_export, find_videos(video_folder)[:2], FRAMES, "r10", 2, False, "record")
