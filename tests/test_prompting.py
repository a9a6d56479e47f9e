"""Prompt construction and encoding around exactly one <video> placeholder."""

from __future__ import annotations

import subprocess
import sys

import pytest

from holitom.default_model import default_model_dir
from holitom.errors import CheckpointError, InputError
from holitom.prompting import build_video_prompt, encode_prompt, video_token_id

transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import AutoConfig, AutoTokenizer, LlavaOnevisionProcessor  # noqa: E402

# The multimodal template of the llava-hf LLaVA-OneVision processors (content as a list of parts).
LLAVA_HF_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\\n' + content['text'] }}{% endfor %}"
    "{{'<|im_end|>\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Qwen2's plain ChatML template (content as a string).
QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def model_dir():
    return default_model_dir()


@pytest.fixture()
def tokenizer(model_dir):
    return AutoTokenizer.from_pretrained(model_dir)  # fresh per test: some tests swap the template


def test_prompt_with_default_template(tokenizer):
    prompt = build_video_prompt(tokenizer, "What moves?")
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<video>\nWhat moves?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    with_system = build_video_prompt(tokenizer, "What moves?", system="Answer briefly.")
    assert with_system.startswith("<|im_start|>system\nAnswer briefly.<|im_end|>\n")
    assert with_system.count("<video>") == 1


@pytest.mark.parametrize("template", [LLAVA_HF_TEMPLATE, QWEN2_TEMPLATE], ids=["llava-hf-multimodal", "qwen2-chatml"])
def test_prompt_with_other_template_styles(tokenizer, template):
    tokenizer.chat_template = template
    prompt = build_video_prompt(tokenizer, "Which shape is red?", system="Be exact.")
    assert prompt.count("<video>") == 1
    assert prompt.index("<video>") < prompt.index("Which shape is red?")
    assert "Be exact." in prompt and prompt.endswith("<|im_start|>assistant\n")


def test_placeholder_is_the_config_video_token(model_dir, tokenizer):
    config = AutoConfig.from_pretrained(model_dir)
    ids = encode_prompt(tokenizer, build_video_prompt(tokenizer, "What happens?"))
    assert isinstance(ids, list) and all(isinstance(i, int) for i in ids)
    assert ids.count(config.video_token_index) == 1
    assert video_token_id(tokenizer) == config.video_token_index


def test_config_id_mismatch_is_caught(model_dir, tokenizer):
    config = AutoConfig.from_pretrained(model_dir)
    prompt = build_video_prompt(tokenizer, "What happens?")
    assert encode_prompt(tokenizer, prompt, video_token_id=config.video_token_index).count(config.video_token_index) == 1
    with pytest.raises(CheckpointError, match=r"maps '<video>' to id \d+ but the model config's video_token_index is 151647"):
        encode_prompt(tokenizer, prompt, video_token_id=151647)  # the real LLaVA-OneVision id: another tokenizer


def test_all_tokenizer_kinds_encode_alike(model_dir, tokenizer):
    prompt = build_video_prompt(tokenizer, "Describe the video.")
    expected = encode_prompt(tokenizer, prompt)
    raw = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    processor = LlavaOnevisionProcessor.from_pretrained(model_dir)
    assert encode_prompt(raw, prompt) == expected
    assert encode_prompt(processor, prompt) == expected
    assert build_video_prompt(processor, "Describe the video.") == prompt


@pytest.mark.parametrize("text, count", [("no placeholder here", 0), ("<video>\n<video>\nTwice?", 2)])
def test_wrong_placeholder_count(tokenizer, text, count):
    with pytest.raises(InputError, match=rf"contains {count} '<video>' placeholders; put exactly one <video> in the prompt"):
        encode_prompt(tokenizer, text)


def test_placeholder_in_the_question_places_the_video(tokenizer):
    prompt = build_video_prompt(tokenizer, "Watch this: <video> What moves?")
    assert prompt.count("<video>") == 1
    assert prompt.index("<|im_start|>user") < prompt.index("Watch this:") < prompt.index("<video>") < prompt.index("What moves?")
    tokenizer.chat_template = QWEN2_TEMPLATE
    prompt = build_video_prompt(tokenizer, "Watch this: <video> What moves?")
    assert "<|im_start|>user\nWatch this: <video> What moves?<|im_end|>" in prompt
    # llava-hf's multimodal template emits every video before every text part: it cannot place
    # text before the video, and saying so beats silently moving the video.
    tokenizer.chat_template = LLAVA_HF_TEMPLATE
    with pytest.raises(CheckpointError, match="chat template does not produce"):
        build_video_prompt(tokenizer, "Watch this: <video> What moves?")
    assert build_video_prompt(tokenizer, "<video> What moves?").count("<video>") == 1


def test_bad_questions_are_refused(tokenizer):
    with pytest.raises(InputError, match="placeholder '<video>' 2 times; put exactly one <video>"):
        build_video_prompt(tokenizer, "<video> and <video>?")
    with pytest.raises(InputError, match="system prompt contains the video placeholder"):
        build_video_prompt(tokenizer, "What?", system="<video>")
    with pytest.raises(InputError, match="question must be a string"):
        build_video_prompt(tokenizer, None)


def test_tokenizer_without_template(tokenizer):
    tokenizer.chat_template = None
    with pytest.raises(CheckpointError, match="no chat template"):
        build_video_prompt(tokenizer, "What?")


def test_template_that_drops_the_placeholder(tokenizer):
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: question{% endfor %}"
    with pytest.raises(CheckpointError, match="exactly one '<video>'"):
        build_video_prompt(tokenizer, "What?")


def test_tokenizer_that_splits_the_placeholder():
    vocab = {"[UNK]": 0, "<": 1, "video": 2, ">": 3, "what": 4, "?": 5}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(CheckpointError, match="does not treat '<video>' as a single token"):
        encode_prompt(tok, "<video> what?")


def test_prompting_import_is_light():
    code = "import sys, holitom.prompting\nprint(','.join(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
