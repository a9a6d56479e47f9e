"""Where the INT8 vision encoder's time goes on onnxruntime (CPU), for each way of quantizing it.

    .venv/bin/python scripts/profile_vision_int8.py --model llava-ov-0.5b --vision-layers 2 --frames 8
    .venv/bin/python scripts/profile_vision_int8.py --model EXPORT_DIR --variants qdq-s8s8,qop-u8s8 --profile

Per variant (:data:`VARIANTS`; the float32 graph is the reference): the median time of the
float32 and the quantized graph on ``--frames`` frames, timed alternately in one process
(ratios measured in one run), the features cosine against float32 on the calibration clip,
and what onnxruntime made of the graph: the node counts by op type of the optimized graph
(``SessionOptions.optimized_model_filepath``; Q/DQ nodes left unfused, MatMuls run as
float ``MatMul``, ``MatMulIntegerToFloat``, ``QLinearMatMul``, ``DynamicQuantizeMatMul``).
With ``--profile``, one profiled run per graph (``SessionOptions.enable_profiling``) gives
the kernel time per op type. Static variants are calibrated on the clips the float32
export's own pipeline fed its vision graph (``holitom.calibration.data.record_pipeline``).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench_calibration import prepare, time_pair

# name -> quantize_vision keywords; "dynamic" variants quantize weights ahead and activations per call instead.
# Q/DQ graphs load as the onnxruntime backend loads them (QDQ_DISABLED_OPTIMIZERS); "cse" keeps that pass on.
VARIANTS: dict[str, dict] = {
    "qdq-s8s8": {"activations": "int8"},  # TensorRT-ready, 8-bit weights
    "qdq-s8s8-cse": {"activations": "int8", "cse": True},
    "qdq-s8s8-rr": {"activations": "int8", "reduce_range": True},  # the default of `holitom calibrate` (7-bit weights)
    "qdq-s8s8-pt": {"activations": "int8", "per_channel": False},
    "qdq-s8s8-attn": {"activations": "int8", "keep_scores_float": False},  # the last layer's score MatMuls too
    "qdq-s8s8-out": {"activations": "int8", "quantize_outputs": True},  # Q/DQ on MatMul outputs too (QLinearMatMul)
    "qdq-s8s8-rr-out": {"activations": "int8", "reduce_range": True, "quantize_outputs": True},
    "qdq-u8s8": {"activations": "uint8"},
    "qdq-u8s8-rr": {"activations": "uint8", "reduce_range": True},
    "qdq-u8s8-pt": {"activations": "uint8", "per_channel": False},
    "qdq-u8u8": {"activations": "uint8", "weights": "uint8"},
    "qop-s8s8": {"activations": "int8", "fmt": "qoperator", "quantize_outputs": True},  # QLinearMatMul needs them
    "qop-u8s8": {"activations": "uint8", "fmt": "qoperator", "quantize_outputs": True},
    "dynamic-u8s8": {"dynamic": "QInt8"},  # every MatMul with a constant weight: DynamicQuantizeMatMul
    "dynamic-u8u8": {"dynamic": "QUInt8"},
}
# Optimized-graph op types worth counting (the rest are summed under "other").
_SHOWN = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMul", "MatMulIntegerToFloat", "QLinearMatMul",
          "DynamicQuantizeMatMul", "MatMulInteger", "FusedMatMul", "QLinearConv", "ConvInteger", "Conv", "QGemm", "Gemm")


THREADS = {"n": 0}  # intra-op threads of every session (--threads; 0: the runtime's, one per core)


def _session(ort, path: Path, variant: str | None, optimized: Path | None = None, profile: Path | None = None):
    """A session with the runtime's settings (holitom.runtime.backends.onnxruntime.loader), optionally saving the
    optimized graph or profiling; ``variant`` None is the float32 graph."""
    from holitom.runtime.backends.onnxruntime.loader import QDQ_DISABLED_OPTIMIZERS

    v = VARIANTS.get(variant, {})
    qdq = variant is not None and "dynamic" not in v and v.get("fmt", "qdq") == "qdq" and not v.get("cse")
    disabled = list(QDQ_DISABLED_OPTIMIZERS) if qdq else []
    return ort.InferenceSession(str(path), _options(ort, optimized, profile), providers=["CPUExecutionProvider"], disabled_optimizers=disabled)


def _options(ort, optimized: Path | None = None, profile: Path | None = None):
    from holitom.runtime.backends.onnxruntime.loader import DEFAULT_SESSION_SETTINGS as S

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS["n"] or S.threads
    options.enable_cpu_mem_arena = S.memory_arena
    if not S.spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    if profile is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile)
    return options


def _quantize(name: str, float_file: Path, out: Path, recording) -> None:
    from holitom.calibration.data import FrameBatches
    from holitom.calibration.quantize import quantize_vision

    kwargs = dict(VARIANTS[name])
    if "dynamic" in kwargs:
        import onnxruntime.quantization as q

        q.quantize_dynamic(str(float_file), str(out), op_types_to_quantize=["MatMul"], per_channel=True,
                           weight_type=getattr(q.QuantType, kwargs["dynamic"]))
        return
    keep = kwargs.pop("keep_scores_float", True)
    kwargs.pop("cse", None)
    quantize_vision(float_file, out, FrameBatches(recording, 10**9, False), "percentile", keep, kwargs.pop("activations"), **kwargs)


def _op_counts(ort, path: Path, variant: str | None, work: Path) -> collections.Counter:
    optimized = work / f"{variant or 'float32'}.optimized.onnx"
    _session(ort, path, variant, optimized=optimized)
    import onnx

    return collections.Counter(n.op_type for n in onnx.load(str(optimized), load_external_data=False).graph.node)


def _profile(ort, path: Path, variant: str | None, feed: dict, work: Path) -> dict[str, float]:
    """Kernel milliseconds per op type over one run (after one warm-up run)."""
    session = _session(ort, path, variant, profile=work / (variant or "float32"))
    session.run(None, feed)
    session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    last = [e for e in events if e.get("name") == "model_run"][-1]  # the second run: its nodes lie inside its time span
    ms: dict[str, float] = collections.defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and last["ts"] <= e["ts"] <= last["ts"] + last["dur"]:
            ms[e["args"]["op_name"]] += e["dur"] / 1e3
    return dict(sorted(ms.items(), key=lambda kv: -kv[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="llava-ov-0.5b", help="default, llava-ov-0.5b, llava-ov-7b, or a float32 export folder")
    p.add_argument("--vision-layers", type=int, default=2, help="vision layers kept (architecture presets)")
    p.add_argument("--frames", type=int, default=8, help="frames per timed call")
    p.add_argument("--clips", type=int, default=1, help="generated calibration clips")
    p.add_argument("--clip-frames", type=int, default=8, help="frames sampled per calibration clip")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {list(VARIANTS)}")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (default 0: the runtime's, one per core; 1 is steadier on a shared CPU)")
    p.add_argument("--profile", action="store_true", help="kernel time per op type (one profiled run per graph)")
    p.add_argument("--work", default=None, help="folder for the export, clips and quantized graphs (default: a temporary one)")
    args = p.parse_args(argv)
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")

    import onnxruntime as ort
    import torch

    from holitom import contracts as C
    from holitom.calibration.compare import cosine

    THREADS["n"] = args.threads
    with tempfile.TemporaryDirectory(prefix="profile-vision-int8-") as tmp:
        work = Path(args.work or tmp)
        export, manifest, _, recording = prepare(args.model, args.vision_layers, work, args.clips, args.clip_frames)
        float_file = export / manifest.graphs[C.VISION].file
        size = manifest.dims.image_size
        feed = {"pixel_values": np.random.default_rng(0).standard_normal((args.frames, 3, size, size), dtype=np.float32)}
        clip_feed, clip_want = recording.clips[0].calls[C.VISION][0]
        float_session = _session(ort, float_file, None)
        print(f"model {args.model}, vision width {manifest.model_config['vision']['hidden_size']}, "
              f"{manifest.model_config['vision'].get('num_layers', '?')} layers, {args.frames} frames, {args.threads or 'default'} threads; "
              f"onnxruntime {ort.__version__}; load average {os.getloadavg()[0]:.1f}")
        graphs = {"float32": float_file}
        for name in args.variants.split(","):
            graphs[name] = work / f"vision.{name.removesuffix('-cse')}.onnx"  # -cse: the same graph, loaded with CSE on
            if not graphs[name].is_file():  # a --work folder keeps the quantized graphs of earlier runs
                print(f"quantizing {name} ...", file=sys.stderr, flush=True)
                _quantize(name, float_file, graphs[name], recording)
        print(f"{'variant':15s} {'fp32 ms':>8s} {'ms':>8s} {'x':>5s} {'feat cos':>9s}  optimized graph")
        for name, path in graphs.items():
            variant = None if name == "float32" else name
            session = _session(ort, path, variant)
            got = session.run(["features"], {"pixel_values": clip_feed["pixel_values"].numpy()})[0]
            fcos = cosine(torch.from_numpy(got), clip_want["features"])
            timing = f"{'-':>8s} {'-':>8s} {'-':>5s}"
            if path != float_file:
                a, b = time_pair(float_session, session, feed, args.repeats)
                timing = f"{a:8.0f} {b:8.0f} {a / b:5.2f}"
            counts = _op_counts(ort, path, variant, work)
            shown = ", ".join(f"{op} {counts[op]}" for op in _SHOWN if counts[op])
            other = sum(n for op, n in counts.items() if op not in _SHOWN)
            print(f"{name:15s} {timing} {fcos:9.5f}  {shown}, other {other}", flush=True)
            if args.profile:
                ms = _profile(ort, path, variant, feed, work)
                total = sum(ms.values())
                print(f"    kernel time {total:.0f} ms: " + ", ".join(f"{op} {t:.0f} ({t / total:.0%})" for op, t in ms.items() if t >= 0.005 * total), flush=True)
            del session
        print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
