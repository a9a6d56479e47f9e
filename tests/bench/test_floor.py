"""The physical floor: the FLOP source at the 7B geometry, the floor arithmetic, the rate's plumbing, --no-flops."""

from __future__ import annotations

import dataclasses
import io
import itertools

import pytest
import torch

from holitom.bench.floor import NO_FLOPS_REASON, MatmulRate, gemm_side, measure_matmul_rate, row_floor
from holitom.bench.report import floor_lines, table_rows
from holitom.errors import ConfigError
from holitom.flops import count_matmul_flops, decoder_matmul_flops, prefill_flops, vision_matmul_flops
from holitom.models.config import LlavaConfig

FRAMES = 32


def _trimmed(cfg: LlavaConfig, vision_layers: int) -> LlavaConfig:
    vision = dataclasses.replace(cfg.vision, num_layers=vision_layers)
    return dataclasses.replace(cfg, vision=vision, vision_feature_layer=-1, text=dataclasses.replace(cfg.text, num_layers=1))


# ---- the FLOP source, at LLaVA-OneVision-7B's geometry ---------------------------------------


def test_vision_closed_form_is_the_issues_21_tflop_at_7b_32_frames():
    cfg = LlavaConfig.from_name("llava-ov-7b")
    assert cfg.num_vision_layers_used == 26 and cfg.vision.num_patches == 729
    total = vision_matmul_flops(cfg, FRAMES)
    # Hand count: per frame 729 patches; a layer 2*(4*729*1152^2 + 2*729^2*1152 + 2*729*1152*4304),
    # the patch conv 2*729*1152*588, the projector 2*729*(1152*3584 + 3584^2).
    n, dv, dm, d = 729, 1152, 4304, 3584
    by_hand = FRAMES * 2 * (n * dv * 588 + 26 * (4 * n * dv * dv + 2 * n * n * dv + 2 * n * dv * dm) + n * dv * d + n * d * d)
    assert total == by_hand
    assert f"{total / 1e12:.2g}" == "21"  # the issue's "about 21 TFLOP in the vision tower"


@pytest.mark.parametrize("layers", [1, 2])
def test_vision_closed_form_matches_the_counter_on_the_7b_widths(layers):
    # The 7B tower at a trimmed depth on the meta device: real widths and 32 real-size frames, no memory, no arithmetic.
    cfg = _trimmed(LlavaConfig.from_name("llava-ov-7b"), layers)
    from holitom.models.llava import LlavaModel

    with torch.device("meta"):
        model = LlavaModel(cfg)
    pixels = torch.empty(FRAMES, 3, cfg.vision.image_size, cfg.vision.image_size, device="meta")
    with torch.no_grad():
        counted = count_matmul_flops(model.encode_video, pixels, with_attention=False)
    assert counted.total == vision_matmul_flops(cfg, FRAMES)


def test_vision_closed_form_matches_the_counter_on_a_small_cpu_model():
    # A real CPU run (fused attention), with and without the key-score pass HoliTom reads.
    from holitom.models.config import TextConfig, VisionConfig
    from holitom.models.llava import LlavaModel

    cfg = LlavaConfig(
        vision=VisionConfig(hidden_size=32, intermediate_size=48, num_layers=2, num_heads=2, image_size=56, patch_size=14),
        text=TextConfig(vocab_size=160000, hidden_size=40, intermediate_size=56, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=20),
    )
    model = LlavaModel(cfg).eval()
    pixels = torch.randn(3, 3, 56, 56)
    with torch.no_grad():
        plain = count_matmul_flops(model.encode_video, pixels, with_attention=False).total
        scored = count_matmul_flops(model.encode_video, pixels, with_attention=True).total
    assert plain == vision_matmul_flops(cfg, 3)
    n, dv = cfg.vision.num_patches, cfg.vision.hidden_size
    assert scored - plain == 2 * 3 * n * n * dv  # the key-score pass: one more q k^T of the last layer


