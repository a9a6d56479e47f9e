"""A checkpoint's tokenizer and chat template without transformers: ``tokenizers`` + ``jinja2``.

The edge runtime loads an export folder's ``tokenizer.json`` with the Rust
``tokenizers`` library (what transformers' fast tokenizers wrap) and renders the
chat template with jinja2 in the environment transformers uses for chat
templates: a sandbox with ``trim_blocks`` / ``lstrip_blocks``, the
``loopcontrols`` extension, a ``tojson`` filter that keeps non-ASCII text,
``raise_exception`` and ``strftime_now``, and the special tokens as variables.
:class:`ChatTokenizer` offers the slice of a transformers tokenizer that
:mod:`holitom.prompting` and the runtime use (``apply_chat_template``,
``chat_template``, ``decode``); encoding goes through the bare tokenizer
(:mod:`holitom.prompting` takes either). ``tests/test_chat_tokenizer.py`` checks
prompts, ids and decoded text against transformers' ``AutoTokenizer``.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from holitom.errors import CheckpointError, HolitomError

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
# Special tokens transformers passes to a chat template (its SPECIAL_TOKENS_ATTRIBUTES that hold one token).
_TEMPLATE_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# transformers' clean_up_tokenization: spaces a word-piece decoder leaves before punctuation and contractions.
_CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def _token_text(value) -> str | None:
    # tokenizer_config stores a special token as a string or as an AddedToken dict.
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _compile_template(source: str):
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


class ChatTokenizer:
    """``tokenizers.Tokenizer`` plus the checkpoint's chat template and decode settings."""

    def __init__(self, tokenizer, chat_template: str | None, special_tokens: dict[str, str], clean_up_spaces: bool = False):
        self.tokenizer = tokenizer  # the bare tokenizers.Tokenizer: holitom.prompting encodes with it
        self.chat_template = chat_template
        self.special_tokens = dict(special_tokens)
        self.clean_up_spaces = clean_up_spaces
        self._compiled = None

    @classmethod
    def from_folder(cls, folder: str | Path, error: type[HolitomError] = CheckpointError, fix: str = "restore the tokenizer files") -> "ChatTokenizer":
        """Load ``tokenizer.json``, ``tokenizer_config.json`` and ``chat_template.jinja`` (when present) of ``folder``."""
        from tokenizers import Tokenizer

        from holitom.models.checkpoint import check_tokenizer_files

        folder = Path(folder)
        check_tokenizer_files(folder, error, fix)  # readable, parseable JSON; tokenizer.json parses
        if not (folder / TOKENIZER_JSON).is_file():
            raise error(
                f"'{folder}' has no {TOKENIZER_JSON}; the runtime without transformers reads only that form of the "
                f"tokenizer. Save the checkpoint's tokenizer with transformers (`AutoTokenizer.save_pretrained`) and {fix}."
            )
        tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_JSON))
        config_path = folder / TOKENIZER_CONFIG
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        template_path = folder / CHAT_TEMPLATE_FILE
        # transformers' order: chat_template.jinja, then the tokenizer_config entry (a string, or named templates).
        template = template_path.read_text(encoding="utf-8") if template_path.is_file() else config.get("chat_template")
        if isinstance(template, list):
            template = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}.get("default")
        special = {name: text for name in _TEMPLATE_TOKENS if (text := _token_text(config.get(name))) is not None}
        return cls(tokenizer, template if isinstance(template, str) else None, special, bool(config.get("clean_up_tokenization_spaces", False)))

    def apply_chat_template(self, messages: list[dict], tokenize: bool = False, add_generation_prompt: bool = False, **kwargs) -> str:
        """Render ``messages`` as transformers' ``apply_chat_template(..., tokenize=False)`` does."""
        if tokenize:
            raise NotImplementedError("ChatTokenizer renders text only; encode it with holitom.prompting.encode_prompt.")
        if not self.chat_template:
            raise CheckpointError("the tokenizer has no chat template; the checkpoint must ship one (chat_template.jinja or the 'chat_template' entry of tokenizer_config.json).")
        if self._compiled is None:
            self._compiled = _compile_template(self.chat_template)
        return self._compiled.render(messages=messages, tools=None, documents=None, add_generation_prompt=add_generation_prompt, **self.special_tokens, **kwargs)

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        text = self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)
        if self.clean_up_spaces:
            for before, after in _CLEAN_UP:
                text = text.replace(before, after)
        return text


__all__ = ["ChatTokenizer"]
