"""holitom.calibration on a tiny model: the Q/DQ graph, the manifest, the runtime path and the refusals."""

from __future__ import annotations


import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from holitom import contracts as C
from holitom.errors import ConfigError, ExportError, InputError, VideoError


def _producers(model):
    return {out: node for node in model.graph.node for out in node.output}


def test_vision_graph_has_qdq_on_every_matmul_input_except_the_score_path(float_export, int8_result):
    from holitom.calibration.graphs import score_path_nodes

    float_model = onnx.load(str(float_export / "vision_encoder.onnx"))
    model = onnx.load(str(int8_result.out / "vision_encoder.onnx"))
    producers = _producers(model)
    inits = {i.name: i for i in model.graph.initializer}
    excluded = set(int8_result.manifest.quantization["graphs"][C.VISION]["float32_nodes"])
    assert excluded == set(score_path_nodes(float_model))
    # Oracle for the score path: the last layer's Softmax feeds the excluded probs @ v MatMul and, through one
    # Reshape, the excluded score-mean MatMul; the excluded q k^T MatMul feeds that Softmax (through the scale Mul).
    softmaxes = [n for n in float_model.graph.node if n.op_type == "Softmax"]
    last = softmaxes[-1]
    float_producers = _producers(float_model)
    readers = {n.name for n in float_model.graph.node if last.output[0] in n.input and n.op_type == "MatMul"}
    reshaped = {n.output[0] for n in float_model.graph.node if n.op_type == "Reshape" and n.input[0] == last.output[0]}
    score_mean = {n.name for n in float_model.graph.node if n.op_type == "MatMul" and reshaped & set(n.input)}
    assert len(readers) == 1 and len(score_mean) == 1
    node = float_producers[last.input[0]]
    while node.op_type != "MatMul":
        node = float_producers[node.input[0]]
    assert excluded == readers | score_mean | {node.name}

    checked = 0
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Conv", "Gemm"):
            continue
        if node.name in excluded:
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input[:2]), node.name
            continue
        for i in node.input[:2]:
            dq = producers.get(i)
            assert dq is not None and dq.op_type == "DequantizeLinear", f"{node.name} input {i} has no DequantizeLinear"
            if dq.input[0] in inits:  # a weight: int8 (7-bit range by default), symmetric, one scale per output channel
                w = inits[dq.input[0]]
                assert w.data_type == onnx.TensorProto.INT8
                largest = np.abs(numpy_helper.to_array(w).astype(np.int16)).max()
                assert 32 < largest <= 64  # 7-bit symmetric range [-64, 64] (onnxruntime's reduce_range), used
                scale = numpy_helper.to_array(inits[dq.input[1]])
                axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
                assert scale.shape == (w.dims[axis],) and scale.size > 1
                assert not numpy_helper.to_array(inits[dq.input[2]]).any()
            else:  # an activation: Q -> DQ, int8 zero point 0
                q = producers[dq.input[0]]
                assert q.op_type == "QuantizeLinear"
                zp = numpy_helper.to_array(inits[q.input[2]])
                assert zp.dtype == np.int8 and not zp.any()
        checked += 1
    float_count = sum(n.op_type in ("MatMul", "Conv", "Gemm") for n in float_model.graph.node)
    assert checked == float_count - len(excluded) == int8_result.manifest.quantization["graphs"][C.VISION]["quantized_nodes"]
    # Outputs: a MatMul's result stays float (onnxruntime runs MatMulIntegerToFloat, not QLinearMatMul + DQ); the
    # patch Conv's is quantized (there is no integer Conv with a float output).
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node.op_type)
    assert int8_result.manifest.quantization["graphs"][C.VISION]["float_outputs"] == ["MatMul", "Gemm"]
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm"):
            assert "QuantizeLinear" not in readers.get(node.output[0], []), node.name
    (conv,) = [n for n in model.graph.node if n.op_type == "Conv"]
    assert readers[conv.output[0]] == ["QuantizeLinear"]


