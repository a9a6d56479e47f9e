"""The edge runtime's tokenizer (tokenizers + jinja2) against transformers' AutoTokenizer (the oracle)."""

from __future__ import annotations

import json
import shutil

import pytest
from lean_imports import imported_by  # tests/ helper (tests/conftest.py puts it on sys.path)

from holitom.chat_tokenizer import ChatTokenizer
from holitom.default_model import default_model_dir
from holitom.errors import CheckpointError, ManifestError
from holitom.prompting import build_video_prompt, encode_prompt

transformers = pytest.importorskip("transformers")
from transformers import AutoTokenizer  # noqa: E402

# The two template shapes holitom.prompting handles: Qwen2's plain ChatML (string content, with a
# system default and tojson-free loop controls) and a llava-hf multimodal one (content as parts).
QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Whitespace control, tojson with non-ASCII text, a special-token variable and loop controls.
EXOTIC_TEMPLATE = (
    "{% for message in messages %}\n  {% if message['role'] == 'system' %}{% continue %}{% endif %}\n"
    "<|im_start|>{{ message['role'] }} {{ eos_token }}\n{{ message['content'] | tojson }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QUESTIONS = [
    "What happens in the video?",
    "Before <video> after: what changed?",
    "<video> Count the objects. Réponds en français, s'il te plaît: où est le chat? 猫はどこ?",
    "  spaces   and\ttabs\n\nnew lines ",
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The default model's tokenizer folder, plus copies with other chat templates (in tokenizer_config)."""
    default = default_model_dir()
    out = {"default": default}
    for name, template in (("qwen2", QWEN2_TEMPLATE), ("exotic", EXOTIC_TEMPLATE)):
        d = tmp_path_factory.mktemp(name)
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy2(default / f, d / f)
        config = json.loads((d / "tokenizer_config.json").read_text())
        config["chat_template"] = template
        (d / "tokenizer_config.json").write_text(json.dumps(config))
        out[name] = d
    return out


@pytest.mark.parametrize("which", ["default", "qwen2", "exotic"])
@pytest.mark.parametrize("question", QUESTIONS)
@pytest.mark.parametrize("system", [None, "Be brief."])
def test_prompt_text_and_ids_match_transformers(folders, which, question, system):
    ours, ref = ChatTokenizer.from_folder(folders[which]), AutoTokenizer.from_pretrained(folders[which])
    messages = [{"role": "user", "content": question}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    assert ours.apply_chat_template(messages, add_generation_prompt=True) == ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if which == "exotic":
        return  # its rendering drops the placeholder's own line: not a template holitom.prompting accepts
    text_ours, text_ref = build_video_prompt(ours, question, system), build_video_prompt(ref, question, system)
    assert text_ours == text_ref
    assert encode_prompt(ours, text_ours) == encode_prompt(ref, text_ref)


def test_decode_matches_transformers(folders):
    ours, ref = ChatTokenizer.from_folder(folders["default"]), AutoTokenizer.from_pretrained(folders["default"])
    text = build_video_prompt(ref, "Où est le chat? 猫はどこ? It's   here.")
    ids = encode_prompt(ref, text)
    for skip in (True, False):
        assert ours.decode(ids, skip_special_tokens=skip) == ref.decode(ids, skip_special_tokens=skip)
    # Cut inside a multi-byte character: both give the replacement character the streamer holds back.
    assert ours.decode(ids[:-7]) == ref.decode(ids[:-7])


def test_missing_tokenizer_json_and_template(tmp_path, folders):
    shutil.copy2(folders["default"] / "tokenizer_config.json", tmp_path / "tokenizer_config.json")
    (tmp_path / "vocab.json").write_text("{}")
    (tmp_path / "merges.txt").write_text("")
    with pytest.raises(ManifestError, match="tokenizer.json"):
        ChatTokenizer.from_folder(tmp_path, ManifestError, "export again")
    shutil.copy2(folders["default"] / "tokenizer.json", tmp_path / "tokenizer.json")
    bare = ChatTokenizer.from_folder(tmp_path)  # no chat_template.jinja, no template entry
    assert bare.chat_template is None
    with pytest.raises(CheckpointError, match="no chat template"):
        build_video_prompt(bare, "What happens?")


def test_imports_neither_torch_nor_transformers():
    code = (
        "from holitom.chat_tokenizer import ChatTokenizer\n"
        "from holitom.default_model import default_model_dir\n"
        "from holitom.prompting import build_video_prompt, encode_prompt\n"
        "t = ChatTokenizer.from_folder(default_model_dir())\n"
        "encode_prompt(t, build_video_prompt(t, 'What happens?'))"
    )
    assert imported_by(code, ("torch", "transformers")) == []
