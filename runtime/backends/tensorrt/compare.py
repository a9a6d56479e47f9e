"""``holitom compare EXPORT_DIR``: Polygraphy's comparison of each stage's TensorRT engine against onnxruntime.

Real stage inputs come from one run of the onnxruntime backend on a generated
clip (each stage's first call is recorded); Polygraphy's ``Comparator`` then runs
the ONNX file on onnxruntime and the engine on TensorRT with those inputs and
compares every output with the tolerances of :data:`TOLERANCES`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from holitom import contracts as C

# (rtol, atol) per engine precision. The merge stages build in float32 (holitom.export.engines.FLOAT32_STAGES);
# their integer outputs (positions) differ by at least 1 when they differ, so fp32's atol fails any changed decision.
TOLERANCES = {"fp32": (1e-4, 1e-4), "fp16": (1e-2, 1e-2), "bf16": (5e-2, 5e-2)}


def _record_feeds(stages) -> dict:
    """Wrap each runner's ``infer`` (on the instance only) to keep its first feed as numpy arrays."""
    feeds: dict[str, dict] = {}
    for stage, runner in stages.runners.items():
        infer = runner.infer

        def recording(feed, stage=stage, infer=infer):
            feeds.setdefault(stage, {k: v.detach().cpu().numpy() for k, v in feed.items()})
            return infer(feed)

        runner.infer = recording
    return feeds


def compare_engines(folder: str | Path, preset: str | None = None, num_frames: int = 8) -> bool:
    """Compare every stage of ``preset``; prints Polygraphy's report; True when every output is within tolerance."""
    import onnx

    from holitom.plugins_trt.tensorrt_env import require_polygraphy, require_tensorrt

    require_tensorrt("holitom compare")
    require_polygraphy("holitom compare")
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner
    from polygraphy.comparator import Comparator, CompareFunc

    from holitom.errors import BackendError
    from holitom.export.manifest import read_manifest
    from holitom.runtime import GenerationConfig, RuntimeConfig, load_pipeline
    from holitom.runtime.backends.export_folder import select_graphs
    from holitom.runtime.config import DEFAULT_PRESET
    from holitom.video.synthetic import make_frames, write_video

    folder = Path(folder).expanduser()
    manifest = read_manifest(folder)
    if manifest.engines is None:
        raise BackendError(f"the export in '{folder}' has no TensorRT engines; build them with `holitom build-engines {folder}`.")
    config = RuntimeConfig(backend="onnxruntime", preset=preset or DEFAULT_PRESET, num_frames=num_frames)
    files, _ = select_graphs(folder, manifest, config)
    with tempfile.TemporaryDirectory(prefix="holitom-compare-") as tmp:
        clip = Path(tmp) / "clip.mp4"
        write_video(clip, make_frames(num_frames * 2, 256, 320, seed=0, scene_cut_at=num_frames), fps=8)
        with load_pipeline(folder, config) as pipeline:
            feeds = _record_feeds(pipeline.stages)
            pipeline.run(clip, "What moves in this video?", num_frames, GenerationConfig(max_new_tokens=2))
    all_ok = True
    for stage in C.STAGE_ORDER:
        if stage not in feeds:
            continue
        entry = manifest.engines.files[files[stage]]
        rtol, atol = TOLERANCES[entry.precision.split("+")[0]]
        runners = [
            OnnxrtRunner(SessionFromOnnx(str(folder / files[stage]))),
            TrtRunner(EngineFromBytes(BytesFromPath(str(folder / entry.file)))),
        ]
        graph_inputs = {i.name for i in onnx.load(str(folder / files[stage]), load_external_data=False).graph.input}
        feed = {name: value for name, value in feeds[stage].items() if name in graph_inputs}  # dropped inputs: not fed
        results = Comparator.run(runners, data_loader=[feed])
        ok = bool(Comparator.compare_accuracy(results, compare_func=CompareFunc.simple(rtol=rtol, atol=atol)))
        print(f"{stage} ({files[stage]} vs {entry.file}, {entry.precision}, rtol={rtol:g} atol={atol:g}): {'PASSED' if ok else 'FAILED'}")
        all_ok &= ok
    return all_ok
