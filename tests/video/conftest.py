"""Generated video files shared by the video tests (no binary fixtures in git)."""

from __future__ import annotations

import numpy as np
import pytest

from holitom.video import make_frames, write_video

FPS = 8.0


@pytest.fixture(scope="session")
def source_frames() -> np.ndarray:
    """40 frames, 96x128, with a scene cut at 24: (40, 96, 128, 3) uint8."""
    return make_frames(40, 96, 128, seed=7, scene_cut_at=24)


@pytest.fixture(scope="session")
def video_files(tmp_path_factory, source_frames) -> dict[str, object]:
    """The same clip as lossy mp4 (container frame count), lossy mkv (no frame count) and lossless mkv."""
    d = tmp_path_factory.mktemp("videos")
    return {
        "mp4": write_video(d / "clip.mp4", source_frames, FPS),
        "mkv": write_video(d / "clip.mkv", source_frames, FPS),
        "lossless": write_video(d / "clip_lossless.mkv", source_frames, FPS, lossless=True),
        "dir": d,
        "fps": FPS,
    }
