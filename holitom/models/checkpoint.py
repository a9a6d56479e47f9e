"""The checkpoint-folder boundary: is this folder a complete, readable llava-hf checkpoint?

Checked once, cheaply (no weights read), before anything heavy runs: the config
and weights are there and readable, the tokenizer is there, and every JSON file
the loaders will parse is a JSON object. The tokenizer itself is loaded here too,
so a corrupt ``tokenizer.json`` is one :class:`CheckpointError` naming the file
instead of a traceback from tokenizers or transformers. Export folders carry the
same tokenizer files, so the runtime loads theirs through the same function.
"""

from __future__ import annotations

import json
from pathlib import Path

from holitom.errors import CheckpointError, HolitomError

# JSON files of a llava-hf folder that some loader parses (config, tokenizer, processor).
JSON_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.json",
    "generation_config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "model.safetensors.index.json",
)
TOKENIZER_JSON = "tokenizer.json"
SLOW_TOKENIZER_FILES = ("vocab.json", "merges.txt")  # Qwen2's BPE files, the alternative to tokenizer.json
_FIX = "restore it from the original checkpoint (download it again)"


def _read_json(path: Path, error: type[HolitomError], fix: str):
    from holitom.paths import describe_os_error

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"'{path}' is not UTF-8 text, so not JSON; {fix}.") from None
    except OSError as exc:
        raise error(f"'{path}' cannot be read: {describe_os_error(exc)}; {fix}.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"'{path}' is not valid JSON ({exc}); {fix}.") from None
    if not isinstance(data, dict):
        raise error(f"'{path}' holds a JSON {type(data).__name__}, expected an object; {fix}.")
    return text


def check_tokenizer_files(folder: Path, error: type[HolitomError] = CheckpointError, fix: str = _FIX) -> None:
    """The tokenizer files are present, readable, and parse (tokenizer.json by the tokenizers library itself)."""
    texts = {name: _read_json(folder / name, error, fix) for name in JSON_FILES if name != "config.json" and (folder / name).exists()}
    fast = folder / TOKENIZER_JSON
    if TOKENIZER_JSON in texts:
        from tokenizers import Tokenizer

        try:
            Tokenizer.from_str(texts[TOKENIZER_JSON])
        except Exception as exc:  # noqa: BLE001 - see below
            # tokenizers reports a malformed file as a bare Exception; anything more specific is a bug: re-raise it.
            if type(exc) is not Exception:
                raise
            raise error(f"'{fast}' is not a tokenizer the tokenizers library can read ({exc}); {fix}.") from None
    elif not all((folder / n).is_file() for n in SLOW_TOKENIZER_FILES):
        raise error(
            f"'{folder}' has no tokenizer: expected {TOKENIZER_JSON} (or {' + '.join(SLOW_TOKENIZER_FILES)}); copy the "
            "checkpoint's tokenizer files next to config.json."
        )


def check_checkpoint_folder(folder: Path) -> None:
    """Everything a llava-hf folder needs, checked without reading weights (see the module doc)."""
    from holitom.models.loading import INDEX_FILE, SINGLE_FILE
    from holitom.paths import existing_path

    _read_json(folder / "config.json", CheckpointError, _FIX)
    weights = [folder / n for n in (INDEX_FILE, SINGLE_FILE) if (folder / n).exists()]
    for path in weights:
        existing_path(path, "checkpoint file", "file", CheckpointError)
    check_tokenizer_files(folder)


def load_tokenizer(folder: Path, error: type[HolitomError] = CheckpointError, fix: str = _FIX):
    """The folder's tokenizer (transformers' AutoTokenizer), its files checked first."""
    from transformers import AutoTokenizer

    check_tokenizer_files(Path(folder), error, fix)
    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as exc:  # transformers' "cannot load this tokenizer" errors
        raise error(f"the tokenizer in '{folder}' cannot be loaded ({exc}); {fix}.") from None


__all__ = ["JSON_FILES", "check_checkpoint_folder", "check_tokenizer_files", "load_tokenizer"]
