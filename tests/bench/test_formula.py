"""The paper's FLOPs figures through the architecture presets, with no weights materialised."""

from __future__ import annotations

import dataclasses

import pytest

from holitom.bench.archs import get_arch
from holitom.models.config import PRESET_NAMES
from holitom.bench.runner import paper_nominal_flops
from holitom.merge import get_preset


def test_llava_ov_7b_reproduces_40_8_and_2_8_tflops(bench_cache):
    arch = get_arch("llava-ov-7b")
    assert (arch.text.num_layers, arch.text.hidden_size, arch.text.intermediate_size) == (28, 3584, 18944)
    assert arch.patch_grid == 27 and arch.pooled_grid == (14, 14) and arch.tokens_per_frame == 196
    vanilla = paper_nominal_flops(arch.text, arch.tokens_per_frame, 32, get_preset("none"))
    holitom = paper_nominal_flops(arch.text, arch.tokens_per_frame, 32, get_preset("r10"))
    outer_only = paper_nominal_flops(arch.text, arch.tokens_per_frame, 32, get_preset("r10-outer"))
    assert vanilla == 40_765_480_763_392 and f"{vanilla / 1e12:.3g}" == "40.8"
    assert holitom == 2_756_958_285_312 and f"{holitom / 1e12:.2g}" == "2.8"  # n = round(627.2) = 627, K = 18, R = 0.5 (tests/test_flops.py)
    assert holitom < outer_only < vanilla
    assert get_preset("r10").inner.resolve_layer(arch.text.num_layers) == 18
    # Nothing was written: the formula needs the dims only.
    assert not any(bench_cache.rglob("*.safetensors"))


def test_llava_ov_05b_dims():
    arch = get_arch("llava-ov-0.5b")
    v, t = arch.vision, arch.text
    assert (v.hidden_size, v.num_layers, v.num_heads, v.intermediate_size, v.image_size, v.patch_size) == (1152, 26, 16, 4304, 384, 14)
    assert (t.hidden_size, t.num_layers, t.num_heads, t.num_kv_heads, t.intermediate_size, t.vocab_size) == (896, 24, 14, 2, 4864, 151936)
    assert arch.config.tie_word_embeddings and not get_arch("llava-ov-7b").config.tie_word_embeddings
    assert get_preset("r10").inner.resolve_layer(t.num_layers) == 15  # round(18/28 * 24)
    cfg = arch.config
    assert cfg.num_vision_layers_used == 26 and cfg.tokens_per_frame == 196


@pytest.mark.parametrize(
    "image_size,variant,grid,tokens",
    [
        (384, "onevision", 27, 196),  # bilinear resize to ceil(27/2) = 14
        (192, "onevision", 13, 49),  # ceil(13/2) = 7
        (224, "onevision", 16, 64),
        (384, "llava_video", 27, 169),  # 2x2 average pooling, floor(27/2) = 13
        (192, "llava_video", 13, 36),
    ],
)
def test_resolution_overrides_follow_the_pooling(image_size, variant, grid, tokens):
    base = get_arch("llava-ov-0.5b")
    arch = dataclasses.replace(base, config=dataclasses.replace(base.config, variant=variant)).with_overrides(image_size=image_size)
    assert arch.patch_grid == grid and arch.tokens_per_frame == tokens
    assert arch.overrides == ({"image_size": image_size} if image_size != 384 else {"image_size": 384})


def test_overrides_are_validated():
    from holitom.errors import ConfigError

    arch = get_arch("llava-ov-0.5b")
    with pytest.raises(ConfigError, match=r"--text-layers must be an integer >= 2 and <= 24, got 1"):
        arch.with_overrides(text_layers=1)
    with pytest.raises(ConfigError, match=r"--image-size must be an integer >= 28 and <= 384, got 20"):
        arch.with_overrides(image_size=20)
    with pytest.raises(ConfigError, match=r"--vocab-size must be an integer >= 1280"):
        arch.with_overrides(vocab_size=1000, min_vocab_size=1280)
    with pytest.raises(ConfigError, match=r"unknown model preset 'llava-ov-99b'"):
        get_arch("llava-ov-99b")
    smaller = arch.with_overrides(vision_layers=3, text_layers=4, vocab_size=4096)
    assert (smaller.vision.num_layers, smaller.text.num_layers, smaller.text.vocab_size) == (3, 4, 4096)
    assert smaller.vision.hidden_size == 1152 and smaller.text.hidden_size == 896  # widths stay real
    assert smaller.cache_key() != arch.cache_key()
    assert set(PRESET_NAMES) == {"default", "llava-ov-0.5b", "llava-ov-7b"}
