"""The benchmark end to end on the embedded default model at CI size: fields, invariants, files.

No assertion here reads a duration against a threshold: timings are only
checked for structure (parts sum to TTFT, ratios computed from them).
"""

from __future__ import annotations

import io
import json
import math

import pytest

import holitom.bench.report as report
from holitom.bench.report import BREAKDOWN_PNG, JSON_NAME, SCALING_PNG, table_rows, write_outputs
from holitom.flops import model_prefill_flops

TOP = {"schema", "environment", "settings", "published_reference", "rows", "targets", "edge_targets", "matmul_rate"}
ENV = {
    "holitom", "python", "platform", "machine", "cpu", "cpu_count", "cpu_affinity", "torch", "torch_threads",
    "transformers", "numpy", "device", "started_at", "load_average_start", "load_average_end", "wall_s", "phases_s",
    "onnxruntime", "onnxruntime_providers",
}
SETTINGS = {
    "model", "video", "prompt", "frames", "image_size", "vision_layers", "text_layers", "vocab_size", "backends",
    "methods", "ratios", "repeats", "warmup", "decode_tokens", "device", "dtype", "count_flops", "measure_memory",
    "seed", "threads", "interleave", "project_full_depth", "cuda_graph", "overrides", "checkpoint", "export", "arch", "model_geometry", "timing_method",
    "memory_method", "flops_method", "floor_method",
}
ROW = {
    "id", "label", "backend", "method", "ratio", "preset", "inner_merge", "export", "precision", "tokens", "timings_ms", "shares", "ttft_ms_all",
    "decode_tokens_per_s", "decode_tokens_per_s_all", "generated_tokens", "memory", "flops", "vs_transformers", "floor",
}
TOKENS = {"visual_in", "after_outer", "after_inner", "prompt"}
TIMINGS = {"decode_video", "vision", "merge", "prefill", "ttft"}
MEMORY = {
    "method", "base_mb", "loaded_mb", "peak_mb", "param_mb", "process_peak_mb", "gpu_peak_allocated_mb",
    "gpu_weights_allocated_mb",
}
FLOPS = {"paper_formula", "paper_formula_nominal", "counted", "counted_closed_form", "counted_by_part", "counted_on", "counted_vision"}
RATIOS = {
    "ttft_speedup", "ttft_speedup_bound", "prefill_speedup", "vision_speedup", "decode_speedup", "peak_memory_ratio",
    "gpu_peak_memory_ratio", "paper_flops_ratio", "counted_flops_ratio",
}
TARGET = {"row", "ttft_speedup", "ttft_speedup_bound", "ttft_speedup_target", "ttft_speedup_met", "merge_share", "merge_share_target", "merge_share_met"}


def rows_by_id(result):
    return {r["id"]: r for r in result["rows"]}


def test_json_has_every_field(tiny_run):
    result, _ = tiny_run
    assert set(result) == TOP
    assert result["schema"] == "holitom.bench/1"
    assert set(result["environment"]) == ENV
    assert set(result["settings"]) == SETTINGS
    assert [r["id"] for r in result["rows"]] == [
        "transformers/vanilla", "torch/vanilla", "torch/holitom@r10", "onnxruntime/vanilla", "onnxruntime/holitom@r10",
    ]
    for row in result["rows"]:
        assert set(row) == ROW, row["id"]
        assert set(row["tokens"]) == TOKENS
        assert set(row["timings_ms"]) == TIMINGS
        assert set(row["shares"]) == TIMINGS - {"ttft"}
        assert set(row["memory"]) == MEMORY
        assert set(row["flops"]) == FLOPS
        assert set(row["vs_transformers"]) == RATIOS
        assert len(row["ttft_ms_all"]) == len(row["decode_tokens_per_s_all"]) == 1  # one repeat
        assert row["generated_tokens"] == 3  # stop tokens are ignored: every row decodes the same count
        assert row["decode_tokens_per_s"] > 0
    assert [t["row"] for t in result["targets"]] == ["torch/holitom@r10", "onnxruntime/holitom@r10"]
    for target in result["targets"]:
        assert set(target) == TARGET
    json.dumps(result)  # JSON-ready throughout