def test_manifest_records_precisions_calibration_validation_and_report(int8_result, video_folder, clip_frames):
    from holitom.export.manifest import read_manifest

    manifest = read_manifest(int8_result.out)  # every file's size and sha256 checked
    assert manifest.precision == "float32"  # the graphs' I/O dtype
    q = manifest.quantization
    assert {s: g["precision"] for s, g in q["graphs"].items()} == {
        C.VISION: "int8", C.EMBED: "float32", C.DECODER_HEAD: "int8", C.DECODER_TAIL: "int8", C.DECODE_STEP: "int8"
    }
    from holitom.calibration.config import DEFAULT_METHOD

    assert q["graphs"][C.VISION]["calibration_method"] == DEFAULT_METHOD == q["calibration"]["method"]
    cal = q["calibration"]
    assert cal["weight_bits"] == 7 and "(7 bits)" in q["graphs"][C.VISION]["weights"]
    assert cal["frames"] == 10 and cal["frames_per_clip"] == clip_frames and len(cal["videos"]) == 3
    assert sorted(cal["videos"]) == sorted(str(p) for p in video_folder.rglob("*.mp4"))
    assert q["graphs"][C.VISION]["calibration_batches"] == 3
    outputs = manifest.validation["outputs"]
    assert outputs and all(o["passed"] for o in outputs)
    assert {o["stage"] for o in outputs} == {C.VISION, C.DECODER_HEAD, C.DECODER_TAIL, C.DECODE_STEP}
    report = q["report"]
    assert report["clips"] == 3 and report["preset"] == "r10"
    assert set(report["layer_cosine"]) == {"layer 0", "layer 1", "features", "attention"}
    for key in ("windows_identical", "kept_overlap", "answers_identical", "answer_prefix"):
        assert 0.0 <= report[key] <= 1.0
    assert (int8_result.out / "calibration_report.png").stat().st_size > 0
    assert "calibration report" in int8_result.summary()


def test_decoder_graphs_are_weight_only_matmulnbits(int8_result):
    for stage in (C.DECODER_HEAD, C.DECODER_TAIL, C.DECODE_STEP):
        model = onnx.load(str(int8_result.out / f"{stage}.onnx"))
        nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
        assert nbits and all(next(a.i for a in n.attribute if a.name == "bits") == 8 for n in nbits)
        assert int8_result.manifest.quantization["graphs"][stage]["quantized_nodes"] == len(nbits)


def test_int8_export_runs_on_the_onnxruntime_backend(int8_result, video_folder, clip_frames):
    from holitom.runtime import GenerationConfig, RuntimeConfig, load_pipeline

    with load_pipeline(int8_result.out, RuntimeConfig(backend="onnxruntime", preset="r10", num_frames=clip_frames)) as pipe:
        result = pipe.run(video_folder / "clip0.mp4", "What happens?", clip_frames, GenerationConfig(max_new_tokens=3))
    assert result.backend == "onnxruntime" and len(result.token_ids) >= 1
    assert result.tokens.after_outer < result.tokens.visual_in


def test_backend_runs_every_weight_matmul_of_the_qdq_vision_graph_in_int8(int8_result, tmp_path, monkeypatch):
    """As the onnxruntime backend loads it, no MatMul of the INT8 vision graph stays float with its weight
    dequantized on every call (onnxruntime's CSE would merge the q/k/v QuantizeLinear nodes and, on CPUs
    without VNNI, leave those MatMuls float: QDQ_DISABLED_OPTIMIZERS)."""
    from holitom.paths import CACHE_ENV
    from holitom.runtime.backends.onnxruntime.loader import OPTIMIZED_CACHE_DIR, QDQ_DISABLED_OPTIMIZERS, session_from_file, settings_for

    details = int8_result.manifest.quantization["graphs"][C.VISION]
    assert details["format"] == "QDQ" and settings_for(details).disabled_optimizers == QDQ_DISABLED_OPTIMIZERS
    assert settings_for(None).disabled_optimizers == () and settings_for(int8_result.manifest.quantization["graphs"][C.DECODER_HEAD]).disabled_optimizers == ()
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    session_from_file(int8_result.out / int8_result.manifest.graphs[C.VISION].file, ["CPUExecutionProvider"], settings=settings_for(details))
    (optimized,) = (tmp_path / OPTIMIZED_CACHE_DIR).glob("*.onnx")
    model = onnx.load(str(optimized), load_external_data=False)
    producers, weights = _producers(model), {i.name for i in model.graph.initializer}
    float_with_weight_dq = [
        n.name for n in model.graph.node
        if n.op_type == "MatMul" and any(i in producers and producers[i].op_type == "DequantizeLinear" and producers[i].input[0] in weights for i in n.input)
    ]
    assert not float_with_weight_dq
    fused = sum(n.op_type in ("QLinearMatMul", "MatMulIntegerToFloat") for n in model.graph.node)
    assert fused == details["quantized_nodes"] - 1  # every quantized MatMul; the one other quantized node is the patch Conv