def test_prefill_floor_source_is_the_counted_form_not_the_papers_units():
    # The issue's 40.8 / 2.8 T are the paper's formula (MACs of a textbook MHA layer, visual tokens only);
    # what a floor divides is what runs: Qwen2-7B's GQA + SwiGLU matmuls, 2 FLOPs per MAC.
    t = LlavaConfig.from_name("llava-ov-7b").text
    n = 32 * 196
    paper = prefill_flops(t.num_layers, n, t.hidden_size, t.intermediate_size)
    assert f"{paper / 1e12:.3g}" == "40.8"
    real = decoder_matmul_flops(t.num_layers, n, t.hidden_size, t.intermediate_size, t.num_heads, t.num_kv_heads)
    textbook = decoder_matmul_flops(t.num_layers, n, t.hidden_size, t.intermediate_size, t.num_heads, t.num_heads, ffn_matrices=2)
    assert textbook == 2 * paper  # the same layer, counted in FLOPs
    assert f"{real / 1e12:.3g}" == "97.6"  # the figure a 7B vanilla prefill's floor divides (visual tokens only)


# ---- the floor arithmetic ---------------------------------------------------------------------


def test_row_floor_on_a_synthetic_timing_table():
    timings = {"decode_video": 5.0, "vision": 30.0, "merge": 2.0, "prefill": 63.0, "ttft": 100.0}
    rate = 1e12  # FLOP/s
    floor = row_floor(timings, {"vision": 10e9, "prefill": 40e9}, rate)
    assert floor["reason"] is None
    assert floor["floor_ms"] == pytest.approx({"vision": 10.0, "prefill": 40.0, "ttft": 50.0})
    assert floor["x_floor"] == pytest.approx({"vision": 3.0, "prefill": 63.0 / 40.0, "ttft": 2.0})
    assert floor["flops"] == {"vision": 10e9, "prefill": 40e9}


def test_row_floor_without_flops_or_rate_says_why():
    timings = {"vision": 1.0, "prefill": 1.0, "ttft": 2.0}
    no_flops = row_floor(timings, {"vision": None, "prefill": None}, 1e12, NO_FLOPS_REASON)
    assert no_flops["floor_ms"] is None and no_flops["x_floor"] is None and no_flops["reason"] == NO_FLOPS_REASON
    assert "--no-flops" in NO_FLOPS_REASON
    no_rate = row_floor(timings, {"vision": 1, "prefill": 1}, None)
    assert no_rate["x_floor"] is None and "rate was not measured" in no_rate["reason"]
    half = row_floor(timings, {"vision": None, "prefill": 5}, 1e12)
    assert half["x_floor"] is None and "vision FLOPs were not counted" in half["reason"]


def test_gemm_side_follows_the_width_within_bounds():
    assert gemm_side(3584) == 3584 and gemm_side(896) == 896
    assert gemm_side(100) == 512  # tiny widths time latency, not the rate
    assert gemm_side(3585) == 3648
    assert gemm_side(896, "cuda") == gemm_side(896, "cuda:1") == 4096  # a GPU: the largest side at any width
    assert gemm_side(10_000) == 4096
    with pytest.raises(ConfigError):
        gemm_side(0)


# ---- the rate measurement's plumbing -------------------------------------------------------------


def test_measure_matmul_rate_takes_the_median_of_the_timed_products():
    # Each product "takes" what a fake clock says: the warm-up ones are dropped, the median of the rest is kept.
    ticks = itertools.count()
    durations = iter([0.5, 0.5, 0.004, 0.001, 0.002, 0.003, 0.005])  # 2 warm-up, then 5 timed
    now = [0.0]
    synced = []

    def clock():
        if next(ticks) % 2:  # the reading after the product
            now[0] += next(durations)
        return now[0]

    rate = measure_matmul_rate("cpu", "float32", 512, repeats=5, warmup=2, clock=clock, sync=lambda: synced.append(1))
    assert rate.seconds == pytest.approx((0.004, 0.001, 0.002, 0.003, 0.005))
    assert rate.flops_per_s == pytest.approx(2 * 512**3 / 0.003)
    assert rate.side == 512 and rate.device == "cpu" and rate.dtype == "float32" and rate.warmup == 2
    assert rate.threads == torch.get_num_threads()
    assert len(synced) == 2 * 7  # before and after every product
    d = rate.to_dict()
    assert d["seconds"] == list(rate.seconds) and d["flops_per_s"] == rate.flops_per_s and "method" in d
    assert "TFLOP/s" in rate.describe()


