"""Fixtures of the hostile-input suite; its helpers live in hostile_helpers.py (put on sys.path here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from hostile_helpers import CACHE_DRIVER, EXPORT, finish, spawn  # noqa: E402


@pytest.fixture(scope="session")
def hostile_cache(tmp_path_factory) -> Path:
    """A private HOLITOM_CACHE for the suite (never the user's ~/.cache)."""
    return tmp_path_factory.mktemp("hostile_cache")


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    from holitom.video import make_frames, write_video

    path = tmp_path_factory.mktemp("hostile_clip") / "clip.mp4"
    return write_video(path, make_frames(6, 64, 80, seed=3), fps=6)


@pytest.fixture(scope="session")
def concurrent_exports(tmp_path_factory, hostile_cache):
    """Two complete CLI exports of the default model to the same --out, at once. (root, [(code, stderr)] * 2)"""
    root = tmp_path_factory.mktemp("concurrent")
    exports = [spawn([sys.executable, "-m", "holitom.cli", *EXPORT, "--out", "shared"], root, {"HOLITOM_CACHE": str(hostile_cache)}) for _ in range(2)]
    return root, [finish(p) for p in exports]


@pytest.fixture(scope="session")
def concurrent_cache_runs(concurrent_exports, tmp_path_factory, tiny_clip):
    """Two `holitom run --backend onnxruntime --model default` filling one empty cache entry at once.

    Returns (cache, working directory, [(code, stderr)] * 2).
    """
    root, _ = concurrent_exports
    cache = tmp_path_factory.mktemp("concurrent_cache")
    cwd = tmp_path_factory.mktemp("concurrent_cwd")
    run = ["run", "--backend", "onnxruntime", "--preset", "none", "--video", str(tiny_clip), "--prompt", "What moves?", "--frames", "2", "--max-new-tokens", "2", "--json"]
    env = {"HOLITOM_CACHE": str(cache), "HOSTILE_GRAPHS": str(root / "shared")}
    runs = [spawn([sys.executable, "-c", CACHE_DRIVER, *run], cwd, env) for _ in range(2)]
    return cache, cwd, [finish(p) for p in runs]
