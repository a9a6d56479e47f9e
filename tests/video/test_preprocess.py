"""Preprocessing parity with transformers' LLaVA-OneVision video processor (the oracle).

transformers (and torchvision, which its processor needs) are imported only here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from holitom.default_model import default_model_dir
from holitom.errors import CheckpointError, InputError
from holitom.video import (
    PreprocessorConfigWarning,
    VideoPreprocessConfig,
    VideoPreprocessor,
    clip_from_frames,
    make_frames,
    read_video,
    write_video,
)

from holitom.video.preprocess_np import NumpyVideoPreprocessor
from lean_imports import imported_by  # tests/ helper (tests/conftest.py puts it on sys.path)

transformers = pytest.importorskip("transformers")
pytest.importorskip("torchvision")
from transformers import LlavaOnevisionVideoProcessor  # noqa: E402

PARITY_TOL = 1e-5  # max abs diff on pixel_values (we measure 0.0: same kernels, same op order)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Square and non-square; smaller, equal and larger than 384; odd sizes.
SIZES = [(384, 384), (240, 320), (480, 640), (720, 1280), (100, 100), (385, 383), (37, 51), (500, 200)]


def _reference(frames: np.ndarray, **config) -> torch.Tensor:
    processor = LlavaOnevisionVideoProcessor(**config)
    return processor(videos=[frames], return_tensors="pt")["pixel_values_videos"][0]  # (F, 3, H, W)


# Both preprocessors answer to the same oracle: torch's (the torch backend) and numpy's (the edge runtime).
PREPROCESSORS = {"torch": VideoPreprocessor, "numpy": NumpyVideoPreprocessor}


@pytest.fixture(params=sorted(PREPROCESSORS))
def make_preprocessor(request):
    return PREPROCESSORS[request.param]


def _assert_parity(ours, ref: torch.Tensor) -> None:
    if isinstance(ours, np.ndarray):
        assert ours.flags.c_contiguous
        ours = torch.from_numpy(ours)
    assert ours.shape == ref.shape and ours.dtype == ref.dtype == torch.float32
    err = (ours - ref).abs().max().item()
    assert err <= PARITY_TOL, f"max abs diff {err:.3g} > {PARITY_TOL}"


@pytest.mark.parametrize("height, width", SIZES)
def test_parity_default_llava_onevision_settings(height, width, make_preprocessor):
    frames = make_frames(2, height, width, seed=height + width)
    ref = _reference(frames, size={"height": 384, "width": 384}, resample=3, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    ours = make_preprocessor()(frames)
    assert ours.shape == (2, 3, 384, 384)
    _assert_parity(ours, ref)


@pytest.mark.parametrize("resample", [0, 2, 3])
@pytest.mark.parametrize("height, width", [(240, 320), (500, 200), (100, 100)])
def test_parity_other_resamplers_and_clip_normalisation(resample, height, width, make_preprocessor):
    frames = make_frames(2, height, width, seed=resample)
    ref = _reference(frames, size={"height": 336, "width": 448}, resample=resample, image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    ours = make_preprocessor(VideoPreprocessConfig(height=336, width=448, resample=resample, image_mean=CLIP_MEAN, image_std=CLIP_STD))(frames)
    _assert_parity(ours, ref)


@pytest.mark.parametrize("resample", [2, 3])
def test_parity_on_noise(make_preprocessor, resample):
    # Noise has the strongest high frequencies: the worst case for resampling kernels (and for bicubic's clamping).
    frames = np.random.default_rng(resample).integers(0, 256, (3, 301, 517, 3), dtype=np.uint8)
    _assert_parity(make_preprocessor(VideoPreprocessConfig(resample=resample))(frames), _reference(frames, resample=resample, image_mean=[0.5] * 3, image_std=[0.5] * 3))


@pytest.mark.parametrize("resample", [2, 3])
def test_parity_float_resize_route(monkeypatch, resample):
    # The route torchvision takes on CUDA (and for bilinear on pre-AVX2 CPUs):
    # resize in float32, clamp (bicubic), round, back to uint8. Force it on both
    # sides to check it here without a GPU.
    import torchvision.transforms.v2.functional._geometry as tv_geometry

    from holitom.video import preprocess

    monkeypatch.setattr(tv_geometry, "_do_native_uint8_resize_on_cpu", lambda interpolation: False)
    monkeypatch.setattr(preprocess, "_native_uint8_resize", lambda mode, device: mode == "nearest-exact")
    frames = make_frames(2, 250, 330, seed=9)
    ref = _reference(frames, resample=resample, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    ours = VideoPreprocessor(VideoPreprocessConfig(resample=resample))(frames)
    _assert_parity(ours, ref)
    # And it is a different route: the uint8 kernel gives (slightly) different pixels.
    monkeypatch.undo()
    assert not torch.equal(VideoPreprocessor(VideoPreprocessConfig(resample=resample))(frames), ours)


def test_parity_with_the_default_model_processor(make_preprocessor):
    frames = make_frames(3, 270, 480, seed=4)
    ref_processor = LlavaOnevisionVideoProcessor.from_pretrained(default_model_dir())
    ref = ref_processor(videos=[frames], return_tensors="pt")["pixel_values_videos"][0]
    ours = make_preprocessor.from_pretrained(default_model_dir())
    assert ours.config == VideoPreprocessConfig()  # the shipped config is the LLaVA-OneVision one
    _assert_parity(ours(frames), ref)


def test_file_and_memory_give_identical_pixel_values(tmp_path):
    frames = make_frames(12, 120, 200, seed=5)
    path = write_video(tmp_path / "lossless.mkv", frames, fps=6, lossless=True)
    pre = VideoPreprocessor()
    from_file = pre(read_video(path, 4))
    from_memory = pre(clip_from_frames(frames, num_frames=4))
    assert torch.equal(from_file, from_memory)


def test_input_forms_agree():
    frames = make_frames(2, 60, 90, seed=6)
    pre = VideoPreprocessor()
    expected = pre(frames)
    chw = torch.from_numpy(frames).permute(0, 3, 1, 2)
    assert torch.equal(pre(chw), expected)
    assert torch.equal(pre(chw.float() / 255), expected)  # float in [0, 1] is quantised to the same uint8
    assert torch.equal(pre(clip_from_frames(frames)), expected)
    with pytest.raises(InputError, match="channels"):
        pre(frames[..., :2])


def test_rescale_and_normalize_switches(make_preprocessor):
    frames = make_frames(1, 384, 384, seed=8)  # at the target size: no resize
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    only_rescale = torch.as_tensor(make_preprocessor(VideoPreprocessConfig(do_normalize=False))(frames))
    assert torch.allclose(only_rescale, x / 255, atol=1e-7)
    raw = torch.as_tensor(make_preprocessor(VideoPreprocessConfig(do_normalize=False, do_rescale=False))(frames))
    assert torch.equal(raw, x)
    ref = _reference(frames, do_normalize=False, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    _assert_parity(only_rescale, ref)


@pytest.mark.parametrize("threads", [2, 3])
def test_numpy_preprocessor_gives_the_same_bytes_on_any_number_of_threads(threads):
    # Threads take contiguous runs of frames, each with its own working arrays: the split must not show in the bytes.
    frames = make_frames(5, 250, 330, seed=11)
    one = NumpyVideoPreprocessor(threads=1)(frames)
    many = NumpyVideoPreprocessor(threads=threads)(frames)
    assert np.array_equal(one.view(np.uint32), many.view(np.uint32))
    _assert_parity(many, _reference(frames, image_mean=[0.5] * 3, image_std=[0.5] * 3))


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "2"])
def test_numpy_preprocessor_refuses_bad_thread_counts(threads):
    with pytest.raises(InputError, match="threads"):
        NumpyVideoPreprocessor(threads=threads)


@pytest.mark.parametrize("mode", ["bicubic", "bilinear", "nearest-exact"])
@pytest.mark.parametrize(
    "size, out",
    # up both ways; a strong shrink (weights too fine for float32 sums: the float64 plan) with a stretch; one axis only
    [((301, 517), (384, 384)), ((1000, 30), (17, 400)), ((64, 90), (64, 200)), ((64, 90), (100, 90))],
)
def test_resize_uint8_matches_the_torch_kernel(mode, size, out):
    from holitom.video.preprocess import _native_uint8_resize, _resize_uint8
    from holitom.video.preprocess_np import resize_uint8

    if not _native_uint8_resize(mode, torch.device("cpu")):
        pytest.skip(f"torch resizes {mode} uint8 through float on this CPU, a route the numpy resize does not take")
    frames = np.random.default_rng(sum(size)).integers(0, 256, (3, *size, 3), dtype=np.uint8)
    ref = _resize_uint8(torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(), *out, mode).permute(0, 2, 3, 1).numpy()
    for threads in (1, 2):
        assert np.array_equal(resize_uint8(frames, *out, mode, threads=threads), ref)


# ------------------------------------------------------------ config loading


def _write(path, data) -> None:
    path.write_text(json.dumps(data))


def test_config_lookup_order(tmp_path):
    video = {"size": {"height": 224, "width": 224}, "resample": 2, "image_mean": [0.1, 0.2, 0.3], "image_std": [1, 1, 1]}
    image = {"size": {"height": 336, "width": 336}, "resample": 3}
    _write(tmp_path / "preprocessor_config.json", image)
    assert VideoPreprocessConfig.from_pretrained(tmp_path).height == 336  # image processor as the last resort
    _write(tmp_path / "video_preprocessor_config.json", video)
    cfg = VideoPreprocessConfig.from_pretrained(tmp_path)
    assert (cfg.height, cfg.resample, cfg.image_mean) == (224, 2, (0.1, 0.2, 0.3))
    _write(tmp_path / "processor_config.json", {"video_processor": {"size": {"height": 128, "width": 160}}})
    cfg = VideoPreprocessConfig.from_pretrained(tmp_path)  # transformers 5's nested processor config wins
    assert (cfg.height, cfg.width) == (128, 160)


def test_missing_config_falls_back_with_warning(tmp_path):
    with pytest.warns(PreprocessorConfigWarning, match="LLaVA-OneVision defaults"):
        cfg = VideoPreprocessConfig.from_pretrained(tmp_path)
    assert cfg == VideoPreprocessConfig()
    assert (cfg.height, cfg.width, cfg.resample, cfg.image_mean) == (384, 384, 3, (0.5, 0.5, 0.5))


@pytest.mark.parametrize(
    "data, match",
    [
        ({"size": {"shortest_edge": 384}}, "fixed size"),
        ({"do_center_crop": True}, "do_center_crop"),
        ({"resample": 1}, "lanczos"),
        ({"image_std": [0.5, 0.0, 0.5]}, "image_std"),
        ({"image_mean": [0.5, 0.5]}, "image_mean"),
        ({"image_mean": ["a", 0.5, 0.5]}, "image_mean"),
        ({"size": {"height": "big", "width": 384}}, "invalid value"),
    ],
)
def test_unsupported_configs_are_checkpoint_errors(tmp_path, data, match):
    _write(tmp_path / "video_preprocessor_config.json", data)
    with pytest.raises(CheckpointError, match=match):
        VideoPreprocessor.from_pretrained(tmp_path)


def test_broken_json_and_missing_dir(tmp_path):
    (tmp_path / "video_preprocessor_config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read"):
        VideoPreprocessConfig.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        VideoPreprocessConfig.from_pretrained(tmp_path / "nowhere")


def test_preprocess_imports_neither_torchvision_nor_transformers():
    code = "from holitom.video.preprocess import VideoPreprocessor\nfrom holitom.video import make_frames\nVideoPreprocessor()(make_frames(1, 40, 40))"
    assert imported_by(code, ("torchvision", "transformers")) == []


def test_numpy_preprocessor_imports_no_torch():
    code = "from holitom.video.preprocess_np import NumpyVideoPreprocessor\nfrom holitom.video import make_frames\nNumpyVideoPreprocessor()(make_frames(2, 50, 70))"
    assert imported_by(code, ("torch", "torchvision", "transformers")) == []
