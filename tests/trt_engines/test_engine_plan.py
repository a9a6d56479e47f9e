"""What `holitom build-engines` hands to Polygraphy, as pure functions of the model sizes."""

from __future__ import annotations

import onnx
import pytest

from holitom import contracts as C
from holitom.errors import ConfigError
from holitom.export import engines as E

# LLaVA-OneVision-7B's sizes: 28 layers split at K=18, 4 KV heads of 128, 14x14 pooled grid.
DIMS_7B = C.ModelDims(num_layers=28, inner_layer=18, hidden_size=3584, num_kv_heads=4, head_dim=128,
                      vocab_size=152064, image_size=384, tokens_per_frame=196)


def test_dim_ranges_for_7b():
    r = E.dim_ranges(DIMS_7B, (14, 14))
    # visual opt: ceil(32 * 196 * 0.15) + 1 newline = 942; max: 64 frames * (196 + 14 row newlines) + 1 = 13441
    assert r == {
        C.FRAMES: (1, 32, 64),
        C.VISUAL: (1, 942, 13441),
        C.SEQUENCE: (1, 942 + 128, 13441 + 1024),
        C.TAIL_SEQUENCE: (1, 1070 - 471, 14465),
        C.PAST_HEAD: (1, 1070, 14465 + 1024),
        C.PAST_TAIL: (1, 599, 15489),
    }


def test_every_named_input_dimension_has_an_ordered_range():
    ranges = E.dim_ranges(DIMS_7B, (14, 14))
    for spec in C.stage_specs(DIMS_7B).values():
        for t in spec.inputs:
            for d in t.shape:
                if isinstance(d, str):
                    lo, opt, hi = ranges[d]
                    assert 1 <= lo <= opt <= hi, (spec.name, t.name, d)


def test_profile_shapes_vision_and_decode_step():
    ranges = E.dim_ranges(DIMS_7B, (14, 14))
    specs = C.stage_specs(DIMS_7B)
    vision = E.profile_shapes(specs[C.VISION], ranges)
    assert vision == {"pixel_values": ((1, 3, 384, 384), (32, 3, 384, 384), (64, 3, 384, 384))}
    step = E.profile_shapes(specs[C.DECODE_STEP], ranges)
    assert step["inputs_embeds"] == ((1, 1, 3584),) * 3
    # The two KV groups get their own lengths: layers < K the full prompt, layers >= K the merged one.
    assert step[C.past_key_name(17)] == ((1, 4, 1, 128), (1, 4, 1070, 128), (1, 4, 15489, 128))
    assert step[C.past_value_name(18)] == ((1, 4, 1, 128), (1, 4, 599, 128), (1, 4, 15489, 128))
    assert len(step) == 2 + 2 * 28


def test_profile_shapes_skip_inputs_the_graph_dropped():
    ranges = E.dim_ranges(DIMS_7B, (14, 14))
    shapes = E.profile_shapes(C.stage_specs(DIMS_7B)[C.DECODER_TAIL], ranges, present=["hidden_states"])
    assert list(shapes) == ["hidden_states"]


def test_profile_config_validation_and_max_frames():
    assert E.dim_ranges(DIMS_7B, (14, 14), E.ProfileConfig(opt_frames=8, max_frames=16))[C.FRAMES] == (1, 8, 16)
    with pytest.raises(ConfigError, match="frames"):
        E.ProfileConfig(opt_frames=65)
    with pytest.raises(ConfigError, match="opt_retain"):
        E.ProfileConfig(opt_retain=0.0)


def test_builder_flags():
    assert E.builder_flags(C.DECODER_HEAD, "fp16", False) == {"fp16": True, "bf16": False, "int8": False}
    assert E.builder_flags(C.VISION, "bf16", True) == {"fp16": False, "bf16": True, "int8": True}
    # Merge stages decide windows and kept tokens: they stay float32 whatever the model precision.
    for stage in (C.OUTER_MERGE, C.INNER_MERGE):
        assert E.builder_flags(stage, "fp16", False) == {"fp16": False, "bf16": False, "int8": False}
    with pytest.raises(ConfigError, match="precision"):
        E.builder_flags(C.VISION, "int4", False)


def test_plugin_limits():
    E.check_plugin_limits("aot", E.ProfileConfig(max_frames=64))
    E.check_plugin_limits("none", E.ProfileConfig(max_frames=128))
    with pytest.raises(ConfigError, match="exceeds the 64 frames"):
        E.check_plugin_limits("aot", E.ProfileConfig(max_frames=65))
    with pytest.raises(ConfigError, match="plugins"):
        E.check_plugin_limits("python", E.ProfileConfig())


def test_has_qdq():
    h = onnx.helper
    plain = h.make_model(h.make_graph([h.make_node("Relu", ["x"], ["y"])], "g", [], []))
    assert not E.has_qdq(plain)
    quantized = h.make_model(h.make_graph([h.make_node("QuantizeLinear", ["x", "s"], ["q"])], "g", [], []))
    assert E.has_qdq(quantized)


def test_graph_jobs_cover_every_exported_graph(default_export, default_manifest):
    jobs = E.graph_jobs(default_manifest)
    assert sorted(j.onnx_file for j in jobs) == sorted(e.file for e in default_manifest.all_graph_entries())
    assert {j.onnx_file: j.engine_file for j in jobs}["outer_merge.r15.onnx"] == "outer_merge.r15.engine"
    assert all((default_export / j.onnx_file).is_file() for j in jobs)


def test_profiles_of_the_default_export_fit_its_files(default_export, default_manifest):
    """Every engine input of every exported graph gets a profile, built with Polygraphy's own Profile."""
    from holitom.export.onnx_io import graph_io

    Profile = pytest.importorskip("polygraphy.backend.trt", reason="polygraphy is not installed").Profile
    ranges = E.dim_ranges(default_manifest.dims, default_manifest.grid)
    specs = C.stage_specs(default_manifest.dims)
    for job in E.graph_jobs(default_manifest):
        io = graph_io(onnx.load(str(default_export / job.onnx_file), load_external_data=False))
        present = [name for name, _, _ in io["inputs"]]
        shapes = E.profile_shapes(specs[job.stage], ranges, present)
        assert sorted(shapes) == sorted(present), job.onnx_file
        profile = Profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.add(name, min=lo, opt=opt, max=hi)
        for (name, _, declared), (lo, _, hi) in zip(io["inputs"], (shapes[n] for n in present)):
            fixed = [i for i, d in enumerate(declared) if isinstance(d, int)]
            assert all(lo[i] == hi[i] == declared[i] for i in fixed), (job.onnx_file, name)
