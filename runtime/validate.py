"""Stage-by-stage validation of an export against the PyTorch path (optimum-style report).

It runs the graphs through the runtime's runners, so it lives in the runtime
layer; :func:`holitom.export.export_model` takes it as its ``validator``.

The torch reference pipeline runs once on a generated clip; every stage's exact
inputs and outputs are recorded, the same inputs are fed to the ONNX Runtime
runner of that stage, and each output is compared with an explicit tolerance.
Feeding the reference inputs (not the ONNX outputs of the previous stage) keeps
each error attributable to one graph.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from holitom import contracts as C
from holitom.errors import ExportError
from holitom.runtime.base import Runner

# Max abs error allowed per output in float32, scaled by the reference's magnitude
# (tolerance = atol + rtol * max|reference|). Decoder outputs accumulate over layers,
# hence the looser relative term; merge outputs are sums of few terms.
TOLERANCES: dict[str, tuple[float, float]] = {
    "features": (1e-4, 1e-4),
    "attention": (1e-6, 1e-4),
    "merged_tokens": (1e-5, 1e-5),
    "inputs_embeds": (0.0, 0.0),
    "hidden_states": (1e-4, 1e-4),
    "attn_row": (1e-6, 1e-4),
    "merged_hidden_states": (1e-5, 1e-5),
    "merged_position_ids": (0.0, 0.0),
    "logits": (1e-4, 1e-4),
    "present": (1e-4, 1e-4),
}


@dataclass
class OutputCheck:
    stage: str
    output: str
    max_abs_error: float
    tolerance: float
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)


class RecordingRunner(Runner):
    """Wraps a runner and keeps the feed and outputs of its first ``keep`` calls."""

    def __init__(self, inner: Runner, keep: int = 1):
        super().__init__(inner.spec, check_inputs=False)
        self.inner, self.keep = inner, keep
        self.backend = inner.backend
        self.calls: list[tuple[dict, dict]] = []

    def _activate(self):
        self.inner.activate()

    def _deactivate(self):
        self.inner.deactivate()

    def _infer(self, feed):
        out = self.inner.infer(feed)
        if len(self.calls) < self.keep:
            self.calls.append(({k: _copy(v) for k, v in feed.items()}, {k: _copy(v) for k, v in out.items()}))
        return out


def as_torch(arrays: dict) -> dict:
    """A runner's arrays as torch tensors: the onnxruntime runners exchange numpy; the comparisons work in torch."""
    return {name: torch.from_numpy(np.asarray(value)) for name, value in arrays.items()}


def _copy(array):
    """A copy of a runner's array: torch tensors (torch, tensorrt backends) or numpy arrays (onnxruntime)."""
    return array.clone() if isinstance(array, torch.Tensor) else np.array(array, copy=True)


def tolerance_for(output: str, reference: torch.Tensor) -> float:
    key = "present" if output.startswith("present.") else output
    atol, rtol = TOLERANCES[key]
    return atol + rtol * float(reference.abs().max()) if reference.numel() else atol


def compare_outputs(stage: str, got: dict, want: dict) -> list[OutputCheck]:
    checks = []
    for name, ref in want.items():
        value = got[name]
        if tuple(value.shape) != tuple(ref.shape):
            checks.append(OutputCheck(stage, name, float("inf"), tolerance_for(name, ref), False))
            continue
        err = float((value.double() - ref.double()).abs().max()) if ref.numel() else 0.0
        tol = tolerance_for(name, ref)
        checks.append(OutputCheck(stage, name, err, tol, err <= tol))
    return checks


def validate_export(torch_model, tokenizer, folder: Path, num_frames: int) -> list[OutputCheck]:
    """Validate every graph of the export in ``folder``; raise ExportError listing each failing output."""
    from holitom.export.manifest import read_manifest
    from holitom.merge import MergeConfig
    from holitom.runtime.backends.onnxruntime.loader import providers_for, session_from_file
    from holitom.runtime.backends.onnxruntime.runner import OnnxrtRunner
    from holitom.runtime.backends.torch.loader import build_torch_stages
    from holitom.runtime.generation import GenerationConfig
    from holitom.runtime.pipeline import Pipeline
    from holitom.video.preprocess import VideoPreprocessor
    from holitom.video.synthetic import make_frames

    manifest = read_manifest(folder, check_files=False)  # files just written by the exporter itself
    preprocessor = VideoPreprocessor.from_pretrained(folder)
    frames = make_frames(num_frames, 96, 128, seed=1, scene_cut_at=num_frames // 2 if num_frames > 2 else None)
    specs = C.stage_specs(manifest.dims)
    providers = providers_for("cpu")

    def ort(spec, file):
        return OnnxrtRunner(spec, lambda: session_from_file(folder / file, providers)).activate()

    checks: list[OutputCheck] = []
    validated_core = False
    for preset, entry in manifest.outer_merge.items():
        merge = MergeConfig.from_dict(entry["merge"])
        # The exported contract always carries the vision attention, so the reference computes it too.
        stages = build_torch_stages(torch_model, tokenizer, preprocessor, merge, preset, torch.device("cpu"), vision_attention=True)
        keep = {C.EMBED: 3, C.DECODE_STEP: 1}
        stages.runners = {name: RecordingRunner(r, keep.get(name, 1)) for name, r in stages.runners.items()}
        with Pipeline(stages) as pipe:
            pipe.run(frames, "Describe the video.", num_frames, GenerationConfig(max_new_tokens=2))
        targets = {C.OUTER_MERGE: entry["graph"]["file"]}
        if merge.inner is not None:
            from holitom.export.manifest import inner_merge_key

            targets[C.INNER_MERGE] = manifest.inner_merge[inner_merge_key(merge.inner.ratio, merge.inner.mode)]["graph"]["file"]
        if not validated_core:  # the model graphs do not depend on the preset: check them once
            targets.update({stage: g.file for stage, g in manifest.graphs.items()})
            validated_core = True
        for stage, file in targets.items():
            runner = ort(specs[stage], file)
            for feed, want in stages.runners[stage].calls:
                label = stage if stage not in (C.OUTER_MERGE, C.INNER_MERGE) else f"{stage}[{preset}]"
                got = as_torch(runner.infer(feed))
                checks += compare_outputs(label, got, want)
            runner.deactivate()
    failed = [c for c in checks if not c.passed]
    if failed:
        lines = "; ".join(f"{c.stage}/{c.output}: max abs error {c.max_abs_error:.3e} > {c.tolerance:.1e}" for c in failed)
        raise ExportError(f"the exported graphs do not match PyTorch on {len(failed)} output(s): {lines}.")
    return checks
