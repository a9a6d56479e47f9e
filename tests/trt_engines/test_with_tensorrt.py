"""End to end on a TensorRT machine: build engines for the default export, run them, compare them.

Skipped here (TensorRT cannot be installed on this project's machines); on a machine with
TensorRT, polygraphy and a CUDA device these are the checks that the engines match onnxruntime.
"""

from __future__ import annotations

import importlib.util
import shutil

import pytest

pytestmark = [
    pytest.mark.tensorrt,
    pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="TensorRT is not installed (it cannot be on this project's machines)"),
    pytest.mark.skipif(importlib.util.find_spec("polygraphy") is None, reason="polygraphy is not installed"),
]


@pytest.fixture(scope="module")
def engine_export(default_export, tmp_path_factory):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from holitom.export.engines import ProfileConfig, build_engines

    folder = tmp_path_factory.mktemp("engines") / "export"
    shutil.copytree(default_export, folder)
    # fp32 and the local functions: the engines must then reproduce onnxruntime's greedy tokens exactly.
    build_engines(folder, precision="fp32", plugins="none", config=ProfileConfig(opt_frames=8, max_frames=16), progress=False)
    return folder


@pytest.mark.parametrize("preset", ["none", "r15"])
def test_tensorrt_matches_onnxruntime_greedy_tokens(engine_export, preset, tmp_path):
    from holitom.runtime import GenerationConfig, RuntimeConfig, load_pipeline
    from holitom.video.synthetic import make_frames, write_video

    clip = tmp_path / "clip.mp4"
    write_video(clip, make_frames(16, 256, 320, seed=0, scene_cut_at=8), fps=8)
    tokens = {}
    for backend, device in (("onnxruntime", "cpu"), ("tensorrt", "cuda")):
        with load_pipeline(engine_export, RuntimeConfig(backend=backend, preset=preset, device=device, num_frames=8)) as pipe:
            tokens[backend] = pipe.run(clip, "What moves?", 8, GenerationConfig(max_new_tokens=8)).token_ids
    assert tokens["tensorrt"] == tokens["onnxruntime"]


def test_polygraphy_comparison_passes(engine_export):
    from holitom.runtime.backends.tensorrt.compare import compare_engines

    assert compare_engines(engine_export, "r15", num_frames=8)
