"""Build and encode the text prompt around one video.

LLaVA-OneVision / LLaVA-Video prompts hold ONE ``<video>`` placeholder token in
the user turn; the model (or our runtime) replaces that single token with the
video's visual tokens (F x 196 + 1 for LLaVA-OneVision). So the prompt must be
built with the checkpoint's own chat template and contain the placeholder
exactly once.

Works with a transformers tokenizer (anything with ``apply_chat_template``)
and, for encoding, also with a bare ``tokenizers.Tokenizer``. Imports nothing
heavy: the tokenizer object brings its own library.
"""

from __future__ import annotations

from holitom.errors import CheckpointError, InputError

VIDEO_TOKEN = "<video>"


def check_text(value: str, name: str) -> str:
    """``value`` must be encodable as UTF-8: a command-line argument with bytes that are not UTF-8 arrives
    holding lone surrogates (Python's surrogateescape), which no tokenizer can take."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(value[exc.start])
        what = f"the byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"the unpaired surrogate U+{code:04X}"
        raise InputError(
            f"the {name} is not valid UTF-8 text ({what} at character {exc.start}); pass the text in UTF-8 "
            "(check the terminal's or the file's encoding)."
        ) from None
    return value


def _render(tokenizer, messages: list[dict]) -> tuple[str | None, str | None]:
    """(rendered text, None) or (None, why it failed)."""
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # noqa: BLE001 - a template that cannot take this message form; the caller tries the other
        return None, f"{type(exc).__name__}: {exc}"
    if not isinstance(text, str):
        return None, f"apply_chat_template returned {type(text).__name__}"
    return text, None


def build_video_prompt(tokenizer, question: str, system: str | None = None, video_token: str = VIDEO_TOKEN) -> str:
    """Apply the checkpoint's chat template to one user turn holding the video and the question.

    Without a placeholder in ``question`` the video comes first, then the
    question. With exactly one ``video_token`` in ``question`` the video goes
    exactly there (text before and after the video).

    Chat templates come in two shapes, and both are handled:

    - multimodal templates (llava-hf processors) take message content as a list
      of parts, ``[{"type": "video"}, {"type": "text", "text": question}]``,
      and render the placeholder themselves;
    - plain text templates (Qwen2's ChatML) take a string, here
      ``"<video>\\n" + question`` (the layout of LLaVA-OneVision's training
      conversations).

    The list form is tried first; a rendering is accepted only if it contains
    the placeholder exactly once, the question, and the system prompt if one was
    given. The generation prompt (the assistant turn's header) is appended.

    Args:
        tokenizer: a transformers tokenizer (or processor) whose ``chat_template`` is set.
        question: the user's question, with at most one ``video_token`` marking where the video goes.
        system: optional system prompt; None keeps the template's default
            (Qwen2's "You are a helpful assistant.").
        video_token: the placeholder string.

    Returns:
        The prompt text, ready for :func:`encode_prompt`.

    Raises:
        InputError: ``question`` / ``system`` is not a string, ``question`` holds the placeholder
            more than once, or ``system`` holds it at all.
        CheckpointError: the tokenizer has no chat template, or its template
            cannot produce a turn with exactly one placeholder.
    """
    for name, value in (("question", question), ("system", system)):
        if value is None and name == "system":
            continue
        if not isinstance(value, str):
            raise InputError(f"{name} must be a string, got {type(value).__name__}.")
        check_text(value, "prompt" if name == "question" else "system prompt")
        count = value.count(video_token)
        if name == "system" and count:
            raise InputError(f"the system prompt contains the video placeholder {video_token!r}; the video belongs in the question.")
        if count > 1:
            raise InputError(
                f"the question contains the video placeholder {video_token!r} {count} times; put exactly one "
                f"{video_token} where the video goes, or none to put the video first."
            )
    if not hasattr(tokenizer, "apply_chat_template"):
        raise CheckpointError(
            f"{type(tokenizer).__name__} has no apply_chat_template; load the checkpoint's tokenizer with "
            "transformers.AutoTokenizer.from_pretrained(checkpoint_dir)."
        )
    if not getattr(tokenizer, "chat_template", None):
        raise CheckpointError(
            "the tokenizer has no chat template; the checkpoint must ship one (chat_template.jinja or the "
            "'chat_template' entry of tokenizer_config.json)."
        )

    def system_message(as_parts: bool) -> list[dict]:
        if system is None:
            return []
        content = [{"type": "text", "text": system}] if as_parts else system
        return [{"role": "system", "content": content}]

    # ``texts``: what must appear, in this order, with the placeholder where it stands in the list.
    if video_token in question:
        before, after = (part.strip() for part in question.split(video_token))
        parts = [{"type": "text", "text": before}] * bool(before) + [{"type": "video"}] + [{"type": "text", "text": after}] * bool(after)
        as_string = question
        texts = [t for t in (before, video_token, after) if t]
    else:
        parts = [{"type": "video"}, {"type": "text", "text": question}]
        as_string = f"{video_token}\n{question}"
        texts = [video_token, question]
    candidates = (
        system_message(True) + [{"role": "user", "content": parts}],
        system_message(False) + [{"role": "user", "content": as_string}],
    )
    outcomes = []
    for form, messages in zip(("list-of-parts", "string"), candidates):
        text, error = _render(tokenizer, messages)
        if text is None:
            outcomes.append(f"{form} content: {error}")
        elif text.count(video_token) != 1 or not _in_order(text, texts, video_token) or (system is not None and system not in text):
            outcomes.append(f"{form} content: rendered {text.count(video_token)} placeholder(s) in {text[:120]!r}")
        else:
            return text
    raise CheckpointError(
        "the tokenizer's chat template does not produce a user turn with exactly one "
        f"{video_token!r} with the question text around it in the order given ({'; '.join(outcomes)}); check the "
        "checkpoint's chat template, or put the video first (no placeholder in the question)."
    )


def _in_order(text: str, pieces: list[str], video_token: str) -> bool:
    """Every piece occurs in ``text``, in the given order (a template may reorder multimodal parts)."""
    at = 0
    for piece in pieces:
        found = text.find(piece, at)
        if found < 0:
            return False
        at = found + len(piece)
    return True


def _is_bare_tokenizer(tokenizer) -> bool:
    from tokenizers import Tokenizer  # the Rust library transformers' fast tokenizers wrap; light

    return isinstance(tokenizer, Tokenizer)


def _text_tokenizer(tokenizer):
    # A transformers processor carries the tokenizer as an attribute; its own
    # __call__ takes images first, so never call a processor with text alone.
    # holitom.chat_tokenizer.ChatTokenizer carries a bare tokenizers.Tokenizer.
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is not None and (hasattr(inner, "convert_tokens_to_ids") or _is_bare_tokenizer(inner)):
        return inner
    return tokenizer


def _encode(tokenizer, text: str) -> list[int]:
    if _is_bare_tokenizer(tokenizer):
        return list(tokenizer.encode(text, add_special_tokens=False).ids)
    if hasattr(tokenizer, "convert_tokens_to_ids") and callable(tokenizer):
        # verbose=False: the runtime checks the length against the model's context itself, with one clear error.
        return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
    raise InputError(f"tokenizer must be a transformers tokenizer or a tokenizers.Tokenizer, got {type(tokenizer).__name__}.")


def video_token_id(tokenizer, video_token: str = VIDEO_TOKEN) -> int:
    """The id of the video placeholder, checked to be a single token of the vocabulary.

    Args:
        tokenizer: a transformers tokenizer or processor, or a ``tokenizers.Tokenizer``.
        video_token: the placeholder string.

    Raises:
        CheckpointError: the tokenizer does not know ``video_token`` as one token
            (it would be split into pieces and the model would never see it).
    """
    return _placeholder_id(tokenizer, video_token)


def _placeholder_id(tokenizer, video_token: str) -> int:
    tokenizer = _text_tokenizer(tokenizer)
    if _is_bare_tokenizer(tokenizer):
        tid = tokenizer.token_to_id(video_token)
    elif hasattr(tokenizer, "convert_tokens_to_ids"):
        tid = tokenizer.convert_tokens_to_ids(video_token)
        if tid is not None and tid == getattr(tokenizer, "unk_token_id", None):
            tid = None  # unknown tokens map to unk, not to an error
    else:
        raise InputError(f"tokenizer must be a transformers tokenizer or a tokenizers.Tokenizer, got {type(tokenizer).__name__}.")
    if tid is None or _encode(tokenizer, video_token) != [tid]:
        raise CheckpointError(
            f"the tokenizer does not treat {video_token!r} as a single token; the checkpoint's tokenizer must "
            "list it as an added special token (LLaVA-OneVision / LLaVA-Video tokenizers do)."
        )
    return int(tid)


def encode_prompt(tokenizer, text: str, video_token: str = VIDEO_TOKEN, video_token_id: int | None = None) -> list[int]:
    """Tokenise a prompt that holds exactly one video placeholder.

    No special tokens are added (the chat template already wrote them).

    Args:
        tokenizer: a transformers tokenizer or processor, or a ``tokenizers.Tokenizer``.
        text: the prompt, typically from :func:`build_video_prompt`.
        video_token: the placeholder string.
        video_token_id: the model config's ``video_token_index``, if known: the
            tokenizer's id for the placeholder is checked against it (a
            tokenizer from another checkpoint would otherwise feed the model a
            placeholder it never replaces).

    Returns:
        ``input_ids`` as a list of ints, holding the placeholder's id
        (:func:`video_token_id`) exactly once.

    Raises:
        InputError: ``text`` is not a string or holds the placeholder zero or
            several times.
        CheckpointError: the tokenizer splits the placeholder, or maps it to
            another id than ``video_token_id``.
    """
    if not isinstance(text, str):
        raise InputError(f"text must be a string, got {type(text).__name__}.")
    check_text(text, "prompt")
    count = text.count(video_token)
    if count != 1:
        raise InputError(
            f"the prompt contains {count} {video_token!r} placeholders; put exactly one {video_token} in the prompt "
            "(build_video_prompt(tokenizer, question) does), the runtime expands it into the video's tokens."
        )
    tokenizer = _text_tokenizer(tokenizer)
    vid = _placeholder_id(tokenizer, video_token)
    if video_token_id is not None and vid != video_token_id:
        raise CheckpointError(
            f"the tokenizer maps {video_token!r} to id {vid} but the model config's video_token_index is "
            f"{video_token_id}; load the tokenizer from the same checkpoint as the model."
        )
    ids = _encode(tokenizer, text)
    if ids.count(vid) != 1:
        raise CheckpointError(
            f"the prompt holds one {video_token!r} but its tokenisation holds id {vid} {ids.count(vid)} times; "
            "the tokenizer merges the placeholder with neighbouring text: make it a special token."
        )
    return ids


__all__ = ["VIDEO_TOKEN", "build_video_prompt", "check_text", "encode_prompt", "video_token_id"]
