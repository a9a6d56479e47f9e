"""The validation layers in-process: paths, output locations, HOLITOM_CACHE, staging folders, the context length.

The CLI path of each class is proven by a process case in test_cli_refusals.py; here the
layer itself is held to every variant of its class, including the ones a root user
cannot produce on disk (permissions), by making the OS answer as it would for anyone else.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path

import pytest
from hostile_helpers import cli, copy_default_checkpoint

from holitom.errors import CheckpointError, ConfigError, InputError, OutputError, VideoError
from holitom.paths import STAGING_INFIX, cache_root, check_output_dir, check_writable_dir, existing_path, move_into_place, remove_stale_staging, staged_output


def _deny(monkeypatch, path: Path, mode: int) -> None:
    """os.access answers 'no' for ``path`` and ``mode`` bits, as it would for a user without that permission."""
    real = os.access

    def access(p, m, *args, **kwargs):
        if Path(p) == path and m & mode:
            return False
        return real(p, m, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


# ---- paths the user names


def test_an_unreadable_file_is_named_as_unreadable_not_as_a_bad_video(tmp_path, monkeypatch, tiny_clip):
    from holitom.video import read_video

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(tiny_clip.read_bytes())
    _deny(monkeypatch, clip, os.R_OK)
    with pytest.raises(VideoError, match=r"is not readable by this user \(permission denied\)") as info:
        read_video(clip, 2)
    assert "re-encode" not in str(info.value)


def test_permission_denied_above_a_path_is_named(tmp_path, monkeypatch):
    real = Path.stat

    def stat_(self, *args, **kwargs):
        if self == tmp_path / "locked" / "clip.mp4":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat_)
    with pytest.raises(VideoError, match=r"permission denied on it or on a folder above it"):
        existing_path(tmp_path / "locked" / "clip.mp4", "video file", "file", VideoError)


def test_a_directory_given_as_a_file_and_a_file_given_as_a_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(VideoError, match=r"is a directory, not a file"):
        existing_path(tmp_path, "video file", "file", VideoError)
    with pytest.raises(CheckpointError, match=r"is a file, not a directory"):
        existing_path(tmp_path / "f", "model folder", "dir", CheckpointError)


def test_a_path_with_a_nul_byte_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"contains a NUL character"):
        existing_path("clip\x00.mp4", "video")


def test_an_unreadable_checkpoint_file_is_named(tmp_path, monkeypatch):
    from holitom.sources import resolve_source

    folder = copy_default_checkpoint(tmp_path / "ckpt")
    _deny(monkeypatch, folder / "model.safetensors", os.R_OK)
    with pytest.raises(CheckpointError, match=r"model.safetensors' is not readable by this user"):
        resolve_source(folder)


def test_a_checkpoint_with_only_slow_tokenizer_files_is_accepted_if_complete(tmp_path):
    from holitom.models.checkpoint import check_tokenizer_files

    folder = tmp_path / "ckpt"
    folder.mkdir()
    with pytest.raises(CheckpointError, match=r"has no tokenizer"):
        check_tokenizer_files(folder)
    (folder / "vocab.json").write_text("{}")
    (folder / "merges.txt").write_text("")
    check_tokenizer_files(folder)


# ---- output locations, checked before any work


def test_a_read_only_parent_is_refused_before_work(tmp_path, monkeypatch):
    _deny(monkeypatch, tmp_path, os.W_OK)
    with pytest.raises(OutputError, match=r"the folder '.*' is not writable by this user"):
        check_output_dir(tmp_path / "new" / "e", "output folder")
    assert not (tmp_path / "new").exists()


def test_an_existing_out_needs_force_and_force_replaces_only_exports(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "manifest.json").write_text("{}")
    is_export = lambda p: (p / "manifest.json").is_file()  # noqa: E731
    with pytest.raises(OutputError, match=r"exists; choose another path or pass --force"):
        check_output_dir(tmp_path / "old", "output folder", replaceable=is_export)
    assert check_output_dir(tmp_path / "old", "output folder", replace=True, replaceable=is_export) == tmp_path / "old"
    (tmp_path / "empty").mkdir()
    assert check_output_dir(tmp_path / "empty", "output folder", replace=True, replaceable=is_export)  # nothing to lose


@pytest.mark.parametrize("where", ["/", "~"])
def test_the_root_and_home_folders_are_never_outputs(where):
    with pytest.raises(OutputError, match=r"file-system root or the home folder"):
        check_output_dir(where, "output folder", replace=True)


def test_bench_out_must_be_a_writable_folder(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match=r"exists and is a file, not a folder"):
        check_writable_dir(tmp_path / "f", "--out")
    _deny(monkeypatch, tmp_path, os.W_OK)
    with pytest.raises(OutputError, match=r"is not writable by this user"):
        check_writable_dir(tmp_path, "--out")


# ---- HOLITOM_CACHE


def test_an_empty_holitom_cache_means_unset_not_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOLITOM_CACHE", "")
    assert cache_root() == Path.home() / ".cache" / "holitom"
    monkeypatch.setenv("HOLITOM_CACHE", "rel")
    assert cache_root() == tmp_path / "rel"  # what was asked, made absolute; nothing created yet
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_or_impossible_holitom_cache_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("HOLITOM_CACHE", str(tmp_path))
    _deny(monkeypatch, tmp_path, os.W_OK)
    with pytest.raises(ConfigError, match=r"HOLITOM_CACHE='.*' points at '.*', which is not writable by this user"):
        cache_root()
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("HOLITOM_CACHE", str(tmp_path / "f" / "cache"))
    with pytest.raises(ConfigError, match=r"HOLITOM_CACHE='.*' cannot be used: a part of the path above it is a file, not a folder"):
        cache_root()
    monkeypatch.setenv("HOLITOM_CACHE", "~nosuchuser_hostile/cache")
    with pytest.raises(ConfigError, match=r"no user 'nosuchuser_hostile'"):
        cache_root()


# ---- staging folders


def test_staging_respects_the_umask_and_is_removed_on_failure(tmp_path):
    old = os.umask(0o027)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            with staged_output(tmp_path / "out", "output folder") as tmp:
                assert stat.S_IMODE(tmp.stat().st_mode) == 0o750
                raise RuntimeError("boom")
        with staged_output(tmp_path / "out", "output folder") as tmp:
            (tmp / "a").write_text("x")
            assert move_into_place(tmp, tmp_path / "out", False, "output folder")
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o750
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a"]  # no lock file in the result


def test_a_live_staging_folder_is_left_alone_and_a_dead_ones_is_removed(tmp_path):
    import fcntl

    folder = tmp_path / f".out{STAGING_INFIX}abcd1234"
    folder.mkdir()
    lock = folder / ".holitom-staging.lock"
    lock.write_text("")
    past = time.time() - 60
    os.utime(lock, (past, past))
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a live owner (another open file description: flock conflicts even in-process)
        assert remove_stale_staging(tmp_path / "out") == [] and folder.exists()
    finally:
        os.close(fd)  # the owner dies
    assert remove_stale_staging(tmp_path / "out") == [folder] and not folder.exists()


def test_a_staging_folder_being_created_is_not_mistaken_for_a_stale_one(tmp_path):
    folder = tmp_path / f".out{STAGING_INFIX}abcd1234"
    folder.mkdir()  # mkdir done, lock not yet taken
    assert remove_stale_staging(tmp_path / "out") == [] and folder.exists()


def test_another_processes_finished_copy_is_kept_for_a_shared_cache_entry(tmp_path):
    out = tmp_path / "entry"
    out.mkdir()
    (out / "theirs").write_text("x")
    with staged_output(out, "cache entry") as tmp:
        (tmp / "ours").write_text("y")
        assert move_into_place(tmp, out, False, "cache entry", keep_existing=True) is False
    assert [p.name for p in tmp_path.iterdir()] == ["entry"] and [p.name for p in out.iterdir()] == ["theirs"]


# ---- the model's context length


@pytest.fixture(scope="module")
def short_context_checkpoint(tmp_path_factory) -> Path:
    return copy_default_checkpoint(tmp_path_factory.mktemp("short_ctx") / "ckpt", max_position_embeddings=256)


def test_max_new_tokens_is_bounded_by_the_context_and_says_so(short_context_checkpoint, tiny_clip, tmp_path):
    import json

    result = cli(
        "run", "--model", short_context_checkpoint, "--video", tiny_clip, "--prompt", "What moves?", "--frames", "2",
        "--max-new-tokens", "1000000000", "--json", cwd=tmp_path,
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr_lines
    assert len(lines) == 1 and lines[0].startswith("holitom run: warning: max_new_tokens=1000000000 does not fit: the prompt takes"), lines
    out = json.loads(result.stdout)
    assert len(out["token_ids"]) <= 256 - out["tokens"]["prompt"] + 1
    assert out["stop_reason"] in ("context_length", "stop_token")


def test_a_video_that_does_not_fit_the_context_is_refused_before_the_prefill(short_context_checkpoint, tiny_clip):
    from holitom.runtime import GenerationConfig, RuntimeConfig, load_pipeline

    with load_pipeline(short_context_checkpoint, RuntimeConfig(preset="none", num_frames=2)) as pipe:
        with pytest.raises(InputError, match=r"need \d+ positions, but the model's context holds 256; use fewer --frames"):
            pipe.run(tiny_clip, "What moves?", 2, GenerationConfig(max_new_tokens=2))


def test_a_prompt_longer_than_the_context_is_refused_before_the_video_is_read(short_context_checkpoint, tmp_path):
    from holitom.runtime import RuntimeConfig, load_pipeline

    with load_pipeline(short_context_checkpoint, RuntimeConfig(num_frames=2)) as pipe:
        # The video does not exist: the prompt is refused first, so it is never opened.
        with pytest.raises(InputError, match=r"the prompt is \d+ tokens long, but the model's context holds 256 positions"):
            pipe.run(tmp_path / "never_read.mp4", "word " * 300, 2)


def test_a_prompt_that_is_not_utf8_is_refused_by_the_api_too():
    from holitom.prompting import build_video_prompt

    with pytest.raises(InputError, match=r"the prompt is not valid UTF-8 text \(the byte 0xfe at character 2\)"):
        build_video_prompt(object(), "ab\udcfe")


# ---- repository hygiene


def test_no_command_writes_into_the_working_directory(concurrent_exports, concurrent_cache_runs):
    # Exports and onnxruntime runs (with a cache fill) ran in these working directories.
    root, _ = concurrent_exports
    _, cwd, _ = concurrent_cache_runs
    assert sorted(p.name for p in root.iterdir()) == ["shared"]  # no profiler dumps, reports or caches
    assert list(cwd.iterdir()) == []
