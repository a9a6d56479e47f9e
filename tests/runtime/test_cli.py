"""The `holitom` console script, through a subprocess: outputs, --json fields, one-line errors, exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

HOLITOM = [sys.executable, "-m", "holitom.cli"]


def cli(*args, timeout=600):
    return subprocess.run([*HOLITOM, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc, pattern):
    assert proc.returncode == 2, proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    import re

    assert re.search(pattern, lines[0]), lines[0]


def test_presets_lists_the_paper_settings():
    proc = cli("presets")
    assert proc.returncode == 0
    names = [line.split()[0] for line in proc.stdout.splitlines()]
    assert {"none", "r10", "r15", "r20", "r25", "r15-outer"} <= set(names)


def test_run_json_has_every_field(clip_path):
    proc = cli("run", "--model", "default", "--video", clip_path, "--prompt", "What moves?", "--frames", 4, "--max-new-tokens", 3, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) >= {"answer", "tokens", "timings_ms", "decode_tokens_per_s", "backend", "preset"}
    assert set(out["tokens"]) >= {"visual_in", "after_outer", "after_inner"}
    assert set(out["timings_ms"]) >= {"decode_video", "vision", "merge", "prefill", "ttft"}
    assert out["backend"] == "torch" and out["preset"] == "r15"
    assert out["tokens"]["visual_in"] == 4 * 196 > out["tokens"]["after_outer"] > out["tokens"]["after_inner"]


def test_run_samples_what_the_model_was_trained_on_by_default(default_export, clip_path):
    """Without --frames: the embedded model's 8 training frames; any other model LLaVA-OneVision's 32."""
    from holitom.eval.videoqa import NUM_FRAMES
    from holitom.runtime.config import DEFAULT_FRAMES

    for model, frames in (("default", NUM_FRAMES), (default_export, DEFAULT_FRAMES)):
        proc = cli("run", "--model", model, "--video", clip_path, "--prompt", "What moves?", "--max-new-tokens", 1, "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["tokens"]["visual_in"] == frames * 196, model
    assert (NUM_FRAMES, DEFAULT_FRAMES) == (8, 32)


def test_run_onnxruntime_on_an_export(default_export, clip_path):
    proc = cli("run", "--model", default_export, "--backend", "onnxruntime", "--video", clip_path, "--prompt", "What moves?",
               "--frames", 4, "--max-new-tokens", 3, "--no-inner-merge", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["backend"] == "onnxruntime"
    assert out["tokens"]["after_inner"] == out["tokens"]["after_outer"]


def test_demo_asks_a_benchmark_question():
    from holitom.cli import DEMO_ITEM
    from holitom.eval.videoqa import is_correct, make_item

    from holitom.default_model import default_model_training

    proc = cli("demo", "--max-new-tokens", 4, "--json")  # the default 8 frames, what the model was trained on
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    item = make_item(*DEMO_ITEM)
    assert (out["question"], out["expected"]) == (item.prompt, item.answer)
    assert out["model_val_accuracy"] == default_model_training()["val_accuracy"]
    runs = out["runs"]
    assert [r["preset"] for r in runs] == ["none", "r15"]
    assert runs[1]["tokens"]["after_inner"] < runs[0]["tokens"]["after_inner"]
    # The trained default answers its clip right, with and without HoliTom (scored by the benchmark's own rule).
    assert [is_correct(item, r["answer"]) for r in runs] == [True, True], [r["answer"] for r in runs]
    assert [r["correct"] for r in runs] == [True, True]


@pytest.mark.parametrize(
    "args,pattern",
    [
        (["run", "--video", "{clip}", "--prompt", "q", "--preset", "r99"], r"unknown preset 'r99'"),
        (["run", "--video", "{clip}", "--prompt", "q", "--backend", "tensorrtx"], r"unknown backend 'tensorrtx'"),
        (["run", "--video", "{clip}", "--prompt", "<video> <video>"], r"placeholder '<video>' 2 times"),
        (["run", "--video", "{missing}", "--prompt", "q"], r"does not exist|not found|no such"),
        (["run", "--model", "{empty}", "--video", "{clip}", "--prompt", "q"], r"neither config.json"),
        (["run", "--video", "{clip}", "--prompt", "q", "--frames", "0"], r"argument --frames: must be an integer >= 1 and <= 512, got 0"),
        (["export", "--model", "default", "--out", "{existing}"], r"exists.*--force"),
        (["check-ops", "{missing_dir}"], r"export folder '.*missing' does not exist; check the path"),
        (["check-ops", "{empty}"], r"has no manifest.json; it is not a holitom export"),
    ],
)
def test_bad_input_prints_one_line_and_exits_2(tmp_path, clip_path, args, pattern):
    existing = tmp_path / "existing"
    existing.mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    subst = {"{clip}": clip_path, "{missing}": tmp_path / "nope.mp4", "{missing_dir}": tmp_path / "missing", "{empty}": empty, "{existing}": existing}
    proc = cli(*[str(subst.get(a, a)) for a in args])
    assert_one_line_error(proc, pattern)


def test_export_dir_without_manifest_and_truncated_graph(default_export, clip_path, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(default_export, broken)
    (broken / "manifest.json").unlink()
    (broken / "config.json").unlink(missing_ok=True)
    proc = cli("run", "--model", broken, "--backend", "onnxruntime", "--video", clip_path, "--prompt", "q")
    assert_one_line_error(proc, r"neither config.json")
    truncated = tmp_path / "truncated"
    shutil.copytree(default_export, truncated)
    graph = truncated / "decode_step.onnx"
    graph.write_bytes(graph.read_bytes()[:4096])
    proc = cli("run", "--model", truncated, "--backend", "onnxruntime", "--video", clip_path, "--prompt", "q")
    assert_one_line_error(proc, r"decode_step.onnx.*truncated")