def test_measure_matmul_rate_really_runs_on_the_cpu():
    rate = measure_matmul_rate("cpu", "float32", 64, repeats=2, warmup=1)
    assert rate.flops_per_s > 0 and len(rate.seconds) == 2


def test_measure_matmul_rate_refuses_a_clock_that_does_not_advance():
    with pytest.raises(ConfigError, match="clock"):
        measure_matmul_rate("cpu", "float32", 64, repeats=1, warmup=0, clock=lambda: 1.0)


# ---- the report ----------------------------------------------------------------------------------


def _result(floor, rate):
    row = {
        "id": "torch/vanilla",
        "tokens": {"visual_in": 4, "after_outer": 5, "after_inner": 5, "prompt": 9},
        "timings_ms": {"decode_video": 1.0, "vision": 30.0, "merge": 0.0, "prefill": 63.0, "ttft": 94.0},
        "shares": {"merge": 0.0},
        "decode_tokens_per_s": 10.0,
        "flops": {"paper_formula": 1.0, "counted": None},
        "floor": floor,
    }
    return {"rows": [row], "matmul_rate": rate}


def test_table_shows_distance_to_the_floor_and_the_rate():
    rate = MatmulRate(1e12, 512, "cpu", "float32", 2, 1, (0.1, 0.2, 0.3)).to_dict()
    floor = row_floor({"vision": 30.0, "prefill": 63.0, "ttft": 94.0}, {"vision": 10e9, "prefill": 40e9}, 1e12)
    header, cells = table_rows(_result(floor, rate))
    got = dict(zip(header, cells[0]))
    assert got["TTFT/floor"] == "1.88x" and got["vision/floor"] == "3.00x" and got["prefill/floor"] == "1.57x"
    lines = floor_lines(_result(floor, rate))
    assert lines[0].startswith("1 TFLOP/s measured matmul rate (float32 512^3 GEMM on cpu, 2 threads, median of 3)")
    assert len(lines) == 1


def test_table_says_why_the_floor_is_absent_with_no_flops():
    floor = row_floor({"vision": 30.0, "prefill": 63.0, "ttft": 94.0}, {"vision": None, "prefill": None}, 1e12, NO_FLOPS_REASON)
    result = _result(floor, MatmulRate(1e12, 512, "cpu", "float32", 2, 1, (0.1,)).to_dict())
    header, cells = table_rows(result)
    got = dict(zip(header, cells[0]))
    assert got["TTFT/floor"] == got["vision/floor"] == got["prefill/floor"] == "no FLOPs"
    assert NO_FLOPS_REASON in floor_lines(result)
    from holitom.bench.report import print_table

    out = io.StringIO()
    print_table(result | {"settings": _settings(), "targets": []}, file=out)
    assert "--no-flops" in out.getvalue()


def _settings():
    return {
        "frames": 2, "device": "cpu", "dtype": "float32", "repeats": 1, "warmup": 0, "checkpoint": "x", "arch": None,
        "model_geometry": {"tokens_per_frame": 2, "image_size": 28, "vision_layers_used": 1, "vision_hidden_size": 8,
                           "text_layers": 1, "text_hidden_size": 8},
    }


# ---- the projection's floor --------------------------------------------------------------------


