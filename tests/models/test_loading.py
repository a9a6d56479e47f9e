"""Checkpoint loading: both key layouts, shards, tied embeddings, dtypes, and every documented failure."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import transformers
from holitom.errors import CheckpointError, ConfigError
from holitom.models.loading import canonical_key, load_llava, read_state_dict
from tiny_llava import frames, max_diff, prompt_ids, set_config_key, write_checkpoint


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_same_params(a, b) -> None:
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k


def _copy_config(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "config.json", dst / "config.json")


@torch.no_grad()
def _text_logits(model, ids: torch.Tensor) -> torch.Tensor:
    return model.prefill(model.embed(ids[None]), torch.arange(len(ids))[None])[0]


def test_save_pretrained_single_file_loads_all_weights(onevision_ckpt):
    path = onevision_ckpt.path
    assert (path / "model.safetensors").is_file() and not (path / "model.safetensors.index.json").exists()
    model = load_llava(path)
    hf = onevision_ckpt.hf
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert torch.equal(model.embed_tokens.weight, hf.model.language_model.embed_tokens.weight)
    assert torch.equal(model.lm_head.weight, hf.lm_head.weight)
    assert torch.equal(model.image_newline, hf.model.image_newline)
    assert torch.equal(model.vision.layers[2].mlp.fc2.bias, hf.model.vision_tower.encoder.layers[2].mlp.fc2.bias)
    assert torch.equal(model.decoder.layers[3].self_attn.k_proj.bias, hf.model.language_model.layers[3].self_attn.k_proj.bias)
    assert torch.equal(model.projector.linear_1.weight, hf.model.multi_modal_projector.linear_1.weight)
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_sharded_checkpoint_loads_identically(tmp_path, onevision_ckpt):
    onevision_ckpt.hf.save_pretrained(str(tmp_path), max_shard_size="20KB")
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 3 and (tmp_path / "model.safetensors.index.json").is_file()
    _assert_same_params(load_llava(tmp_path), load_llava(onevision_ckpt.path))


def _classic_name(hf_name: str) -> str:
    """transformers-5 in-memory name -> the llava-hf 4.x on-disk name."""
    if hf_name == "lm_head.weight":
        return "language_model.lm_head.weight"
    if hf_name.startswith("model.language_model."):
        return "language_model.model." + hf_name[len("model.language_model.") :]
    if hf_name.startswith("model.vision_tower."):
        return "vision_tower.vision_model." + hf_name[len("model.vision_tower.") :]
    return hf_name[len("model.") :]


def test_classic_llava_hf_key_names_load(tmp_path, onevision_ckpt):
    hf_state = onevision_ckpt.hf.state_dict()
    classic = {_classic_name(k): v.contiguous() for k, v in hf_state.items()}
    assert "vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight" in classic
    assert "language_model.model.layers.0.self_attn.q_proj.weight" in classic and "image_newline" in classic
    save_file(classic, str(tmp_path / "model.safetensors"))
    _copy_config(onevision_ckpt.path, tmp_path)
    _assert_same_params(load_llava(tmp_path), load_llava(onevision_ckpt.path))
    # The fixture really is the llava-hf layout: transformers itself reads it back unchanged.
    reread = transformers.LlavaOnevisionForConditionalGeneration.from_pretrained(str(tmp_path))
    assert all(torch.equal(reread.state_dict()[k], v) for k, v in hf_state.items())


@pytest.mark.parametrize("vision_model_level", [False, True])
def test_transformers5_key_names_load(tmp_path, onevision_ckpt, vision_model_level):
    state = {}
    for k, v in onevision_ckpt.hf.state_dict().items():
        if vision_model_level and k.startswith("model.vision_tower."):
            k = "model.vision_tower.vision_model." + k[len("model.vision_tower.") :]
        state[k] = v.contiguous()
    assert "lm_head.weight" in state and "model.image_newline" in state
    save_file(state, str(tmp_path / "model.safetensors"))
    _copy_config(onevision_ckpt.path, tmp_path)
    _assert_same_params(load_llava(tmp_path), load_llava(onevision_ckpt.path))


def test_canonical_key_maps_both_layouts_to_one_name():
    pairs = [
        ("language_model.model.layers.3.mlp.up_proj.weight", "model.language_model.layers.3.mlp.up_proj.weight"),
        ("language_model.lm_head.weight", "lm_head.weight"),
        ("vision_tower.vision_model.encoder.layers.1.layer_norm1.bias", "model.vision_tower.encoder.layers.1.layer_norm1.bias"),
        ("multi_modal_projector.linear_2.bias", "model.multi_modal_projector.linear_2.bias"),
        ("image_newline", "model.image_newline"),
    ]
    for classic, new in pairs:
        assert canonical_key(classic) == canonical_key(new)


def test_tied_embeddings_share_one_weight(tmp_path):
    ckpt = write_checkpoint(tmp_path / "tied", tie=True, text_layers=2, seed=4)
    model = load_llava(ckpt.path)
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight is model.embed_tokens.weight
    ids = prompt_ids(2, 2)
    ids = ids[ids != 100]
    with torch.no_grad():
        ref = ckpt.hf(input_ids=ids[None]).logits
    assert max_diff(_text_logits(model, ids), ref) <= 1e-4


def test_dtype_load_and_bf16_forward(onevision_ckpt):
    for dtype in (torch.float16, torch.bfloat16):
        model = load_llava(onevision_ckpt.path, dtype=dtype)
        assert {p.dtype for p in model.parameters()} == {dtype}
        assert model.dtype == dtype
    model = load_llava(onevision_ckpt.path, dtype=torch.bfloat16)
    with torch.no_grad():
        vf = model.encode_video(frames(2, 56))
        assert vf.features.dtype == torch.bfloat16 and vf.attention.dtype == torch.float32
        embeds, span = model.splice_video(prompt_ids(), model.unmerged_video_tokens(vf.features))
        positions = torch.arange(embeds.shape[1])[None]
        logits, past = model.prefill(embeds, positions)
        head = model.decoder_head(embeds, positions, 2, span)
        tail = model.decoder_tail(head.hidden, positions, 2)
        step, _ = model.decode_step(model.embed(torch.tensor([[5]])), positions[:, -1:] + 1, head.present + tail.present)
    for t in (logits, tail.logits, step, head.attn_row, vf.attention):
        assert torch.isfinite(t.float()).all()
    assert logits.dtype == torch.bfloat16 and past[0][0].dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="dtype"):
        load_llava(onevision_ckpt.path, dtype=torch.float64)


def test_variant_precedence(tmp_path, onevision_ckpt):
    assert load_llava(onevision_ckpt.path).layout == "onevision"  # default
    path = tmp_path / "ckpt"
    shutil.copytree(onevision_ckpt.path, path)
    set_config_key(path, "holitom_variant", "llava_video")
    assert load_llava(path).layout == "llava_video"  # config.json
    assert load_llava(path, variant="onevision").layout == "onevision"  # explicit argument wins
    assert load_llava(path, variant="onevision").grid == (2, 2)
    with pytest.raises(ConfigError, match="variant 'llava-video'"):
        load_llava(path, variant="llava-video")
    set_config_key(path, "holitom_variant", "video")
    with pytest.raises(CheckpointError, match="holitom_variant='video'"):
        load_llava(path)


# ---- failures ------------------------------------------------------------------------


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_llava(tmp_path / "nope")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="'.*model.safetensors' is a file, not a folder; pass the folder"):
        load_llava(tmp_path / "model.safetensors")  # the weights file instead of its folder


def test_directory_without_weights(tmp_path, onevision_ckpt):
    _copy_config(onevision_ckpt.path, tmp_path)
    with pytest.raises(CheckpointError, match="holds no weights: expected model.safetensors"):
        load_llava(tmp_path)


def test_missing_config(tmp_path, onevision_ckpt):
    shutil.copy(onevision_ckpt.path / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_llava(tmp_path)


def test_pickle_only_directory_is_refused_without_unpickling(tmp_path, onevision_ckpt):
    _copy_config(onevision_ckpt.path, tmp_path)
    # Not a valid pickle: if anything tried to unpickle it, the error would differ.
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not-a-pickle")
    with pytest.raises(CheckpointError, match=r"only pickle weights \(pytorch_model.bin\); holitom never unpickles"):
        load_llava(tmp_path)


def _sharded(tmp_path: Path, onevision_ckpt) -> tuple[Path, dict]:
    onevision_ckpt.hf.save_pretrained(str(tmp_path), max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    return tmp_path, index


def test_missing_shard(tmp_path, onevision_ckpt):
    path, _ = _sharded(tmp_path, onevision_ckpt)
    victim = sorted(path.glob("model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=f"missing: {victim.name}"):
        load_llava(path)


def test_index_naming_a_missing_shard(tmp_path, onevision_ckpt):
    path, index = _sharded(tmp_path, onevision_ckpt)
    index["weight_map"]["image_newline"] = "model-00099-of-00099.safetensors"
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="names shard\\(s\\) that are missing: model-00099-of-00099.safetensors"):
        read_state_dict(path)


def test_index_naming_a_tensor_absent_from_its_shard(tmp_path, onevision_ckpt):
    path, index = _sharded(tmp_path, onevision_ckpt)
    shard = index["weight_map"]["image_newline"]
    index["weight_map"]["language_model.model.extra.weight"] = shard
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=f"{shard} lacks tensors .*language_model.model.extra.weight"):
        read_state_dict(path)


def test_sharded_without_index(tmp_path, onevision_ckpt):
    path, _ = _sharded(tmp_path, onevision_ckpt)
    (path / "model.safetensors.index.json").unlink()
    with pytest.raises(CheckpointError, match="needs its model.safetensors.index.json"):
        load_llava(path)


@pytest.mark.parametrize("keep_fraction", [0.5, 0.999])
def test_truncated_shard(tmp_path, onevision_ckpt, keep_fraction):
    path, _ = _sharded(tmp_path, onevision_ckpt)
    victim = sorted(path.glob("model-*.safetensors"))[-1]
    data = victim.read_bytes()
    victim.write_bytes(data[: int(len(data) * keep_fraction)])
    with pytest.raises(CheckpointError, match=f"{victim.name} in .* is truncated or corrupt .*re-download this file"):
        load_llava(path)


def test_truncated_single_file(tmp_path, onevision_ckpt):
    _copy_config(onevision_ckpt.path, tmp_path)
    data = (onevision_ckpt.path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:100])
    with pytest.raises(CheckpointError, match="model.safetensors in .* is truncated or corrupt"):
        read_state_dict(tmp_path)


def _rewrite_weights(tmp_path: Path, onevision_ckpt, edit) -> Path:
    state = load_file(str(onevision_ckpt.path / "model.safetensors"))
    edit(state)
    save_file(state, str(tmp_path / "model.safetensors"))
    _copy_config(onevision_ckpt.path, tmp_path)
    return tmp_path


def test_shape_mismatch_names_tensor_and_shapes(tmp_path, onevision_ckpt):
    def edit(state):
        state["language_model.model.layers.1.self_attn.k_proj.weight"] = torch.zeros(64, 64)

    path = _rewrite_weights(tmp_path, onevision_ckpt, edit)
    with pytest.raises(
        CheckpointError,
        match=r"shapes disagree with config.json: language_model.model.layers.1.self_attn.k_proj.weight: \(64, 64\) \(expected \(32, 64\)\)",
    ):
        load_llava(path)


def test_missing_tensor_is_named(tmp_path, onevision_ckpt):
    path = _rewrite_weights(tmp_path, onevision_ckpt, lambda s: s.pop("multi_modal_projector.linear_2.bias"))
    with pytest.raises(CheckpointError, match="lacks tensors the config requires: multi_modal_projector.linear_2.bias"):
        load_llava(path)


def test_untied_checkpoint_without_lm_head_is_an_error(tmp_path, onevision_ckpt):
    path = _rewrite_weights(tmp_path, onevision_ckpt, lambda s: s.pop("language_model.lm_head.weight"))
    with pytest.raises(CheckpointError, match="lacks tensors the config requires: lm_head.weight"):
        load_llava(path)


def test_unexpected_tensor_is_named(tmp_path, onevision_ckpt):
    def edit(state):
        state["language_model.model.layers.9.mlp.up_proj.weight"] = torch.zeros(2, 2)
        state["foo.bar"] = torch.zeros(1)

    path = _rewrite_weights(tmp_path, onevision_ckpt, edit)
    with pytest.raises(CheckpointError, match="does not know: foo.bar, language_model.model.layers.9.mlp.up_proj.weight"):
        load_llava(path)


def test_mixed_layouts_naming_one_tensor_twice(tmp_path, onevision_ckpt):
    def edit(state):
        state["model.image_newline"] = state["image_newline"].clone()

    path = _rewrite_weights(tmp_path, onevision_ckpt, edit)
    with pytest.raises(CheckpointError, match="both 'image_newline' and 'model.image_newline'|both 'model.image_newline' and 'image_newline'"):
        load_llava(path)


def test_fewer_text_layers_in_config_than_in_weights(tmp_path, onevision_ckpt):
    path = _rewrite_weights(tmp_path, onevision_ckpt, lambda s: None)
    cfg = json.loads((path / "config.json").read_text())
    cfg["text_config"]["num_hidden_layers"] = 3
    cfg["text_config"]["layer_types"] = ["full_attention"] * 3
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not know: language_model.model.layers.3"):
        load_llava(path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.update(model_type="llava_next"), "model_type 'llava_next'; holitom supports only 'llava_onevision'"),
        (lambda c: c["text_config"].update(model_type="llama"), "text_config.model_type 'llama'; holitom supports only 'qwen2'"),
        (lambda c: c["vision_config"].update(model_type="clip_vision_model"), "vision_config.model_type 'clip_vision_model'"),
        (lambda c: c.update(vision_feature_layer=[-2, -1]), r"vision_feature_layer=\[-2, -1\].*single feature layer"),
        (lambda c: c.update(vision_feature_select_strategy="default"), "vision_feature_select_strategy='default'"),
        (lambda c: c["text_config"].update(use_sliding_window=True), "sliding-window attention"),
        (
            lambda c: c["text_config"].update(rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6}),
            "RoPE scaling 'yarn'",
        ),
        (lambda c: c["vision_config"].update(hidden_act="quick_gelu"), "hidden_act='quick_gelu'"),
        (lambda c: c.update(vision_feature_layer=0), "selects the patch embeddings"),
    ],
)
def test_unsupported_architecture(tmp_path, onevision_ckpt, edit, message):
    shutil.copy(onevision_ckpt.path / "model.safetensors", tmp_path / "model.safetensors")
    cfg = json.loads((onevision_ckpt.path / "config.json").read_text())
    edit(cfg)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=message):
        load_llava(tmp_path)


def test_invalid_config_json(tmp_path, onevision_ckpt):
    shutil.copy(onevision_ckpt.path / "model.safetensors", tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        load_llava(tmp_path)
