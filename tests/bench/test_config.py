"""BenchConfig: validation (typed errors), row planning, and discovery of competing methods."""

from __future__ import annotations

import pytest

from holitom.bench import config as bench_config
from holitom.bench.config import BenchConfig
from holitom.errors import ConfigError


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        (dict(model="llava-ov-99b"), r"model 'llava-ov-99b' is neither an architecture preset"),
        (dict(repeats=0), r"repeats must be an integer >= 1, got 0"),
        (dict(warmup=-1), r"warmup must be an integer >= 0, got -1"),
        (dict(decode_tokens=1), r"decode_tokens must be an integer >= 2"),
        (dict(frames=0), r"frames must be an integer >= 1 and <= 512"),
        (dict(threads=0), r"threads must be an integer >= 1"),
        (dict(backends=("torch", "tensorrtx")), r"unknown backends \['tensorrtx'\]"),
        (dict(backends=()), r"backends must be a non-empty list"),
        (dict(methods=("holitom", "tome")), r"unknown methods \['tome'\]"),
        (dict(ratios=(0.33,)), r"no preset for r = 0.33"),
        (dict(ratios=(0.0,)), r"retain ratio 0.0 must be a number in \(0, 1\]"),
        (dict(ratios=(0.125,)), r"not a whole percentage"),
        (dict(dtype="float16"), r"onnxruntime backend runs the float32 export"),
        (dict(dtype="int8"), r"dtype 'int8' is not one of"),
        (dict(device="tpu"), r"device 'tpu' is not supported"),
        (dict(video="/no/such/clip.mp4"), r"video '/no/such/clip.mp4' does not exist"),
        (dict(model="llava-ov-0.5b", text_layers=1), r"--text-layers must be an integer >= 2"),
        (dict(backends=("transformers", "onnxruntime"), methods=("holitom",), dtype="float32", prompt=" "), r"prompt must be a non-empty"),
        (dict(cuda_graph=True), r"CUDA-graph decoding .*device cpu"),
    ],
)
def test_bad_settings_are_refused(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        BenchConfig(**kwargs)


def test_overrides_are_refused_for_a_checkpoint_folder():
    from holitom.default_model import default_model_dir

    with pytest.raises(ConfigError, match=r"--text-layers change an architecture preset's geometry"):
        BenchConfig(model=str(default_model_dir()), text_layers=2)
    assert BenchConfig(model=str(default_model_dir())).is_arch_preset is False


def test_default_rows():
    config = BenchConfig()
    rows = config.rows()
    ids = [r.id for r in rows]
    assert ids[0] == "transformers/vanilla" and rows[0].is_baseline
    assert len(ids) == len(set(ids)) == 1 + 2 * (1 + 4 + 4)  # baseline + per backend: vanilla + 4 outer-only + 4 full
    assert "onnxruntime/holitom@r25" in ids and "torch/holitom-outer@r15" in ids
    outer = next(r for r in rows if r.id == "torch/holitom-outer@r10")
    assert (outer.preset, outer.inner_merge) == ("r10", False)  # exports carry "r10", not "r10-outer"
    full = next(r for r in rows if r.id == "torch/holitom@r10")
    assert (full.preset, full.inner_merge) == ("r10", True)


def test_filters_and_duplicates():
    config = BenchConfig(backends=("torch", "torch"), methods=("holitom",), ratios=(0.1, 0.10, 0.25))
    assert config.backends == ("torch",) and config.ratios == (0.1, 0.25)
    assert [r.id for r in config.rows()] == ["torch/holitom@r10", "torch/holitom@r25"]
    # The transformers row is the baseline whatever the methods are.
    assert [r.id for r in BenchConfig(backends=("transformers",), methods=("holitom",)).rows()] == ["transformers/vanilla"]


def test_a_registered_competing_method_becomes_a_torch_row(monkeypatch):
    real = bench_config._preset_names()
    monkeypatch.setattr(bench_config, "_preset_names", lambda: [*real, "uniform_pool-r10", "fastv-r10", "fastv-r25"])
    methods = bench_config.method_specs()
    assert {"uniform_pool", "fastv"} <= set(methods)
    assert "r10" not in methods and "r10-outer" not in methods  # HoliTom's own presets are not competitors
    config = BenchConfig(backends=("transformers", "torch", "onnxruntime"), methods=("holitom", "fastv"), ratios=(0.1, 0.25))
    ids = [r.id for r in config.rows()]
    assert "torch/fastv@r10" in ids and "torch/fastv@r25" in ids
    assert not any(i.startswith("onnxruntime/fastv") for i in ids)  # competing methods run on torch only
    assert next(r for r in config.rows() if r.id == "torch/fastv@r25").preset == "fastv-r25"
    with pytest.raises(ConfigError, match=r"method 'uniform_pool' has no preset for r = 0.25"):
        BenchConfig(methods=("uniform_pool",), ratios=(0.25,))
    with pytest.raises(ConfigError, match=r"give no rows"):
        BenchConfig(backends=("onnxruntime",), methods=("fastv",), ratios=(0.1,))


def test_to_dict_round_trips_through_the_constructor():
    config = BenchConfig(model="llava-ov-0.5b", vision_layers=2, ratios=(0.15,), threads=1)
    data = config.to_dict()
    assert data["overrides"] == {"vision_layers": 2}
    again = BenchConfig(**{k: v for k, v in data.items() if k != "overrides"})
    assert again == config


def test_cuda_graph_flags_fill_the_config():
    import argparse

    from holitom.bench.cli import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args(["--no-cuda-graph"])).cuda_graph is False
    assert config_from_args(parser.parse_args([])).cuda_graph is None
    with pytest.raises(ConfigError, match="--cuda-graph"):
        config_from_args(parser.parse_args(["--cuda-graph"]))


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, holitom.bench, holitom.bench.cli, holitom.bench.report; print([m for m in ('torch', 'matplotlib', 'onnxruntime') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
