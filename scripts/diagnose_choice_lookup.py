#!/usr/bin/env python
"""Can the default model's decoder learn the multiple-choice letter lookup from text alone?

A diagnosis (README, "Where it stands"), not a training recipe. The shipped default answers 88% of
the benchmark's one-word questions and 33% of its multiple choices: it finds the answer in the
video but not the letter that lists it. Here the answer is given in the text
("The answer is blue. Options: (A) red (B) blue ..."), so only the lookup is left to learn. The
options and their listing come from the benchmark's own :func:`holitom.eval.videoqa.pose`.

- ``--reply letter``: the benchmark's instruction, the reply is the letter (``B``);
- ``--reply option``: "Answer with the option and its letter.", the reply is `` blue (B)``: the
  letter is then a lookup of the option tokens the model has just written.

The decoder, embeddings and LM head of ``--model`` train (AdamW, one thread) on the reply tokens
of batches of such prompts; every 100 steps the script prints how many letters of 256 held-out
prompts the greedy next token gets right. Guessing scores about 32% (2 to 4 options).

Usage::

    python scripts/diagnose_choice_lookup.py --reply option --steps 5000   # 22 min on one core
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from holitom.eval.videoqa import CHANGES, COLOURS, COUNTS, DIRECTIONS, LETTERS, QA, pose
from holitom.video.synthetic import SHAPES

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO_ROOT / "holitom" / "assets" / "default_model"
ANSWER_GROUPS = (tuple(COLOURS), SHAPES, DIRECTIONS, COUNTS, CHANGES)  # the benchmark's answer words
LETTER_INSTRUCTION = "Answer with the letter."
OPTION_INSTRUCTION = "Answer with the option and its letter."
VAL_PROMPTS = 256


def lookup_example(tokenizer, end_id: int, rng: np.random.Generator, reply: str) -> tuple[list[int], list[int], int]:
    """One prompt and its reply: ``(ids, targets, letter_at)``.

    ``ids`` are the prompt and the reply without its end token, ``targets`` the next token at each
    position (-100 on the prompt), ``letter_at`` the position whose next token is the letter.
    """
    group = ANSWER_GROUPS[int(rng.integers(len(ANSWER_GROUPS)))]
    word = group[int(rng.integers(len(group)))]
    prompt, letter, options = pose(QA(f"The answer is {word}.", word, group), "choice", rng)
    if not prompt.endswith(LETTER_INSTRUCTION):
        raise SystemExit(f"the benchmark's multiple choice no longer ends with {LETTER_INSTRUCTION!r}: update this script")
    if reply == "option":
        prompt = prompt.removesuffix(LETTER_INSTRUCTION) + OPTION_INSTRUCTION
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer.encode(text, add_special_tokens=False)
    answer = letter if reply == "letter" else f" {options[LETTERS.index(letter)]} ({letter})"
    reply_ids = tokenizer.encode(answer, add_special_tokens=False) + [end_id]
    # The letter is the reply's first token, or the one before the closing bracket and the end token.
    letter_at = len(prompt_ids) - 1 + (0 if reply == "letter" else len(reply_ids) - 3)
    return prompt_ids + reply_ids[:-1], [-100] * (len(prompt_ids) - 1) + reply_ids, letter_at


def make_batch(tokenizer, end_id: int, rng: np.random.Generator, size: int, reply: str):
    """``size`` examples, right-padded: ``ids (B, L)``, ``targets (B, L)``, ``letter_at (B,)``."""
    examples = [lookup_example(tokenizer, end_id, rng, reply) for _ in range(size)]
    width = max(len(ids) for ids, _, _ in examples)
    ids = torch.zeros(size, width, dtype=torch.int64)
    targets = torch.full((size, width), -100, dtype=torch.int64)
    for i, (seq, tgt, _) in enumerate(examples):
        ids[i, : len(seq)] = torch.tensor(seq)
        targets[i, : len(tgt)] = torch.tensor(tgt)
    return ids, targets, torch.tensor([at for _, _, at in examples])


def decoder_logits(model, ids: torch.Tensor) -> torch.Tensor:
    """Causal logits ``(B, L, V)`` of text alone through the model's own decoder layers."""
    x = model.embed_tokens(ids)  # (B, L, D)
    cos, sin = model._rope(torch.arange(ids.shape[1])[None].expand(ids.shape[0], -1))  # (B, L, hd)
    for layer in model.decoder.layers:
        x, _, _ = layer(x, cos, sin)
    return model._logits(x)


def letter_accuracy(model, batch) -> float:
    ids, targets, letter_at = batch
    with torch.no_grad():
        logits = decoder_logits(model, ids)  # (B, L, V)
    rows = torch.arange(ids.shape[0])
    return float((logits[rows, letter_at].argmax(-1) == targets[rows, letter_at]).float().mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="a llava-hf checkpoint folder (default: the embedded default)")
    parser.add_argument("--reply", choices=("letter", "option"), default="option", help="the letter alone, or the option then its letter")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    from holitom.models.loading import load_llava

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model = load_llava(args.model).float().train().requires_grad_(True)
    params = [p for name, p in model.named_parameters() if not name.startswith("vision.")]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    val = make_batch(tokenizer, end_id, np.random.default_rng([args.seed, 1]), VAL_PROMPTS, args.reply)
    rng = np.random.default_rng([args.seed, 0])
    print(f"reply {args.reply}: step 0 letter accuracy {letter_accuracy(model, val):.3f}", flush=True)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        ids, targets, _ = make_batch(tokenizer, end_id, rng, args.batch, args.reply)
        logits = decoder_logits(model, ids)  # (B, L, V)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == args.steps:
            acc = letter_accuracy(model, val)
            print(f"reply {args.reply}: step {step} loss {loss.item():.3f} letter accuracy {acc:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