def test_token_counts_decrease_through_stages(tiny_run):
    result, _ = tiny_run
    rows = rows_by_id(result)
    per_frame = result["settings"]["model_geometry"]["tokens_per_frame"]
    assert per_frame == 196
    for row in rows.values():
        t = row["tokens"]
        assert t["visual_in"] == 2 * per_frame
        assert t["prompt"] > t["after_inner"]
    for vanilla in ("transformers/vanilla", "torch/vanilla", "onnxruntime/vanilla"):
        t = rows[vanilla]["tokens"]
        assert t["after_outer"] == t["after_inner"] == t["visual_in"] + 1  # one newline after the video (OneVision)
    for holitom in ("torch/holitom@r10", "onnxruntime/holitom@r10"):
        t = rows[holitom]["tokens"]
        assert t["visual_in"] > t["after_outer"] > t["after_inner"]
        assert t["after_inner"] == round(t["after_outer"] * 0.5)  # R = 0.5
    # The two backends run the same merge on the same video.
    assert rows["torch/holitom@r10"]["tokens"] == rows["onnxruntime/holitom@r10"]["tokens"]
    assert rows["torch/vanilla"]["tokens"] == rows["transformers/vanilla"]["tokens"]


def test_ttft_is_the_sum_of_its_parts(tiny_run):
    result, _ = tiny_run
    for row in result["rows"]:
        tm = row["timings_ms"]
        parts = tm["decode_video"] + tm["vision"] + tm["merge"] + tm["prefill"]
        assert tm["ttft"] == pytest.approx(parts, abs=0.01), row["id"]  # each part is rounded to 1 us
        assert all(tm[k] >= 0 for k in TIMINGS)
        assert tm["ttft"] == pytest.approx(row["ttft_ms_all"][0], abs=0.01)
        assert sum(row["shares"].values()) == pytest.approx(1.0, abs=1e-3)
    assert rows_by_id(result)["transformers/vanilla"]["timings_ms"]["merge"] == 0.0


def test_flops(tiny_run):
    result, _ = tiny_run
    rows = rows_by_id(result)
    geometry = result["settings"]["model_geometry"]
    text = type("Text", (), {"num_layers": geometry["text_layers"], "hidden_size": geometry["text_hidden_size"], "intermediate_size": geometry["text_intermediate_size"]})
    base, torch_vanilla, torch_holitom = rows["transformers/vanilla"], rows["torch/vanilla"], rows["torch/holitom@r10"]
    # The paper's formula: vanilla costs more than HoliTom, on the counts that ran and on the nominal ones.
    assert base["flops"]["paper_formula"] > torch_holitom["flops"]["paper_formula"] > 0
    assert base["flops"]["paper_formula_nominal"] > torch_holitom["flops"]["paper_formula_nominal"] > 0
    assert base["flops"]["paper_formula"] == model_prefill_flops(text, 2 * 196 + 1)
    assert base["flops"]["paper_formula_nominal"] == model_prefill_flops(text, 2 * 196)
    # Counted matmuls equal the closed form for the decoder that ran (GQA + SwiGLU, whole prompt).
    for row in result["rows"]:
        assert row["flops"]["counted"] == row["flops"]["counted_closed_form"] > 0, row["id"]
    # Our decoder and transformers' do the same matmuls; ours adds only the last token's attention row.
    heads, head_dim, seq = geometry["text_heads"], geometry["text_hidden_size"] // geometry["text_heads"], base["tokens"]["prompt"]
    assert torch_vanilla["flops"]["counted"] - base["flops"]["counted"] == 2 * heads * seq * head_dim
    assert torch_holitom["flops"]["counted"] < torch_vanilla["flops"]["counted"]
    # onnxruntime rows are counted on the torch model with the same merge.
    assert rows["onnxruntime/holitom@r10"]["flops"]["counted"] == torch_holitom["flops"]["counted"]
    assert rows["onnxruntime/holitom@r10"]["flops"]["counted_on"].startswith("torch")
    assert base["flops"]["counted_on"] == "transformers"
    assert set(torch_holitom["flops"]["counted_by_part"]) == {"decoder_head", "decoder_tail"}


