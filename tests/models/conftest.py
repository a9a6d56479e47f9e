"""Fixtures for the model tests: tiny random checkpoints saved by transformers (see tiny_llava.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_llava import Checkpoint, write_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def onevision_ckpt(tmp_path_factory) -> Checkpoint:
    """56 px frames (4x4 patch grid -> bilinear 2x2), 3 SigLIP layers, 4 Qwen2 layers with GQA (4 heads, 2 KV heads)."""
    return write_checkpoint(tmp_path_factory.mktemp("onevision"))


@pytest.fixture(scope="session")
def llava_video_ckpt(tmp_path_factory) -> Checkpoint:
    """Like onevision_ckpt with ``holitom_variant: llava_video`` in config.json and a 6x6 grid (-> 3x3)."""
    return write_checkpoint(tmp_path_factory.mktemp("llava_video"), variant="llava_video", image_size=84, seed=1)


@pytest.fixture(scope="session")
def geometry_ckpt(tmp_path_factory) -> Checkpoint:
    """The real SigLIP geometry: 384 px, patch 14 -> 27x27 patches."""
    return write_checkpoint(tmp_path_factory.mktemp("geometry"), image_size=384, vision_layers=2, text_layers=2, seed=2)
