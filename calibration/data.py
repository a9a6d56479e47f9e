"""Calibration data: what the runtime feeds each graph, recorded from the float32 export's own pipeline.

Every calibration clip is answered once by the float32 export through the
onnxruntime backend (``holitom run``'s path: decode, uniform sampling,
preprocessing, vision, outer merge, splicing, decoder, decode loop), with a
recorder around each graph's runner. The vision encoder's recorded
``pixel_values`` are its calibration batches, and the decoder graphs' recorded
feeds (the real spliced sequences after the outer merge, and the KV caches of
the decode steps) validate their weight-only quantization. Nothing here
preprocesses a frame itself: there is one preprocessing, the runtime's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from holitom import contracts as C
from holitom.errors import InputError
from holitom.runtime.validate import RecordingRunner, as_torch

from holitom.calibration.config import VIDEO_SUFFIXES

# The question asked about every calibration clip (its answer is what end-to-end agreement compares).
PROMPT = "Describe what happens in the video."
# Decode steps recorded per clip for the decode_step graph's validation.
_DECODE_STEPS_KEPT = 2


def find_videos(folder: Path) -> list[Path]:
    """Video files under ``folder`` (recursively, by suffix), sorted by path; InputError when there are none."""
    from holitom.paths import existing_path

    folder = existing_path(folder, "calibration video folder (--videos)", want="dir", error=InputError)
    videos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if not videos:
        raise InputError(
            f"the calibration video folder '{folder}' holds no video files ({', '.join(VIDEO_SUFFIXES)}); put a few clips "
            "like the ones the model will see there, or point --videos at another folder."
        )
    return videos


@dataclass
class ClipRecord:
    """One calibration clip as the runtime ran it: each graph's feeds and outputs, and the greedy answer."""

    video: Path
    calls: dict[str, list[tuple[dict, dict]]]  # stage -> [(feed, outputs)] in call order
    token_ids: list[int]

    @property
    def pixel_values(self) -> torch.Tensor:
        return self.calls[C.VISION][0][0]["pixel_values"]  # (F, 3, H, W)


@dataclass
class Recording:
    clips: list[ClipRecord] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return sum(int(c.pixel_values.shape[0]) for c in self.clips)

    def feeds(self, stage: str) -> list[dict]:
        return [feed for clip in self.clips for feed, _ in clip.calls.get(stage, [])]


def record_pipeline(export_dir: Path, videos: list[Path], num_frames: int, preset: str, max_new_tokens: int, progress: bool, desc: str) -> Recording:
    """Run the export in ``export_dir`` (onnxruntime backend) on each video; record every graph's calls."""
    from tqdm.auto import tqdm

    from holitom.runtime import GenerationConfig, RuntimeConfig, load_pipeline

    pipe = load_pipeline(export_dir, RuntimeConfig(backend="onnxruntime", preset=preset, num_frames=num_frames))
    keep = {C.VISION: 1, C.DECODER_HEAD: 1, C.DECODER_TAIL: 1, C.DECODE_STEP: _DECODE_STEPS_KEPT}
    recorders = {stage: RecordingRunner(pipe.stages.runners[stage], n) for stage, n in keep.items()}
    pipe.stages.runners = {**pipe.stages.runners, **recorders}
    recording = Recording()
    generation = GenerationConfig(max_new_tokens=max_new_tokens)
    with pipe, tqdm(total=len(videos) * num_frames, desc=desc, unit="frame", disable=None if progress else True) as bar:
        for video in videos:
            result = pipe.run(video, PROMPT, num_frames, generation)
            calls = {s: [(as_torch(feed), as_torch(out)) for feed, out in r.calls] for s, r in recorders.items()}
            recording.clips.append(ClipRecord(video, calls, list(result.token_ids)))
            for r in recorders.values():  # the next clip's first calls
                r.calls = []
            bar.update(num_frames)
    return recording


class FrameBatches:
    """onnxruntime.quantization's CalibrationDataReader over the recorded vision feeds: one clip per batch,
    at most ``limit`` frames in all (the last clip is cut to fit)."""

    def __init__(self, recording: Recording, limit: int, progress: bool = True):
        from tqdm.auto import tqdm

        self._clips = [c.pixel_values for c in recording.clips]
        self.limit = limit
        self._bar = tqdm(total=min(limit, recording.frames), desc="calibrate", unit="frame", disable=None if progress else True)
        self.rewind()

    def rewind(self) -> None:
        self._next, self._fed, self.batches, self._stop = 0, 0, 0, len(self._clips)
        self._bar.reset()

    def __len__(self) -> int:
        """Batches (clips); with ``set_range`` onnxruntime collects them one pass at a time."""
        return len(self._clips)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._stop = start_index, min(end_index, len(self._clips))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._stop or self._fed >= self.limit:
            if self._next >= len(self._clips) or self._fed >= self.limit:
                self._bar.close()
            return None
        frames = self._clips[self._next][: self.limit - self._fed]  # (F', 3, H, W)
        self._next += 1
        self._fed += int(frames.shape[0])
        self.batches += 1
        self._bar.update(int(frames.shape[0]))
        return {"pixel_values": frames.numpy()}