def test_vision_flops_and_the_floor(tiny_run):
    from holitom.flops import vision_matmul_flops
    from holitom.models.config import LlavaConfig

    result, _ = tiny_run
    rows = rows_by_id(result)
    cfg = LlavaConfig.from_pretrained(result["settings"]["checkpoint"])
    closed = vision_matmul_flops(cfg, 2)
    score_pass = 2 * 2 * cfg.vision.num_patches**2 * cfg.vision.hidden_size  # one more q k^T of the last layer, 2 frames
    assert rows["transformers/vanilla"]["flops"]["counted_vision"] == closed
    assert rows["torch/holitom@r10"]["flops"]["counted_vision"] == closed + score_pass  # HoliTom reads the key scores
    assert rows["onnxruntime/holitom@r10"]["flops"]["counted_vision"] == closed + score_pass  # counted on torch
    assert rows["torch/vanilla"]["flops"]["counted_vision"] in (closed, closed + score_pass)
    rate = result["matmul_rate"]
    assert rate["flops_per_s"] > 0 and rate["device"] == "cpu" and rate["threads"] == 1 and rate["side"] == 512
    for row in result["rows"]:
        floor, tm = row["floor"], row["timings_ms"]
        assert floor["reason"] is None, row["id"]
        assert floor["flops"] == {"vision": row["flops"]["counted_vision"], "prefill": row["flops"]["counted"]}
        for stage in ("vision", "prefill"):
            assert floor["floor_ms"][stage] == pytest.approx(1e3 * floor["flops"][stage] / rate["flops_per_s"])
            assert floor["x_floor"][stage] == pytest.approx(tm[stage] / floor["floor_ms"][stage])
        assert floor["floor_ms"]["ttft"] == pytest.approx(floor["floor_ms"]["vision"] + floor["floor_ms"]["prefill"])
        assert floor["x_floor"]["ttft"] == pytest.approx(tm["ttft"] / floor["floor_ms"]["ttft"])


def test_ratios_are_against_the_transformers_row(tiny_run):
    result, _ = tiny_run
    rows = rows_by_id(result)
    base = rows["transformers/vanilla"]
    for key, value in base["vs_transformers"].items():
        if key != "ttft_speedup_bound":  # a bound, not a ratio of the row to itself
            assert value is None or value == pytest.approx(1.0), key
    for row in result["rows"]:
        vs = row["vs_transformers"]
        assert vs["ttft_speedup"] == pytest.approx(base["timings_ms"]["ttft"] / row["timings_ms"]["ttft"])
        # The bound: the row's merge and prefill at zero, its video decoding and vision tower as measured.
        free = row["timings_ms"]["ttft"] - row["timings_ms"]["merge"] - row["timings_ms"]["prefill"]
        assert vs["ttft_speedup_bound"] == pytest.approx(base["timings_ms"]["ttft"] / free, rel=1e-3)
        assert vs["ttft_speedup_bound"] >= vs["ttft_speedup"]
        assert vs["decode_speedup"] == pytest.approx(row["decode_tokens_per_s"] / base["decode_tokens_per_s"])
        assert vs["paper_flops_ratio"] == pytest.approx(row["flops"]["paper_formula"] / base["flops"]["paper_formula"])
        assert vs["peak_memory_ratio"] == pytest.approx(row["memory"]["peak_mb"] / base["memory"]["peak_mb"])
        assert vs["gpu_peak_memory_ratio"] is None  # CPU run
    target = next(t for t in result["targets"] if t["row"] == "torch/holitom@r10")
    assert target["ttft_speedup"] == rows["torch/holitom@r10"]["vs_transformers"]["ttft_speedup"]
    assert target["ttft_speedup_met"] == (target["ttft_speedup"] >= 5.0)
    assert target["merge_share"] == rows["torch/holitom@r10"]["shares"]["merge"]
    assert target["ttft_speedup_bound"] == rows["torch/holitom@r10"]["vs_transformers"]["ttft_speedup_bound"]


