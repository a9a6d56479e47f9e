"""Hostile command lines, one or more per class of failure.

Each must be refused with exit 2, one stderr line naming the real cause, no traceback,
in bounded time, creating nothing (its working directory and its HOLITOM_CACHE stay
as they were). Cases refused while parsing must also be fast: nothing was loaded.

Cases marked ``PROC`` run as real processes (concurrently), which proves what only a
process shows (the exit status, argv bytes that are not UTF-8, stderr holding nothing
else, no hang); the others go through the very same ``holitom.cli.main`` in this
process, which is much faster on a slow machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from holitom.limits import MAX_OPSET, MIN_OPSET

from hostile_helpers import assert_refused, cli_in_process, copy_default_checkpoint, run_cli_cases

FAST_S = 15  # in-process: refused while parsing or by a cheap check, nothing loaded (generous for a shared machine)
# Refused before any allocation: a process that never imported torch stays far below this.
NO_ALLOCATION_MB = 300
RUN = ("run", "--frames", "2", "--max-new-tokens", "2")


def _video(cwd: Path, clip: Path) -> Path:
    target = cwd / "clip.mp4"
    target.write_bytes(clip.read_bytes())
    return target


def _fifo(cwd: Path) -> Path:
    path = cwd / "pipe.mp4"
    os.mkfifo(path)
    return path


def _loop(cwd: Path) -> Path:
    (cwd / "a.mp4").symlink_to(cwd / "b.mp4")
    (cwd / "b.mp4").symlink_to(cwd / "a.mp4")
    return cwd / "a.mp4"


def _broken_checkpoint(cwd: Path, damage) -> Path:
    folder = copy_default_checkpoint(cwd / "ckpt")
    damage(folder)
    return folder


def _write(name: str, text: str):
    return lambda folder: (folder / name).write_text(text)


def _mkdir_with(cwd: Path, name: str, file: str) -> str:
    (cwd / name).mkdir()
    (cwd / name / file).write_text("the user's own work")
    return name


def _remove(*names: str):
    def damage(folder):
        for name in names:
            (folder / name).unlink()

    return damage


def cases(clip: Path) -> dict[str, tuple]:
    """case id -> (setup(cwd) -> argv, env, pattern, max seconds)."""
    v = lambda cwd: _video(cwd, clip)  # noqa: E731
    return {
        # ---- numbers, checked while parsing (nothing allocated, the flag named)
        "demo-frames-0": (lambda cwd: ["demo", "--frames", "0"], None, r"argument --frames: must be an integer >= 1 and <= 512, got 0", FAST_S),
        "demo-frames-huge": (lambda cwd: ["demo", "--frames", "100000"], None, r"argument --frames: .*got 100000", FAST_S),
        "run-frames-text": (lambda cwd: [*RUN[:1], "--video", "x.mp4", "--prompt", "hi", "--frames", "many"], None, r"argument --frames: expected an integer, got 'many'", FAST_S),
        "run-seed-huge": (lambda cwd: [*RUN, "--video", "x.mp4", "--prompt", "hi", "--seed", str(2**70)], None, r"argument --seed: must be an integer >= 0 and <= 9223372036854775807", FAST_S),
        "run-seed-negative": (lambda cwd: [*RUN, "--video", "x.mp4", "--prompt", "hi", "--seed", "-1"], None, r"argument --seed: .*got -1", FAST_S),
        "run-max-new-tokens-0": (lambda cwd: [*RUN[:3], "--max-new-tokens", "0", "--video", "x.mp4", "--prompt", "hi"], None, r"argument --max-new-tokens: must be an integer >= 1", FAST_S),
        "run-top-k-negative": (lambda cwd: [*RUN, "--video", "x.mp4", "--prompt", "hi", "--top-k", "-3"], None, r"argument --top-k", FAST_S),
        "run-unknown-flag": (lambda cwd: [*RUN, "--video", "x.mp4", "--prompt", "hi", "--bogus"], None, r"unrecognized arguments: --bogus", FAST_S),
        "export-opset": (lambda cwd: ["export", "--out", "e", "--opset", "99"], None, rf"argument --opset: must be an integer >= {MIN_OPSET} and <= {MAX_OPSET}", FAST_S),
        "bench-vocab-huge": (lambda cwd: ["bench", "--model", "llava-ov-7b", "--vocab-size", "2000000000"], None, r"argument --vocab-size: must be an integer >= 1 and <= 1048576", FAST_S),
        "bench-frames-0": (lambda cwd: ["bench", "--frames", "0"], None, r"argument --frames", FAST_S),
        "bench-seed-huge": (lambda cwd: ["bench", "--seed", str(2**64)], None, r"argument --seed", FAST_S),
        # ---- values checked by the configs before anything loads
        "run-device-bogus": (lambda cwd: [*RUN, "--video", v(cwd), "--prompt", "hi", "--device", "bogus"], None, r"device 'bogus' is not supported; use 'cpu' or 'cuda'", FAST_S),
        "run-device-meta": (lambda cwd: [*RUN, "--video", v(cwd), "--prompt", "hi", "--device", "meta"], None, r"device 'meta' is not supported", FAST_S),
        "run-temperature-nan": (lambda cwd: [*RUN, "--video", v(cwd), "--prompt", "hi", "--sample", "--temperature", "nan"], None, r"temperature=nan must be a finite number", FAST_S),
        "run-competing-preset-onnxruntime": (
            lambda cwd: [*RUN, "--video", v(cwd), "--prompt", "hi", "--backend", "onnxruntime", "--preset", "pool-r10"], None,
            r"'pool-r10' is a competing method, which runs on the torch backend only; pass --backend torch", FAST_S,
        ),
        "bench-out-is-file": (lambda cwd: (cwd / "results").write_text("keep") and ["bench", "--out", "results", "--frames", "2"], None, r"--out '.*results' exists and is a file, not a folder", FAST_S),
        # ---- prompt text
        "run-prompt-not-utf8": (lambda cwd: [*RUN, "--video", v(cwd), "--prompt", os.fsdecode(b"what \xff?")], None, r"prompt \(--prompt\) is not valid UTF-8 text \(the byte 0xff at character 5\)", FAST_S),
        "run-prompt-too-long": (lambda cwd: [*RUN, "--video", v(cwd), "--prompt", "word " * 9000], None, r"the prompt is \d+ tokens long, but the model's context holds 8192 positions", 60),
        # ---- paths: the message names the real cause
        "run-video-nosuchuser": (lambda cwd: [*RUN, "--video", "~nosuchuser_hostile/x.mp4", "--prompt", "hi"], None, r"no user 'nosuchuser_hostile'", FAST_S),
        "run-video-name-too-long": (lambda cwd: [*RUN, "--video", "x" * 300 + ".mp4", "--prompt", "hi"], None, r"too long for the file system", FAST_S),
        "run-video-symlink-loop": (lambda cwd: [*RUN, "--video", _loop(cwd), "--prompt", "hi"], None, r"symbolic-link loop", FAST_S),
        "run-video-fifo": (lambda cwd: [*RUN, "--video", _fifo(cwd), "--prompt", "hi"], None, r"is a named pipe \(FIFO\), not a file", FAST_S),
        "run-video-dangling-link": (lambda cwd: (cwd / "l.mp4").symlink_to(cwd / "gone.mp4") or [*RUN, "--video", "l.mp4", "--prompt", "hi"], None, r"symbolic link to '.*gone.mp4', which does not exist", FAST_S),
        "run-video-under-a-file": (lambda cwd: (cwd / "f").write_text("x") and [*RUN, "--video", "f/clip.mp4", "--prompt", "hi"], None, r"a part of the path above it is a file", FAST_S),
        "run-model-fifo": (lambda cwd: [*RUN, "--model", _fifo(cwd), "--video", v(cwd), "--prompt", "hi"], None, r"model folder '.*pipe.mp4' is a named pipe \(FIFO\), not a directory", FAST_S),
        "run-model-nosuchuser": (lambda cwd: [*RUN, "--model", "~nosuchuser_hostile/m", "--video", v(cwd), "--prompt", "hi"], None, r"no user 'nosuchuser_hostile'", FAST_S),
        "bench-video-not-a-video": (lambda cwd: (cwd / "bad.mp4").write_text("garbage") and ["bench", "--video", "bad.mp4", "--repeats", "1"], None, r"^holitom bench: error: 'bad.mp4' is not a readable video: FFmpeg could not open it", FAST_S),
        # a path of another flag than --model is named as that flag
        "bench-export-missing": (lambda cwd: ["bench", "--export", "gone", "--repeats", "1"], None, r"--export folder '.*gone' does not exist", FAST_S),
        "eval-export-not-a-model": (lambda cwd: (cwd / "empty").mkdir() or ["eval", "--export", "empty", "--items", "1"], None, r"'.*empty' holds neither config.json .* point --export at one", FAST_S),
        "calibrate-export-dir-missing": (lambda cwd: ["calibrate", "gone", "--out", "o", "--videos", "."], None, r"EXPORT_DIR folder '.*gone' does not exist", FAST_S),
        # ---- broken checkpoint folders
        "ckpt-no-tokenizer": (
            lambda cwd: [*RUN, "--model", _broken_checkpoint(cwd, _remove("tokenizer.json")), "--video", v(cwd), "--prompt", "hi"], None,
            r"has no tokenizer: expected tokenizer.json", FAST_S,
        ),
        "ckpt-tokenizer-not-json": (
            lambda cwd: [*RUN, "--model", _broken_checkpoint(cwd, _write("tokenizer.json", "{not json")), "--video", v(cwd), "--prompt", "hi"], None,
            r"tokenizer.json' is not valid JSON", FAST_S,
        ),
        "ckpt-tokenizer-wrong-schema": (
            lambda cwd: [*RUN, "--model", _broken_checkpoint(cwd, _write("tokenizer.json", json.dumps({"model": {"type": "BPE"}}))), "--video", v(cwd), "--prompt", "hi"], None,
            r"tokenizer.json' is not a tokenizer the tokenizers library can read", FAST_S,
        ),
        "ckpt-tokenizer-config-list": (
            lambda cwd: [*RUN, "--model", _broken_checkpoint(cwd, _write("tokenizer_config.json", "[1]")), "--video", v(cwd), "--prompt", "hi"], None,
            r"tokenizer_config.json' holds a JSON list, expected an object", FAST_S,
        ),
        "ckpt-config-not-json": (
            lambda cwd: [*RUN, "--model", _broken_checkpoint(cwd, _write("config.json", "{")), "--video", v(cwd), "--prompt", "hi"], None,
            r"config.json' is not valid JSON", FAST_S,
        ),
        "ckpt-processor-not-utf8": (
            lambda cwd: [*RUN, "--model", _broken_checkpoint(cwd, lambda f: (f / "processor_config.json").write_bytes(b"\xff\xfe")), "--video", v(cwd), "--prompt", "hi"], None,
            r"processor_config.json' is not UTF-8 text", FAST_S,
        ),
        "ckpt-weights-are-a-fifo": (
            lambda cwd: [*RUN, "--model", _broken_checkpoint(cwd, lambda f: (f / "model.safetensors").unlink() or os.mkfifo(f / "model.safetensors")), "--video", v(cwd), "--prompt", "hi"], None,
            r"model.safetensors' is a named pipe", FAST_S,
        ),
        # ---- output locations, checked before any work
        "export-out-parent-is-file": (lambda cwd: (cwd / "f").write_text("x") and ["export", "--out", "f/e"], None, r"'f/e' cannot be created: .*is a file, not a folder", 60),
        "export-out-is-cwd": (lambda cwd: ["export", "--out", ".", "--force"], None, r"is the working directory or a folder above it", 60),
        "export-force-over-foreign-folder": (
            lambda cwd: ["export", "--out", _mkdir_with(cwd, "mine", "thesis.tex"), "--force"], None,
            r"'mine' exists and is not an earlier output of this command", 60,
        ),
        "cache-env-is-a-file": (
            lambda cwd: (cwd / "cachefile").write_text("x") and [*RUN, "--backend", "onnxruntime", "--video", v(cwd), "--prompt", "hi"],
            {"HOLITOM_CACHE": "cachefile"}, r"HOLITOM_CACHE='cachefile' points at '.*cachefile', which is a file; point HOLITOM_CACHE at a folder", 60,
        ),
    }


# Run as real processes: one or more per class.
PROC = {
    "demo-frames-huge", "run-seed-huge", "bench-vocab-huge", "run-prompt-not-utf8", "run-video-fifo", "run-video-symlink-loop",
    "ckpt-tokenizer-not-json", "export-out-parent-is-file", "cache-env-is-a-file", "bench-out-is-file", "run-device-meta",
}


@pytest.fixture(scope="module")
def process_results(tmp_path_factory, tiny_clip):
    root = tmp_path_factory.mktemp("hostile_cli")
    table = cases(tiny_clip)
    # Each case gets a HOLITOM_CACHE inside its own folder (absent): a refused command must not create it.
    runs = {k: (setup, {"HOLITOM_CACHE": ".holitom-cache", **(env or {})}) for k, (setup, env, _, _) in table.items() if k in PROC}
    return run_cli_cases(runs, root)


CASE_IDS = list(cases(Path("unused")))


# The range checks come before the allocation they guard (92 GiB of frames, 7 TB of embedding).
BEFORE_ALLOCATION = {"demo-frames-huge", "bench-vocab-huge", "run-seed-huge"}


@pytest.mark.parametrize("case", sorted(PROC))
def test_refused_as_a_process(process_results, tiny_clip, case):
    _, _, pattern, _ = cases(tiny_clip)[case]
    result = process_results[case]
    # Time is bounded by the subprocess timeout (a hang is killed and fails here): wall time on a shared machine says little.
    assert_refused(result, pattern)
    if case in BEFORE_ALLOCATION:
        assert not result.imported_torch and result.max_rss_mb < NO_ALLOCATION_MB, (result.imported_torch, result.max_rss_mb)


@pytest.mark.parametrize("case", [c for c in CASE_IDS if c not in PROC])
def test_refused_in_process(tiny_clip, tmp_path, capsys, monkeypatch, case):
    setup, env, pattern, seconds = cases(tiny_clip)[case]
    args = setup(tmp_path)
    result = cli_in_process(*args, cwd=tmp_path, env={"HOLITOM_CACHE": ".holitom-cache", **(env or {})}, capsys=capsys, monkeypatch=monkeypatch)
    assert_refused(result, pattern, max_seconds=seconds)


def test_there_are_enough_cases():
    assert len(CASE_IDS) >= 35 and PROC <= set(CASE_IDS)
