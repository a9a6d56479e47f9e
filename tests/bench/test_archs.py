"""Materialised architecture presets: one llava-hf folder that every real loader reads."""

from __future__ import annotations

import json

import torch

from holitom.bench.archs import ARCH_MARKER, get_arch, materialize
from holitom.default_model import default_model_dir


def test_unmodified_default_is_the_embedded_folder(tmp_path):
    assert materialize(get_arch("default"), root=tmp_path) == default_model_dir()
    assert not any(tmp_path.iterdir())


def test_materialised_checkpoint_loads_everywhere(tmp_path):
    from holitom.models.baseline import TransformersBaseline
    from holitom.models.config import LlavaConfig
    from holitom.models.loading import load_llava
    from holitom.video.preprocess import VideoPreprocessor

    # 112 px -> 8x8 patches -> bilinear to 4x4 = 16 tokens per frame.
    spec = get_arch("default").with_overrides(image_size=112, vision_layers=1, text_layers=2, vocab_size=1300)
    folder = materialize(spec, seed=3, root=tmp_path)
    assert folder.parent == tmp_path and (folder / ARCH_MARKER).is_file()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", "processor_config.json"):
        assert (folder / name).is_file(), name
    cfg = LlavaConfig.from_pretrained(folder)
    assert (cfg.vision.image_size, cfg.num_vision_layers_used, cfg.text.num_layers, cfg.text.vocab_size) == (112, 1, 2, 1300)
    assert cfg.tokens_per_frame == spec.tokens_per_frame == 16
    default_cfg = LlavaConfig.from_pretrained(default_model_dir())
    assert cfg.video_token_id == default_cfg.video_token_id  # the tokenizer is the default model's
    processor = json.loads((folder / "processor_config.json").read_text())
    assert processor["video_processor"]["size"] == {"height": 112, "width": 112}
    pre = VideoPreprocessor.from_pretrained(folder).config
    assert (pre.height, pre.width) == (112, 112)

    ours = load_llava(folder)
    theirs = TransformersBaseline.from_pretrained(folder)
    assert ours.config.tokens_per_frame == theirs.config.tokens_per_frame == 16
    # Same random weights through both loaders.
    torch.testing.assert_close(ours.embed_tokens.weight, theirs.model.get_input_embeddings().weight)

    # A second call reuses the folder.
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert materialize(spec, seed=3, root=tmp_path) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    marker = json.loads((folder / ARCH_MARKER).read_text())
    assert marker["arch"]["overrides"] == {"image_size": 112, "vision_layers": 1, "text_layers": 2, "vocab_size": 1300}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial folder left behind
