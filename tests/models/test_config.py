"""LlavaConfig parsing of llava-hf config.json dicts (transformers 4.x and 5.x flavours)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from holitom.errors import CheckpointError, ConfigError
from holitom.default_model import default_model_dir
from holitom.models.config import PRESET_NAMES, SIGLIP_SO400M, LlavaConfig, TextConfig, VisionConfig

# Shaped like llava-hf/llava-onevision-qwen2-0.5b-ov-hf's config.json (transformers 4.x era):
# many keys left to transformers' defaults, tie_word_embeddings only in text_config, rope_theta top-level.
ONEVISION_05B = {
    "architectures": ["LlavaOnevisionForConditionalGeneration"],
    "image_token_index": 151646,
    "model_type": "llava_onevision",
    "projector_hidden_act": "gelu",
    "text_config": {
        "architectures": ["Qwen2ForCausalLM"],
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "hidden_size": 896,
        "intermediate_size": 4864,
        "max_position_embeddings": 32768,
        "max_window_layers": 24,
        "model_type": "qwen2",
        "num_attention_heads": 14,
        "num_hidden_layers": 24,
        "num_key_value_heads": 2,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "vocab_size": 152000,
    },
    "torch_dtype": "float16",
    "use_image_newline_parameter": True,
    "video_token_index": 151647,
    "vision_aspect_ratio": "anyres_max_9",
    "vision_config": {
        "hidden_size": 1152,
        "image_size": 384,
        "intermediate_size": 4304,
        "model_type": "siglip_vision_model",
        "num_attention_heads": 16,
        "num_hidden_layers": 26,
        "patch_size": 14,
        "vision_use_head": False,
    },
    "vision_feature_layer": -1,
    "vision_feature_select_strategy": "full",
}


def test_llava_hf_config_parses_with_transformers_defaults():
    cfg = LlavaConfig.from_hf_dict(ONEVISION_05B)
    assert cfg.variant == cfg.layout == "onevision" and cfg.pooling == "bilinear"
    assert cfg.vision == VisionConfig(
        hidden_size=1152, intermediate_size=4304, num_layers=26, num_heads=16, image_size=384, patch_size=14,
        num_channels=3, layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh", use_head=False,
    )
    assert cfg.vision.patch_grid == 27 and cfg.vision.num_patches == 729
    t = cfg.text
    assert (t.hidden_size, t.num_layers, t.num_heads, t.num_kv_heads, t.head_dim) == (896, 24, 14, 2, 64)
    assert t.rope_theta == 1e6 and t.rms_norm_eps == 1e-6 and t.hidden_act == "silu"
    assert t.eos_token_ids == (151645,) and t.bos_token_id == 151643 and t.vocab_size == 152000
    assert cfg.tie_word_embeddings  # forwarded from text_config, as transformers does
    assert (cfg.video_token_id, cfg.image_token_id) == (151647, 151646)
    assert cfg.num_vision_layers_used == 26 and cfg.vision_attention_layer == 25
    assert cfg.pooled_grid == (14, 14) and cfg.tokens_per_frame == 196
    assert cfg.hidden_size == 896 and cfg.num_layers == 24
    assert cfg.num_video_tokens(32) == 32 * 196 + 1


def test_llava_video_geometry():
    cfg = LlavaConfig.from_hf_dict(ONEVISION_05B, variant="llava_video")
    assert cfg.layout == "llava_video" and cfg.pooling == "avg"
    assert cfg.pooled_grid == (13, 13) and cfg.tokens_per_frame == 169
    assert cfg.num_video_tokens(32) == 32 * 13 * 14
    from_json = LlavaConfig.from_hf_dict({**ONEVISION_05B, "holitom_variant": "llava_video"})
    assert from_json == cfg
    assert LlavaConfig.from_hf_dict({**ONEVISION_05B, "holitom_variant": "llava_video"}, variant="onevision").layout == "onevision"


def test_feature_layer_selection_resolves_like_transformers_hidden_states():
    # hidden_states has num_layers + 1 entries: index 0 is the patch embedding.
    assert LlavaConfig.from_hf_dict({**ONEVISION_05B, "vision_feature_layer": -2}).num_vision_layers_used == 25
    assert LlavaConfig.from_hf_dict({**ONEVISION_05B, "vision_feature_layer": 3}).num_vision_layers_used == 3
    assert LlavaConfig.from_hf_dict({**ONEVISION_05B, "vision_feature_layer": [-1]}).num_vision_layers_used == 26
    with pytest.raises(CheckpointError, match="out of range"):
        LlavaConfig.from_hf_dict({**ONEVISION_05B, "vision_feature_layer": 27})


def test_transformers5_flavour_and_missing_vision_config():
    d = json.loads(json.dumps(ONEVISION_05B))
    tc = d["text_config"]
    del tc["rope_theta"]
    tc["rope_parameters"] = {"rope_type": "default", "rope_theta": 500000.0}
    tc["layer_types"] = ["full_attention"] * 24
    tc["use_sliding_window"] = False
    del d["vision_config"]  # LlavaOnevisionConfig then uses SigLIP-so400m minus its last layer
    cfg = LlavaConfig.from_hf_dict(d)
    assert cfg.text.rope_theta == 500000.0
    assert (cfg.vision.hidden_size, cfg.vision.num_layers, cfg.vision.image_size, cfg.vision.patch_size) == (1152, 26, 384, 14)


def test_to_dict_round_trip_is_json():
    cfg = LlavaConfig.from_hf_dict(ONEVISION_05B, variant="llava_video")
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["layout"] == "llava_video" and d["pooled_grid"] == [13, 13] and d["tokens_per_frame"] == 169
    assert LlavaConfig.from_dict(d) == cfg
    with pytest.raises(ConfigError, match="layout"):
        LlavaConfig.from_dict({**d, "layout": "onevision"})
    with pytest.raises(ConfigError, match="not a LlavaConfig dict"):
        LlavaConfig.from_dict({"vision": {}})


def test_direct_construction_is_validated():
    vision = VisionConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, image_size=56, patch_size=14)
    text = TextConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16)
    with pytest.raises(ConfigError, match="variant 'x'"):
        LlavaConfig(vision=vision, text=text, variant="x", image_token_id=1, video_token_id=2)
    with pytest.raises(ConfigError, match="outside the vocabulary"):
        LlavaConfig(vision=vision, text=text)  # default token ids exceed a 128-token vocabulary
    with pytest.raises(ConfigError, match="num_kv_heads"):
        TextConfig(vocab_size=8, hidden_size=64, intermediate_size=8, num_layers=1, num_heads=4, num_kv_heads=3, head_dim=16)
    with pytest.raises(ConfigError, match="divisible"):
        VisionConfig(hidden_size=30, intermediate_size=64, num_layers=2, num_heads=4, image_size=56, patch_size=14)


def test_config_module_does_not_import_torch():
    code = "import sys, holitom.models.config\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_model_code_does_not_import_transformers():
    code = (
        "import sys, holitom.models.llava, holitom.models.loading\n"
        "print('transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_round_trip_through_the_llava_hf_config(name):
    # A preset is materialised through its llava-hf dict (transformers reads it); parsing it back
    # must give the same geometry, or a benchmark would time another model than it names.
    cfg = LlavaConfig.from_name(name)
    assert LlavaConfig.from_hf_dict(cfg.to_hf_dict()) == cfg
    assert cfg.tokens_per_frame == 196 and cfg.num_vision_layers_used == cfg.vision.num_layers


def test_preset_geometries_are_the_released_models():
    half, seven = LlavaConfig.from_name("llava-ov-0.5b"), LlavaConfig.from_name("llava-ov-7b")
    assert half.vision == seven.vision == SIGLIP_SO400M and SIGLIP_SO400M.patch_grid == 27
    assert (half.text.hidden_size, half.text.num_layers, half.text.num_kv_heads, half.text.head_dim) == (896, 24, 2, 64)
    assert (seven.text.hidden_size, seven.text.num_layers, seven.text.num_kv_heads, seven.text.head_dim) == (3584, 28, 4, 128)
    assert half.tie_word_embeddings and not seven.tie_word_embeddings
    assert LlavaConfig.from_name("default") == LlavaConfig.from_pretrained(default_model_dir())
    # The released 0.5B config.json (as llava-hf ships it) describes the same tower and decoder; only the
    # vocabulary differs (llava-hf pads the embedding to 152000 rows; the preset keeps Qwen2's 151936).
    released = LlavaConfig.from_hf_dict(ONEVISION_05B)
    assert released.vision == half.vision
    assert dataclasses.replace(released.text, bos_token_id=None, eos_token_ids=(), vocab_size=151936) == half.text


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown model preset 'llava-ov-99b'; choose one of \['default', 'llava-ov-0.5b', 'llava-ov-7b'\]"):
        LlavaConfig.from_name("llava-ov-99b")