def test_edge_targets_compare_the_rows_issue_13_names(tiny_run):
    result, _ = tiny_run
    printed = io.StringIO()
    report.print_table(result, file=printed)
    rows = rows_by_id(result)
    ort, torch_vanilla = rows["onnxruntime/vanilla"], rows["torch/vanilla"]
    want = {
        "onnxruntime/holitom@r10 TTFT vs transformers": (rows["onnxruntime/holitom@r10"]["vs_transformers"]["ttft_speedup"], 2.5, True),
        "onnxruntime/vanilla TTFT vs torch/vanilla": (torch_vanilla["timings_ms"]["ttft"] / ort["timings_ms"]["ttft"], 1.0, True),
        "onnxruntime/vanilla decode tok/s vs torch/vanilla": (ort["decode_tokens_per_s"] / torch_vanilla["decode_tokens_per_s"], 1.0, True),
        "onnxruntime/vanilla peak memory vs transformers": (ort["memory"]["peak_mb"] / rows["transformers/vanilla"]["memory"]["peak_mb"], 1.0, False),
        "onnxruntime/holitom@r10 peak memory vs transformers": (
            rows["onnxruntime/holitom@r10"]["memory"]["peak_mb"] / rows["transformers/vanilla"]["memory"]["peak_mb"], 1.0, False,
        ),
    }
    got = {t["what"]: t for t in result["edge_targets"]}
    assert set(got) == set(want)
    for what, (value, target, at_least) in want.items():
        t = got[what]
        assert t["value"] == pytest.approx(value) and t["target"] == target and t["at_least"] is at_least
        assert t["met"] == (value >= target if at_least else value <= target)
        assert f"target (edge runtime) {what}: {value:.2f}x" in printed.getvalue()
    bound = got["onnxruntime/holitom@r10 TTFT vs transformers"]["bound"]
    assert bound == rows["onnxruntime/holitom@r10"]["vs_transformers"]["ttft_speedup_bound"]
    assert f"{bound:.2f}x with the merge and prefill taking no time)" in printed.getvalue()
    assert all(t["bound"] is None for what, t in got.items() if what != "onnxruntime/holitom@r10 TTFT vs transformers")


def test_memory_is_measured_per_row(tiny_run):
    result, _ = tiny_run
    for row in result["rows"]:
        mem = row["memory"]
        assert mem["method"] in ("vmhwm", "sampled")
        assert mem["base_mb"] > 0 and mem["process_peak_mb"] > mem["base_mb"]
        assert mem["peak_mb"] == pytest.approx(mem["process_peak_mb"] - mem["base_mb"])
        assert mem["param_mb"] > 0, row["id"]
        assert mem["peak_mb"] >= mem["loaded_mb"] - 1.0  # the peak is reset after loading, at the loaded RSS
        assert mem["gpu_peak_allocated_mb"] is None and mem["gpu_weights_allocated_mb"] is None  # CPU run
    rows = rows_by_id(result)
    # The same weights: the default checkpoint's 5 MB of float32 parameters, loaded by either model code.
    assert rows["torch/vanilla"]["memory"]["param_mb"] == pytest.approx(rows["transformers/vanilla"]["memory"]["param_mb"], rel=0.01)
    assert rows["torch/holitom@r10"]["memory"]["param_mb"] == rows["torch/vanilla"]["memory"]["param_mb"]


def test_files_are_written(tiny_run):
    result, out = tiny_run
    assert json.loads((out / JSON_NAME).read_text()) == json.loads(json.dumps(result))
    for name in (BREAKDOWN_PNG, SCALING_PNG):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name


def test_a_failed_plot_leaves_nothing_written(tiny_run, tmp_path, monkeypatch):
    result, _ = tiny_run

    def broken_plot(result, path):
        raise RuntimeError("simulated plot failure")

    monkeypatch.setattr(report, "plot_scaling", broken_plot)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated"):
        write_outputs(result, out)
    assert list(out.iterdir()) == []  # neither bench.json, nor the first PNG, nor the staging folder


def test_table_has_one_line_per_row(tiny_run):
    result, _ = tiny_run
    header, cells = table_rows(result)
    assert len(cells) == len(result["rows"]) and all(len(c) == len(header) for c in cells)
    assert cells[0][0] == "transformers/vanilla" and cells[0][7] == "1.00x"
    assert not any(math.isnan(float(c[6])) for c in cells)