def test_projected_flops_are_the_closed_forms_at_the_real_depth():
    from types import SimpleNamespace

    from holitom.bench.config import RowSpec
    from holitom.bench.projection import Depths
    from holitom.bench.runner import ResolvedModel, _projected_flops, row_merge_config
    from holitom.models.facts import split_layer

    real_cfg = LlavaConfig.from_name("llava-ov-7b")
    measured, real = Depths(1, 2), Depths(26, 28)
    cfg = _trimmed(real_cfg, 1)
    cfg = dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, num_layers=2))
    t = cfg.text
    rows = [RowSpec("transformers", "vanilla", None, "none", True), RowSpec("torch", "holitom", 0.1, "r10", True)]
    tokens = [
        {"visual_in": 6272, "after_outer": 6273, "after_inner": 6273, "prompt": 6300},
        {"visual_in": 6272, "after_outer": 700, "after_inner": 350, "prompt": 727},
    ]
    extra = 2 * t.hidden_size * t.vocab_size  # lm_head: depth-free, kept as counted

    def decoder(depth, k, seq, tail):
        return decoder_matmul_flops(k, seq, t.hidden_size, t.intermediate_size, t.num_heads, t.num_kv_heads) + decoder_matmul_flops(
            depth - k, tail, t.hidden_size, t.intermediate_size, t.num_heads, t.num_kv_heads
        )

    out_rows = []
    for spec, tok in zip(rows, tokens):
        tail = tok["prompt"] - tok["after_outer"] + tok["after_inner"]
        k = split_layer(row_merge_config(spec), 2)
        out_rows.append({"id": spec.id, "tokens": tok, "flops": {
            "counted": decoder(2, k, tok["prompt"], tail) + extra, "counted_vision": vision_matmul_flops(cfg, FRAMES) + 7,
        }})
    config = SimpleNamespace(frames=FRAMES)
    got = _projected_flops(config, rows, out_rows, ResolvedModel(None, None, cfg), measured, None, real)
    for spec, tok in zip(rows, tokens):
        tail = tok["prompt"] - tok["after_outer"] + tok["after_inner"]
        k_real = split_layer(row_merge_config(spec), 28)
        assert got[spec.id]["prefill"] == decoder(28, k_real, tok["prompt"], tail) + extra
        assert got[spec.id]["vision"] == vision_matmul_flops(real_cfg, FRAMES) + 7  # the score pass (here 7) is kept
    assert split_layer(row_merge_config(rows[1]), 28) == 18  # the paper's K at the real depth
    # The vanilla row at the real depth: the 7B prefill over its whole prompt.
    assert got[rows[0].id]["prefill"] == decoder_matmul_flops(28, 6300, t.hidden_size, t.intermediate_size, t.num_heads, t.num_kv_heads) + extra


def test_projected_rows_carry_their_floor():
    from holitom.bench.projection import Depths, project
    from holitom.bench.report import projection_lines

    def tm(vision, prefill):
        return {"decode_video": 1.0, "vision": vision, "merge": 1.0, "prefill": prefill, "ttft": 2.0 + vision + prefill}

    rows_a = [{"id": "x", "timings_ms": tm(10.0, 20.0), "decode_tokens_per_s": 10.0}]
    rows_b = {"x": {"timings_ms": tm(20.0, 30.0), "decode_tokens_per_s": 5.0}}
    a, b, real = Depths(1, 2), Depths(2, 4), Depths(3, 6)
    out = project(rows_a, rows_b, a, b, real, None, flops={"x": {"vision": 15e9, "prefill": 20e9}}, rate=1e12)
    row = out["rows"]["x"]
    assert row["timings_ms"]["vision"] == pytest.approx(30.0) and row["timings_ms"]["prefill"] == pytest.approx(40.0)
    assert row["floor"]["floor_ms"] == pytest.approx({"vision": 15.0, "prefill": 20.0, "ttft": 35.0})
    assert row["floor"]["x_floor"]["ttft"] == pytest.approx(72.0 / 35.0)
    no_flops = project(rows_a, rows_b, a, b, real, None, flops=None, rate=1e12)["rows"]["x"]["floor"]
    assert no_flops["reason"] == NO_FLOPS_REASON
    line = projection_lines({"projection": out})[1]
    assert "/floor: TTFT 2.06x, vision 2.00x, prefill 2.00x" in line
