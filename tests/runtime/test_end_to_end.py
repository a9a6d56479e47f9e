"""End to end: the torch and onnxruntime backends give identical greedy tokens, per model and merge setting."""

from __future__ import annotations

import pytest

from holitom import contracts as C
from holitom.export.manifest import read_manifest
from holitom.runtime import GenerationConfig, RuntimeConfig, load_pipeline

# (preset, inner_merge): vanilla, HoliTom outer merge only, full HoliTom.
SETTINGS = [("none", True), ("r15", False), ("r15", True)]
FRAMES = 6


def _run(model, backend, preset, inner, clip, prompt="What is moving? <video> Answer briefly."):
    config = RuntimeConfig(backend=backend, preset=preset, inner_merge=inner, num_frames=FRAMES)
    with load_pipeline(model, config) as pipe:
        return pipe.run(clip, prompt, FRAMES, GenerationConfig(max_new_tokens=6))


@pytest.mark.parametrize("preset,inner", SETTINGS)
def test_default_model_backends_agree(default_export, clip_path, preset, inner):
    ref = _run("default", "torch", preset, inner, clip_path)
    got = _run(default_export, "onnxruntime", preset, inner, clip_path)
    assert got.token_ids == ref.token_ids
    assert got.tokens == ref.tokens
    assert len(ref.token_ids) == 6 or ref.stop_reason == "stop_token"


@pytest.mark.parametrize("preset,inner", SETTINGS)
def test_llava_video_variant_backends_agree(llava_video_checkpoint, llava_video_export, clip_path, preset, inner):
    ref = _run(llava_video_checkpoint, "torch", preset, inner, clip_path)
    got = _run(llava_video_export, "onnxruntime", preset, inner, clip_path)
    assert got.token_ids == ref.token_ids
    assert got.tokens == ref.tokens


def test_token_counts_follow_the_merge(default_export, clip_path):
    vanilla = _run(default_export, "onnxruntime", "none", True, clip_path)
    outer = _run(default_export, "onnxruntime", "r15", False, clip_path)
    full = _run(default_export, "onnxruntime", "r15", True, clip_path)
    per_frame = 196
    assert vanilla.tokens.visual_in == FRAMES * per_frame
    assert vanilla.tokens.after_outer == FRAMES * per_frame + 1  # one newline after the video (LLaVA-OneVision)
    assert vanilla.tokens.after_inner == vanilla.tokens.after_outer
    assert outer.tokens.after_outer < 0.3 * vanilla.tokens.after_outer
    assert outer.tokens.after_inner == outer.tokens.after_outer
    n = full.tokens.after_outer
    assert full.tokens.after_inner == n - (n - round(n * 0.5))  # R = 0.5 keeps round(n * (1 - R))


def test_llava_video_layout_has_a_newline_per_row(llava_video_checkpoint, clip_path):
    vanilla = _run(llava_video_checkpoint, "torch", "none", True, clip_path)
    assert vanilla.tokens.visual_in == FRAMES * 16
    assert vanilla.tokens.after_outer == FRAMES * (16 + 4)  # 4x4 grid, a newline after each of the 4 rows


@pytest.mark.parametrize("fixture", ["default_export", "llava_video_export"])
def test_export_validation_report_covers_every_stage(request, fixture):
    manifest = read_manifest(request.getfixturevalue(fixture))
    outputs = manifest.validation["outputs"]
    assert outputs and all(o["passed"] and o["max_abs_error"] <= o["tolerance"] for o in outputs)
    stages = {o["stage"].split("[")[0] for o in outputs}
    assert stages == set(C.STAGE_ORDER)
    merged = {o["stage"] for o in outputs if o["stage"].startswith(C.OUTER_MERGE)}
    assert merged == {f"{C.OUTER_MERGE}[none]", f"{C.OUTER_MERGE}[r15]"}


def test_sampling_is_seeded_and_backend_independent(default_export, clip_path):
    gen = GenerationConfig(max_new_tokens=5, do_sample=True, temperature=0.8, top_p=0.9, seed=3)

    def sample(model, backend):
        with load_pipeline(model, RuntimeConfig(backend=backend, preset="r15", num_frames=FRAMES)) as pipe:
            return pipe.run(clip_path, "Describe it.", FRAMES, gen).token_ids

    first = sample("default", "torch")
    assert sample("default", "torch") == first
    assert sample(default_export, "onnxruntime") == first


def test_streaming_callback_receives_the_answer(clip_path):
    pieces = []
    with load_pipeline("default", RuntimeConfig(preset="r15", num_frames=FRAMES)) as pipe:
        result = pipe.run(clip_path, "Describe it.", FRAMES, GenerationConfig(max_new_tokens=6), on_text=pieces.append)
    assert "".join(pieces).strip() == result.answer
    assert set(result.timings_ms) >= {"decode_video", "vision", "merge", "prefill", "ttft", "decode"}
    assert result.timings_ms["ttft"] >= result.timings_ms["vision"] > 0


def test_in_memory_frames_match_the_file(clip_path):
    from holitom.video import read_video

    frames = read_video(clip_path, FRAMES).frames
    with load_pipeline("default", RuntimeConfig(preset="r15", num_frames=FRAMES)) as pipe:
        a = pipe.run(clip_path, "Describe it.", FRAMES, GenerationConfig(max_new_tokens=4))
        b = pipe.run(frames, "Describe it.", FRAMES, GenerationConfig(max_new_tokens=4))
    assert a.token_ids == b.token_ids and a.tokens == b.tokens


# EVS keeps frame 0 whole, so it needs r >= 1/F: r = 0.25 at 6 frames (r = 0.10 is refused, see test_baselines).
@pytest.mark.parametrize("preset,r", [("pool-r10", 0.10), ("topk-r10", 0.10), ("evs-r25", 0.25), ("fastv-r10", 0.10)])
def test_competing_methods_run_on_the_torch_backend(clip_path, preset, r):
    result = _run("default", "torch", preset, True, clip_path)
    t = result.tokens
    budget = round(r * FRAMES * 196)
    if preset.startswith("fastv"):
        assert t.after_outer == FRAMES * 196 + 1 and t.after_inner == round(t.after_outer * r)
    elif preset.startswith("pool"):  # pooled grids only approximate the budget (4x5 cells of 14x14)
        assert t.after_outer == FRAMES * 20 + 1 and t.after_inner == t.after_outer
    else:
        assert t.after_outer == budget + 1 and t.after_inner == t.after_outer


def test_competing_methods_are_not_exported():
    from holitom.errors import ConfigError
    from holitom.export import ExportConfig

    with pytest.raises(ConfigError, match="competing method, which runs on the torch backend only"):
        ExportConfig(presets=("topk-r10",))
