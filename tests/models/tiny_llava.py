"""Tiny random LLaVA-OneVision checkpoints written by transformers itself, shared by the model tests.

Imported by tests/models/conftest.py (which puts this folder on sys.path) and by the test modules.

Weights are re-drawn with a larger scale than transformers' init (std 0.02) so
activations are O(1), logits are spread and greedy decoding is not a constant token:
a parity test on a degenerate model would hardly be able to fail.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

VIDEO_TOKEN = 100
IMAGE_TOKEN = 101
VOCAB = 128


@dataclass
class Checkpoint:
    path: Path
    hf: object  # LlavaOnevisionForConditionalGeneration (sdpa), eval mode

    def hf_eager(self):
        """The same checkpoint through transformers' eager attention (for output_attentions oracles)."""
        model = transformers.LlavaOnevisionForConditionalGeneration.from_pretrained(
            str(self.path), attn_implementation="eager"
        )
        return model.eval()


def hf_config(
    image_size: int = 56,
    vision_layers: int = 3,
    text_layers: int = 4,
    feature_layer: int = -1,
    tie: bool = False,
):
    return transformers.LlavaOnevisionConfig(
        vision_config=dict(
            model_type="siglip_vision_model",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=vision_layers,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=14,
            vision_use_head=False,
        ),
        text_config=dict(
            model_type="qwen2",
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=text_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=VOCAB,
            max_position_embeddings=2048,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            tie_word_embeddings=tie,
        ),
        image_token_index=IMAGE_TOKEN,
        video_token_index=VIDEO_TOKEN,
        vision_feature_layer=feature_layer,
        vision_feature_select_strategy="full",
        tie_word_embeddings=tie,
    )


def random_hf_model(config, seed: int = 0):
    torch.manual_seed(seed)
    model = transformers.LlavaOnevisionForConditionalGeneration(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_tokens" in name or "position_embedding" in name:
                p.normal_(0.0, 1.0)
            elif p.dim() >= 2:
                # Gain 2 in the decoder spreads the logits; the vision side stays at unit gain so
                # features are O(1-10) and an absolute tolerance means the same everywhere.
                gain = 2.0 if "language_model" in name else 1.0
                p.normal_(0.0, gain / math.sqrt(p[0].numel()))
            elif "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:  # biases and image_newline
                p.normal_(0.0, 0.5)
    return model.eval()


def write_checkpoint(path: Path, variant: str | None = None, max_shard_size: str | None = None, seed: int = 0, **cfg) -> Checkpoint:
    model = random_hf_model(hf_config(**cfg), seed=seed)
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(str(path), **kwargs)
    if variant is not None:
        set_config_key(path, "holitom_variant", variant)
    return Checkpoint(path=path, hf=model)


def set_config_key(path: Path, key: str, value) -> None:
    cfg_path = Path(path) / "config.json"
    d = json.loads(cfg_path.read_text())
    d[key] = value
    cfg_path.write_text(json.dumps(d))


def prompt_ids(before: int = 3, after: int = 4, seed: int = 0) -> torch.Tensor:
    """``(S,)`` text tokens (never the placeholder ids) around one video placeholder."""
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(0, VIDEO_TOKEN, (before + after,), generator=g)
    return torch.cat((text[:before], torch.tensor([VIDEO_TOKEN]), text[before:]))


def frames(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()
