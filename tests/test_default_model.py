"""The embedded default checkpoint: complete, loadable by transformers, runnable, reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from script_modules import load_script  # tests/ helper (tests/conftest.py puts it on sys.path)

from holitom import default_model
from holitom.default_model import DEFAULT_MODEL_FILES, DEFAULT_MODEL_NAME, default_model_dir
from holitom.errors import CheckpointError
from holitom.video import VideoPreprocessor, make_frames

transformers = pytest.importorskip("transformers")
from safetensors import safe_open  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoTokenizer,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionProcessor,
)

ROOT = Path(__file__).resolve().parents[1]
# Key prefixes of the llava-hf checkpoints on the hub (saved by transformers 4).
HUB_PREFIXES = (
    "vision_tower.vision_model.",
    "multi_modal_projector.",
    "language_model.model.",
    "language_model.lm_head.",
    "image_newline",
)
TEXTS = [
    "A red circle moves to the left in the kitchen.",
    "Ünïcödé ☃ and emoji 🎬, tabs\tand\n\nnewlines   with  spaces.",
    "Numbers 12345 and 3.14159; code: x = f(y)[0]",
    "<|im_start|>user\n<video>\nWhat happens?<|im_end|>\n<|im_start|>assistant\n",
]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return default_model_dir()


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return AutoTokenizer.from_pretrained(model_dir)


def test_files_and_size(model_dir):
    assert DEFAULT_MODEL_NAME == "default"
    assert model_dir.is_dir() and model_dir.parts[-3:] == ("holitom", "assets", "default_model")
    for name in DEFAULT_MODEL_FILES:
        assert (model_dir / name).is_file(), name
    total = sum(p.stat().st_size for p in model_dir.iterdir())
    assert total <= 6 * 1024 * 1024, f"default model is {total / 2**20:.2f} MiB, the budget is 6 MiB"


def test_config(model_dir, tokenizer):
    cfg = AutoConfig.from_pretrained(model_dir)
    assert cfg.model_type == "llava_onevision"
    v, t = cfg.vision_config, cfg.text_config
    assert (v.model_type, v.image_size, v.patch_size) == ("siglip_vision_model", 384, 14)  # 27x27 grid
    assert (v.hidden_size, v.num_hidden_layers, v.vision_use_head) == (64, 3, False)
    assert (t.model_type, t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads) == ("qwen2", 128, 4, 4, 2)
    assert cfg.vision_feature_layer == -1 and cfg.vision_feature_select_strategy == "full"
    assert t.vocab_size == len(tokenizer)
    assert cfg.video_token_index == tokenizer.convert_tokens_to_ids("<video>")
    assert cfg.image_token_index == tokenizer.convert_tokens_to_ids("<image>")
    assert cfg.holitom_variant == "onevision"


def test_weights_use_the_hub_key_layout(model_dir):
    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
        assert all(f.get_slice(k).get_dtype() == "F32" for k in keys)
    bad = [k for k in keys if not k.startswith(HUB_PREFIXES)]
    assert not bad, f"keys outside the llava-hf layout: {bad[:5]}"
    assert "language_model.lm_head.weight" in keys  # untied embeddings, as in the 7B models


def test_tokenizer(model_dir, tokenizer):
    raw = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    assert type(tokenizer).__name__ == "Qwen2Tokenizer"
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    for text in TEXTS:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ids == raw.encode(text, add_special_tokens=False).ids  # both loaders tokenise alike
        assert tokenizer.decode(ids) == text  # byte-level BPE: lossless round trip
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"):
        assert len(tokenizer(special, add_special_tokens=False)["input_ids"]) == 1, special
    # The vocabulary learned whole words from the corpus.
    assert len(tokenizer(" circle", add_special_tokens=False)["input_ids"]) == 1
    assert 1000 <= len(tokenizer) <= 2000


def test_processor_loads(model_dir, tokenizer):
    processor = LlavaOnevisionProcessor.from_pretrained(model_dir)
    assert processor.video_token_id == AutoConfig.from_pretrained(model_dir).video_token_index
    assert processor.num_image_tokens == 27 * 27
    assert processor.tokenizer.chat_template == tokenizer.chat_template


def test_model_loads_and_runs_on_a_clip(model_dir):
    model, info = LlavaOnevisionForConditionalGeneration.from_pretrained(model_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    processor = LlavaOnevisionProcessor.from_pretrained(model_dir)
    frames = make_frames(2, 180, 240, seed=0)
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=prompt, videos=[frames], return_tensors="pt")
    video_id = model.config.video_token_index
    assert int((inputs["input_ids"] == video_id).sum()) == 2 * 14 * 14 + 1  # 196 pooled tokens per frame + newline
    # Our preprocessing feeds the model exactly what transformers' processor does.
    assert torch.equal(inputs["pixel_values_videos"][0], VideoPreprocessor.from_pretrained(model_dir)(frames))
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()


def test_default_model_dir_reports_missing_files(tmp_path, monkeypatch):
    folder = tmp_path / "holitom" / "assets" / "default_model"
    monkeypatch.setattr(default_model.resources, "files", lambda package: tmp_path / "holitom")
    with pytest.raises(CheckpointError, match=r"missing from the holitom package.*git checkout holitom/assets/default_model"):
        default_model_dir()
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"incomplete \(missing: model\.safetensors, .*reinstall holitom-deploy"):
        default_model_dir()


def _load_script():
    return load_script("make_default_model")


def _config_without_versions(path: Path) -> dict:
    data = json.loads(path.read_text())
    data.pop("transformers_version", None)
    return data


def test_regeneration_reproduces_the_shipped_model(model_dir, tmp_path):
    """The shipped files are the generator's output, with the weights the trainer wrote.

    Everything but the weights (tokenizer, configs, chat template, tensor names,
    shapes and dtypes) must be what make_default_model.py writes today. Tensor
    values come from numpy's PCG64 streams, so an untrained checkpoint's are
    compared exactly on every version; a trained one's come from the training run
    its provenance records (an hour of CPU, not repeated here). File BYTES also
    depend on the serialisers (safetensors, transformers' JSON), so they are
    compared only under the library versions that made the shipped files.
    """
    script = _load_script()
    out = tmp_path / "regenerated"
    script.build(out)
    shipped_record = json.loads((model_dir / script.PROVENANCE_FILE).read_text())
    fresh_record = json.loads((out / script.PROVENANCE_FILE).read_text())
    assert (shipped_record["generator"], shipped_record["seed"]) == (fresh_record["generator"], fresh_record["seed"])
    training = shipped_record.get("training")

    with safe_open(str(model_dir / "model.safetensors"), "pt") as shipped, safe_open(str(out / "model.safetensors"), "pt") as fresh:
        assert sorted(shipped.keys()) == sorted(fresh.keys())
        for key in shipped.keys():
            a, b = shipped.get_tensor(key), fresh.get_tensor(key)
            assert (a.shape, a.dtype) == (b.shape, b.dtype), key
            if training is None:
                assert torch.equal(a, b), key

    shipped_tok = json.loads((model_dir / "tokenizer.json").read_text())
    fresh_tok = json.loads((out / "tokenizer.json").read_text())
    assert shipped_tok["model"]["vocab"] == fresh_tok["model"]["vocab"]
    assert shipped_tok["model"]["merges"] == fresh_tok["model"]["merges"]
    assert shipped_tok["added_tokens"] == fresh_tok["added_tokens"]
    for name in ("config.json", "processor_config.json", "tokenizer_config.json", "generation_config.json"):
        assert _config_without_versions(model_dir / name) == _config_without_versions(out / name), name
    assert (model_dir / "chat_template.jinja").read_text() == (out / "chat_template.jinja").read_text()

    if shipped_record["versions"] == fresh_record["versions"]:
        trained_files = {"model.safetensors", script.PROVENANCE_FILE} if training is not None else set()
        for name in sorted(p.name for p in model_dir.iterdir() if p.name not in trained_files):
            assert (model_dir / name).read_bytes() == (out / name).read_bytes(), f"{name} differs byte for byte"


def test_the_shipped_weights_are_a_recorded_training_run(model_dir):
    """Its provenance names the trainer and every run of the chain (--init), each with its clips, steps and accuracy."""
    record = json.loads((model_dir / _load_script().PROVENANCE_FILE).read_text())
    run, chain = record.get("training"), []
    assert run is not None, "the shipped default model is the trained one (scripts/train_default_model.py)"
    while run is not None:
        chain.append(run)
        assert run["trainer"] == "scripts/train_default_model.py" and run["steps"] > 0 and run["train_clips"] > 0
        run = (run.get("init") or {}).get("training")
    assert 0.25 < chain[0]["val_accuracy"] <= 1.0


def test_make_default_model_keeps_a_trained_checkpoint(model_dir, tmp_path):
    script = _load_script()
    folder = tmp_path / "trained"
    folder.mkdir()
    (folder / script.PROVENANCE_FILE).write_text(json.dumps({"generator": "scripts/make_default_model.py", "training": {"steps": 1}}))
    with pytest.raises(SystemExit, match=r"holds a trained checkpoint .* --replace-trained"):
        script.build(folder)
    assert [p.name for p in folder.iterdir()] == [script.PROVENANCE_FILE]  # untouched
    assert script.DEFAULT_OUT == model_dir  # the shipped folder is what the script would overwrite by default
