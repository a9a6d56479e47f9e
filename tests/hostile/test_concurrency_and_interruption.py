"""Real processes racing and being stopped: concurrent exports, the shared export cache, SIGTERM / SIGINT / SIGKILL.

These are the slow cases of the suite: the processes of one fixture run at the same
time. The two exports to one --out are complete CLI exports; the two runs filling the
cache take their graphs from that export instead of tracing them again (the cache's
fill protocol is what they race on, and tracing costs half a minute per process here).
"""

from __future__ import annotations

import os
import signal
import stat
import sys
import time

import pytest
from hostile_helpers import CLI_TIMEOUT_S, EXPORT, finish, snapshot, spawn, staging_folders

from holitom.export.manifest import read_manifest
from holitom.paths import remove_stale_staging


def test_two_exports_to_the_same_out_resolve_cleanly(concurrent_exports):
    root, exports = concurrent_exports
    codes = sorted(code for code, _ in exports)
    assert codes in ([0, 0], [0, 2]), exports  # both, or the later one refused as "appeared meanwhile"
    for code, err in exports:
        assert "Traceback" not in err
        if code == 2:
            assert err.strip().splitlines()[-1].startswith("holitom export: error: output folder") and "appeared" in err, err
    read_manifest(root / "shared")  # one complete export, every file's digest checked
    assert not staging_folders(root, "shared") and not list(root.glob(".shared.old-*"))


def test_two_processes_fill_the_export_cache_at_once(concurrent_cache_runs):
    cache, _, runs = concurrent_cache_runs
    for code, err in runs:
        assert code == 0 and "Traceback" not in err, err
    entries = list((cache / "exports").iterdir())
    assert len(entries) == 1, entries  # one entry; no staging or discarded folders left
    read_manifest(entries[0])


def test_export_folders_respect_the_umask(concurrent_exports):
    root, _ = concurrent_exports
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE((root / "shared").stat().st_mode) == 0o777 & ~mask  # not mkdtemp's 0700


@pytest.fixture(scope="module")
def stopped_exports(tmp_path_factory, hostile_cache):
    """Three exports, each stopped by one signal once its staging folder exists."""
    out = {}
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
        cwd = tmp_path_factory.mktemp(f"stopped_{sig.name}")
        out[sig] = (cwd, spawn([sys.executable, "-m", "holitom.cli", *EXPORT, "--out", "e"], cwd, {"HOLITOM_CACHE": str(hostile_cache)}))
    deadline = time.monotonic() + CLI_TIMEOUT_S * 2
    pending = dict(out)
    while pending and time.monotonic() < deadline:
        for sig, (cwd, proc) in list(pending.items()):
            if staging_folders(cwd, "e"):
                time.sleep(0.5)
                proc.send_signal(sig)
                del pending[sig]
            elif proc.poll() is not None:
                pytest.fail(f"export ended before it could be stopped: {proc.communicate()}")
        time.sleep(0.2)
    assert not pending, "no staging folder appeared"
    return {sig: (cwd, *finish(proc)) for sig, (cwd, proc) in out.items()}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_remove_the_staging_folder(stopped_exports, sig):
    cwd, code, err = stopped_exports[sig]
    assert code == 128 + sig, (code, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == [f"holitom export: interrupted by {sig.name}; partial output was removed"], err
    assert snapshot(cwd) == {}  # no output, no staging folder


def test_a_killed_exports_staging_folder_is_cleaned_by_the_next(stopped_exports):
    cwd, code, _ = stopped_exports[signal.SIGKILL]
    assert code == -signal.SIGKILL
    stale = staging_folders(cwd, "e")
    assert len(stale) == 1 and not (cwd / "e").exists()  # left behind, never mistaken for a result
    time.sleep(2.1)  # past the grace period between a staging folder's mkdir and its owner's lock
    assert remove_stale_staging(cwd / "e") == stale  # what the next export into the same place does first
    assert snapshot(cwd) == {}
