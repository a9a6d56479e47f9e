"""Fixtures for the runtime / export / CLI tests: checkpoints and one export of each, per session.

Exports take tens of seconds on two cores, so each model is exported once and
shared; tests that need a damaged export copy it first.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from holitom.default_model import default_model_dir

EXPORT_PRESETS = ("none", "r15")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")


def make_llava_video_checkpoint(folder: Path, image_size: int = 112, seed: int = 7) -> Path:
    """A small random LLaVA-Video-variant checkpoint written by transformers, with the default model's tokenizer.

    112 px / patch 14 -> 8x8 patches -> average pooling stride 2 -> 4x4 = 16 tokens per frame,
    with a newline after each of the 4 rows.
    """
    import transformers

    default = default_model_dir()
    base = json.loads((default / "config.json").read_text())
    text = base["text_config"]
    config = transformers.LlavaOnevisionConfig(
        vision_config=dict(
            model_type="siglip_vision_model", hidden_size=48, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, image_size=image_size, patch_size=14, vision_use_head=False,
        ),
        text_config=dict(
            model_type="qwen2", hidden_size=96, intermediate_size=192, num_hidden_layers=5, num_attention_heads=6,
            num_key_value_heads=2, vocab_size=text["vocab_size"], max_position_embeddings=4096,
            eos_token_id=text.get("eos_token_id"), tie_word_embeddings=False,
        ),
        image_token_index=base["image_token_index"],
        video_token_index=base["video_token_index"],
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = transformers.LlavaOnevisionForConditionalGeneration(config).eval()
    with torch.no_grad():  # larger weights than the init so greedy decoding is not one constant token
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.5 / p.shape[-1] ** 0.5 * 4)
    model.save_pretrained(folder, safe_serialization=True)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["holitom_variant"] = "llava_video"
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    for name in TOKENIZER_FILES:
        if (default / name).is_file():
            shutil.copy2(default / name, folder / name)
    processor = json.loads((default / "processor_config.json").read_text())
    video = processor["video_processor"]
    video["size"] = {"height": image_size, "width": image_size}
    (folder / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2))
    return folder


@pytest.fixture(scope="session")
def llava_video_checkpoint(tmp_path_factory) -> Path:
    return make_llava_video_checkpoint(tmp_path_factory.mktemp("llava_video_ckpt"))


def _export(model, out: Path) -> Path:
    from holitom.export import ExportConfig, export_model
    from holitom.runtime.validate import validate_export

    export_model(str(model), out, ExportConfig(num_frames=4, presets=EXPORT_PRESETS, progress=False), validator=validate_export)
    return out


@pytest.fixture(scope="session")
def default_export(tmp_path_factory) -> Path:
    return _export("default", tmp_path_factory.mktemp("exports") / "default")


@pytest.fixture(scope="session")
def llava_video_export(tmp_path_factory, llava_video_checkpoint) -> Path:
    return _export(llava_video_checkpoint, tmp_path_factory.mktemp("exports") / "llava_video")


@pytest.fixture(scope="session")
def clip_path(tmp_path_factory) -> Path:
    from holitom.video import make_frames, write_video

    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    write_video(path, make_frames(20, 120, 160, seed=5, scene_cut_at=10), fps=8)
    return path