def test_calibration_batches_are_the_runtime_pixel_values(float_export, float_recording, clip_frames):
    """The reader's batches equal an independent decode + preprocess of the same clips, and stop at the frame limit."""
    from holitom.calibration.data import FrameBatches
    from holitom.video import VideoPreprocessor, read_video

    videos = [clip.video for clip in float_recording.clips]
    batches = FrameBatches(float_recording, limit=6, progress=False)
    got = [b["pixel_values"] for b in iter(batches.get_next, None)]
    preprocess = VideoPreprocessor.from_pretrained(float_export)
    want = [preprocess(read_video(v, clip_frames).frames).numpy() for v in videos]
    assert [g.shape[0] for g in got] == [4, 2] and batches.batches == 2
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1][:2])


def test_int4_weights_stay_within_the_int4_tolerance(float_export, float_recording, tmp_path):
    """On the runtime's recorded feeds (the spliced prompt after the outer merge). The head's attention row and the
    decode step do not keep 0.95 at int4 on this 96-wide model (measured 0.41 and 0.62): the validation refuses them."""
    from holitom.calibration.compare import TOLERANCES, agreement, run_graph
    from holitom.calibration.quantize import quantize_weights
    from holitom.export.manifest import read_manifest

    dims = read_manifest(float_export).dims
    details = quantize_weights(float_export / "decoder_tail.onnx", tmp_path / "decoder_tail.onnx", "int4", 32)
    assert details["precision"] == "int4" and details["quantized_nodes"] > 0
    feeds = float_recording.feeds(C.DECODER_TAIL)
    want = run_graph(float_export / "decoder_tail.onnx", C.DECODER_TAIL, dims, feeds)
    got = run_graph(tmp_path / "decoder_tail.onnx", C.DECODER_TAIL, dims, feeds)
    rows = agreement(C.DECODER_TAIL, "int4", got, want)
    assert all(r.passed for r in rows), [r.line() for r in rows]
    assert min(r.cosine for r in rows) < 1.0  # int4 changed something
    assert TOLERANCES["int4"]["logits"][0] < TOLERANCES["int8"]["logits"][0]


def test_agreement_reports_cosine_and_max_error_and_fails_outside_tolerance():
    from holitom.calibration.compare import agreement, check_agreement, cosine

    a = torch.tensor([1.0, 2.0, 3.0])
    b = torch.tensor([1.0, 2.0, 4.0])
    x, y = np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0])  # float64
    want = float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))
    assert cosine(a, b) == pytest.approx(want, abs=1e-12)
    rows = agreement("decoder_tail", "int8", [{"logits": b}], [{"logits": a}])
    assert rows[0].max_abs_error == pytest.approx(1.0) and not rows[0].passed  # cosine 0.991 passes, the error does not
    with pytest.raises(ExportError, match="decoder_tail/logits"):
        check_agreement(rows)


def test_report_agreement_measures():
    from holitom.calibration.report import answer_agreement, decision_agreement
    from holitom.merge import get_preset

    assert answer_agreement([[1, 2, 3, 4], [5, 6]], [[1, 2, 9, 9], [5, 6]]) == (0.5, pytest.approx((0.5 + 1.0) / 2))
    g = torch.Generator().manual_seed(3)
    features, attention = torch.randn(6, 16, 8, generator=g), torch.rand(6, 16, generator=g)
    same = {"features": features, "attention": attention}
    assert decision_agreement([(same, same)], get_preset("r10"), (4, 4), "llava_video") == (1.0, 1.0)
    other = {"features": torch.randn(6, 16, 8, generator=g), "attention": torch.rand(6, 16, generator=g)}
    windows, overlap = decision_agreement([(same, other)], get_preset("r10"), (4, 4), "llava_video")
    assert overlap < 1.0


# ---- refusals -------------------------------------------------------------------------------


