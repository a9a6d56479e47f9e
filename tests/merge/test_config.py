"""MergeConfig / InnerMergeConfig validation, presets, serialisation and layer resolution."""

from __future__ import annotations

import json
import math

import pytest

import holitom.merge.config as config_module
from holitom.errors import ConfigError
from holitom.merge import InnerMergeConfig, MergeConfig, get_preset, preset_names, register_preset


def test_published_presets():
    names = preset_names()
    for name in ["none", "r10", "r15", "r20", "r25", "r10-outer", "r15-outer", "r20-outer", "r25-outer"]:
        assert name in names
    assert get_preset("none") == MergeConfig()
    assert not get_preset("none").outer_enabled and not get_preset("none").inner_enabled
    for percent in (10, 15, 20, 25):
        full, outer = get_preset(f"r{percent}"), get_preset(f"r{percent}-outer")
        assert full.retain_ratio == outer.retain_ratio == percent / 100
        assert full.tau == outer.tau == (0.65 if percent == 10 else 0.8)
        assert full.beta == 0.6 and full.contextual_frac == 0.0 and full.k_nn == 7 and full.max_window is None
        assert full.inner == InnerMergeConfig(layer=None, layer_frac=18 / 28, ratio=0.5, mode="sequential")
        assert outer.inner is None and outer.outer_enabled and not outer.inner_enabled
        assert full.replace(inner=None) == outer


def test_unknown_preset_lists_known_names():
    with pytest.raises(ConfigError, match="r15-outer"):
        get_preset("r30")


def test_register_preset(monkeypatch):
    # Work on a copy of the registry so the test preset does not leak into other tests.
    monkeypatch.setattr(config_module, "_PRESETS", dict(config_module._PRESETS))
    cfg = MergeConfig(retain_ratio=0.3, tau=0.7)
    register_preset("test-r30", cfg)
    assert get_preset("test-r30") is cfg and "test-r30" in preset_names()
    with pytest.raises(ConfigError, match="already registered"):
        register_preset("test-r30", cfg)
    register_preset("test-r30", cfg.replace(tau=0.75), overwrite=True)
    assert get_preset("test-r30").tau == 0.75
    with pytest.raises(ConfigError, match="MergeConfig"):
        register_preset("bad", {"retain_ratio": 0.1})


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(retain_ratio=0.0), r"retain_ratio.*\(0, 1\]"),
        (dict(retain_ratio=1.01), r"retain_ratio.*\(0, 1\]"),
        (dict(retain_ratio=math.nan), "finite"),
        (dict(retain_ratio="0.1"), "real number"),
        (dict(tau=1.2), r"tau.*\[-1, 1\]"),
        (dict(tau=-1.01), r"tau.*\[-1, 1\]"),
        (dict(tau=math.inf), "finite"),
        (dict(beta=-0.1), r"beta.*\[0, 1\]"),
        (dict(contextual_frac=1.5), r"contextual_frac.*\[0, 1\]"),
        (dict(k_nn=0), "k_nn must be >= 1"),
        (dict(k_nn=2.0), "k_nn must be an integer"),
        (dict(k_nn=True), "k_nn must be an integer"),
        (dict(max_window=0), "max_window"),
        (dict(inner={"ratio": 0.5}), "InnerMergeConfig"),
    ],
)
def test_merge_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        MergeConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(ratio=1.0), r"ratio.*\[0, 1\)"),
        (dict(ratio=-0.1), r"ratio.*\[0, 1\)"),
        (dict(layer=0), "layer must be >= 1"),
        (dict(layer=3.0), "integer"),
        (dict(layer_frac=1.0), r"layer_frac.*\(0, 1\)"),
        (dict(mode="median"), "sequential"),
    ],
)
def test_inner_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        InnerMergeConfig(**kwargs)


def test_edge_values_are_accepted():
    MergeConfig(retain_ratio=1.0, tau=1.0, beta=0.0, contextual_frac=1.0, k_nn=1, max_window=1)
    MergeConfig(retain_ratio=1e-6, tau=-1.0, beta=1.0)
    InnerMergeConfig(ratio=0.0)


def test_resolve_layer():
    inner = InnerMergeConfig()
    assert inner.resolve_layer(28) == 18  # the paper's depth
    assert inner.resolve_layer(24) == 15  # round(15.43)
    assert inner.resolve_layer(2) == 1  # round(1.29) = 1
    assert InnerMergeConfig(layer_frac=0.01).resolve_layer(28) == 1  # round(0.28) = 0, clamped to 1
    assert InnerMergeConfig(layer_frac=0.99).resolve_layer(28) == 27  # round(27.7) = 28, clamped to L-1
    assert InnerMergeConfig(layer=3).resolve_layer(28) == 3  # explicit wins
    with pytest.raises(ConfigError, match=r"outside 1\.\.27"):
        InnerMergeConfig(layer=28).resolve_layer(28)
    with pytest.raises(ConfigError, match="at least 2 layers"):
        inner.resolve_layer(1)


def test_dict_round_trip_is_json_safe():
    for name in preset_names():
        cfg = get_preset(name)
        data = json.loads(json.dumps(cfg.to_dict()))
        # HoliTom presets are MergeConfigs, competing methods' BaselineConfigs: each type reads its own dict.
        assert type(cfg).from_dict(data) == cfg
    cfg = MergeConfig(retain_ratio=0.2, max_window=8, inner=InnerMergeConfig(layer=5, ratio=0.25, mode="mean"))
    assert MergeConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="unknown key"):
        MergeConfig.from_dict({"retain_ratio": 0.1, "gamma": 2})
    with pytest.raises(ConfigError, match="expects a dict"):
        MergeConfig.from_dict([0.1])
    with pytest.raises(ConfigError, match="tau"):
        MergeConfig.from_dict({"tau": 3})


def test_replace_validates():
    cfg = get_preset("r15")
    assert cfg.replace(retain_ratio=0.2).retain_ratio == 0.2
    with pytest.raises(ConfigError, match="retain_ratio"):
        cfg.replace(retain_ratio=2.0)
    with pytest.raises(ConfigError, match="no field"):
        cfg.replace(ratio=0.2)
