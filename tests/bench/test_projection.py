"""The full-depth projection's arithmetic on a synthetic timing table (lines known in advance)."""

from __future__ import annotations

import pytest

from holitom.bench.projection import Depths, linear_fit, probe_depths, project


def timings(vision_layers: int, text_layers: int, vision_per_layer: float, prefill_per_layer: float) -> dict:
    # Fixed parts: 40 ms video decode, 5 ms merge, 100 ms patch embedding + projector, 30 ms embed + LM head.
    vision = 100.0 + vision_layers * vision_per_layer
    prefill = 30.0 + text_layers * prefill_per_layer
    return {"decode_video": 40.0, "vision": vision, "merge": 5.0, "prefill": prefill, "ttft": 45.0 + vision + prefill}


def tokens_per_s(text_layers: int, ms_per_layer: float) -> float:
    return 1e3 / (2.0 + text_layers * ms_per_layer)  # 2 ms per token outside the layers


def test_linear_fit_recovers_the_line():
    assert linear_fit(130.0, 160.0, 1, 2) == pytest.approx((30.0, 100.0))
    assert linear_fit(70.0, 130.0, 2, 4) == pytest.approx((30.0, 10.0))


def test_probe_depths_add_layers_up_to_the_real_depth():
    real = Depths(26, 24)
    assert probe_depths(Depths(1, 2), real) == Depths(2, 4)
    assert probe_depths(Depths(26, 23), real) == Depths(26, 24)  # vision is real already; text capped
    assert probe_depths(Depths(26, 24), real) is None


def test_projection_of_a_synthetic_table_is_the_real_depth_timing():
    a, b, real = Depths(1, 2), Depths(2, 4), Depths(26, 24)
    per_layer = {"transformers": (300.0, 20.0, 1.0), "torch": (250.0, 15.0, 0.5)}  # vision, prefill, decode ms/layer
    rows_a = [
        {"id": name, "timings_ms": timings(a.vision, a.text, v, p), "decode_tokens_per_s": tokens_per_s(a.text, d)}
        for name, (v, p, d) in per_layer.items()
    ]
    rows_b = {
        name: {"timings_ms": timings(b.vision, b.text, v, p), "decode_tokens_per_s": tokens_per_s(b.text, d)}
        for name, (v, p, d) in per_layer.items()
    }
    out = project(rows_a, rows_b, a, b, real, baseline_id="transformers")
    assert "projection" in out["label"] and "not measured" in out["label"]
    assert out["depths"] == {"measured": {"vision": 1, "text": 2}, "probe": {"vision": 2, "text": 4}, "real": {"vision": 26, "text": 24}}
    for name, (v, p, d) in per_layer.items():
        row = out["rows"][name]
        want = timings(26, 24, v, p)
        for part in ("decode_video", "vision", "merge", "prefill", "ttft"):
            assert row["timings_ms"][part] == pytest.approx(want[part])
        assert row["stages"]["vision"]["per_layer_ms"] == pytest.approx(v)
        assert row["stages"]["vision"]["fixed_ms"] == pytest.approx(100.0)
        assert row["stages"]["prefill"]["per_layer_ms"] == pytest.approx(p)
        assert row["stages"]["decode_per_token"]["per_layer_ms"] == pytest.approx(d)
        assert row["decode_tokens_per_s"] == pytest.approx(tokens_per_s(24, d))
        assert row["probe_timings_ms"] == rows_b[name]["timings_ms"]
    torch_vs = out["rows"]["torch"]["vs_transformers"]
    assert torch_vs["ttft_speedup"] == pytest.approx(timings(26, 24, 300, 20)["ttft"] / timings(26, 24, 250, 15)["ttft"])
    assert torch_vs["vision_speedup"] == pytest.approx((100 + 26 * 300) / (100 + 26 * 250))
    assert torch_vs["decode_speedup"] == pytest.approx((2 + 24 * 1.0) / (2 + 24 * 0.5))
    assert out["rows"]["transformers"]["vs_transformers"]["ttft_speedup"] == pytest.approx(1.0)


def test_a_stack_at_its_real_depth_keeps_its_measured_time():
    a, b, real = Depths(26, 2), Depths(26, 4), Depths(26, 24)
    rows_a = [{"id": "x", "timings_ms": timings(26, 2, 300, 20), "decode_tokens_per_s": tokens_per_s(2, 1)}]
    rows_b = {"x": {"timings_ms": {**timings(26, 4, 300, 20), "vision": 9999.0}, "decode_tokens_per_s": tokens_per_s(4, 1)}}
    row = project(rows_a, rows_b, a, b, real, baseline_id=None)["rows"]["x"]
    assert row["timings_ms"]["vision"] == pytest.approx(100 + 26 * 300)  # the first run's, not the probe's
    assert row["stages"]["vision"]["per_layer_ms"] is None
    assert row["timings_ms"]["prefill"] == pytest.approx(30 + 24 * 20)
    assert row["vs_transformers"] is None


def test_the_table_and_the_ttft_plot_label_the_projection(tiny_run, tmp_path):
    from holitom.bench.report import BREAKDOWN_PNG, plot_ttft_breakdown, projection_lines

    result, _ = tiny_run
    assert "projection" not in result  # the default model is not layer-trimmed: nothing to project
    assert projection_lines(result) == []
    rows_b = {r["id"]: {"timings_ms": {k: 1.5 * v for k, v in r["timings_ms"].items()}, "decode_tokens_per_s": r["decode_tokens_per_s"] / 1.5} for r in result["rows"]}
    projected = {**result, "projection": project(result["rows"], rows_b, Depths(1, 2), Depths(2, 4), Depths(26, 24), "transformers/vanilla")}
    lines = projection_lines(projected)
    assert lines[0].startswith("PROJECTED to 26 vision / 24 decoder layers") and "not measured" in lines[0]
    assert len(lines) == 1 + len(result["rows"])
    path = plot_ttft_breakdown(projected, tmp_path / BREAKDOWN_PNG)
    assert path.stat().st_size > 10_000