def test_folder_without_videos_is_refused(float_export, tmp_path):
    from holitom.calibration import CalibrationConfig, calibrate_export

    (tmp_path / "readme.txt").write_text("nothing here\n")
    with pytest.raises(InputError, match="holds no video files"):
        calibrate_export(float_export, tmp_path / "out", CalibrationConfig(videos=tmp_path, progress=False))
    with pytest.raises(InputError, match="does not exist"):
        calibrate_export(float_export, tmp_path / "out", CalibrationConfig(videos=tmp_path / "missing", progress=False))
    assert not (tmp_path / "out").exists()


def test_unreadable_video_is_refused_by_name(float_export, tmp_path):
    from holitom.calibration import CalibrationConfig, calibrate_export

    (tmp_path / "broken.mp4").write_bytes(b"this is not an mp4 file" * 10)
    with pytest.raises(VideoError, match="broken.mp4"):
        calibrate_export(float_export, tmp_path / "out", CalibrationConfig(videos=tmp_path, progress=False))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "kl"}, "unknown calibration method"),
        ({"vision": "int4"}, "vision_encoder graph cannot be quantized to 'int4'"),
        ({"decoder": "fp8"}, "decoder_head graph cannot be quantized to 'fp8'"),
        ({"vision": "float32", "decoder": "float32"}, "every graph would stay float32"),
        ({"block_size": 48}, "block size 48"),
        ({"calibration_frames": 0}, "calibration_frames"),
        ({"activations": "int16"}, "activation type"),
        ({"weight_bits": 4}, "weight bits"),
    ],
)
def test_bad_config_is_a_config_error(kwargs, match, tmp_path):
    from holitom.calibration import CalibrationConfig

    with pytest.raises(ConfigError, match=match):
        CalibrationConfig(videos=tmp_path, **kwargs)


def test_graph_without_weights_cannot_take_weight_only_precision(float_export, tmp_path):
    from holitom.calibration.config import check_precision
    from holitom.calibration.quantize import quantize_weights

    with pytest.raises(ConfigError, match="embed_tokens graph cannot be quantized"):
        check_precision(C.EMBED, "int8")
    with pytest.raises(ExportError, match="no MatMul with a constant weight"):
        quantize_weights(float_export / "embed_tokens.onnx", tmp_path / "e.onnx", "int8", 32)


def test_quantized_export_is_not_calibrated_again(int8_result, video_folder, tmp_path):
    from holitom.calibration import CalibrationConfig, calibrate_export

    with pytest.raises(ConfigError, match="already"):
        calibrate_export(int8_result.out, tmp_path / "again", CalibrationConfig(videos=video_folder, progress=False))


def test_cli_refusal_is_one_line_exit_2(float_export, tmp_path, capsys):
    from holitom.cli import main

    assert main(["calibrate", str(float_export), "--out", str(tmp_path / "o"), "--videos", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("holitom calibrate: error:") and "no video files" in err


def test_bench_adds_rows_for_a_quantized_export_of_the_same_model(int8_result, tmp_path):
    from holitom.bench.config import BenchConfig
    from holitom.bench.runner import check_export_of

    config = BenchConfig(model="default", backends=("transformers", "onnxruntime"), methods=("vanilla", "holitom"), ratios=(0.1,),
                         export=str(int8_result.out), project_full_depth=False)
    # The float32 rows run the toolkit's own export of the checkpoint (the onnxruntime attention form); this INT8
    # export was calibrated from a standard-form one, and its label says so (eval's rows beside a standard-form
    # float32 export say only int8: tests/calibration/test_eval_rows.py).
    assert int8_result.manifest.attention == "standard"
    assert [r.id for r in config.rows()] == [
        "transformers/vanilla", "onnxruntime/vanilla", "onnxruntime/holitom@r10",
        "onnxruntime[int8,standard]/vanilla", "onnxruntime[int8,standard]/holitom@r10",
    ]
    assert {(r.export, r.precision) for r in config.rows()[-2:]} == {(str(int8_result.out), "int8,standard")}
    made_from = int8_result.manifest.source["path"]
    assert check_export_of(config.export, made_from) == int8_result.out
    with pytest.raises(ConfigError, match="was made from"):
        check_export_of(config.export, tmp_path)
    with pytest.raises(ConfigError, match="must be an export folder"):
        BenchConfig(model="default", backends=("torch",), export=str(made_from))
