#!/usr/bin/env python
"""Can the default model's decoder learn the multiple-choice letter lookup from text alone?

A diagnosis (README, "Where it stands"), not a training recipe. A default model that asked for
the letter alone answered 88% of the benchmark's one-word questions and 33% of its multiple
choices: it found the answer in the video but not the letter that lists it. Here the answer is
given in the text ("The answer is blue. Options: (A) red (B) blue ..."), so only the lookup is
left to learn. The prompts are the training script's :func:`lookup_example` (what its
``--lookup-prompts`` mixes into the video steps), built on the benchmark's own
:func:`holitom.eval.videoqa.pose`.

- ``--reply option``: the benchmark's instruction, the reply is the option then its letter
  (``blue (B)``): the letter is a lookup of the option the model has just written;
- ``--reply letter``: "Answer with the letter.", the reply is the letter (``B``);
- ``--no-hint`` (with ``--reply option``): the question names no answer, the reply writes a
  drawn option and only its letter is learnt: the lookup a reply after a video needs.

The decoder, embeddings and LM head of ``--model`` train (AdamW, one thread) on the reply tokens
of batches of such prompts; every 100 steps the script prints how many letters of 256 held-out
prompts the greedy next token gets right, overall and per kind of options (colour, shape,
direction, count, change). Guessing scores about 32% (2 to 4 options).

Usage::

    python scripts/diagnose_choice_lookup.py --reply option --steps 5000   # 22 min on one core
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the training script beside it, as a module
from train_default_model import Packer, lookup_batch, text_logits  # noqa: E402

VAL_PROMPTS = 256


def letter_accuracy(model, batch) -> tuple[float, dict[str, float]]:
    """The share of the batch's letters the greedy next token gets right: overall, and per kind of options."""
    ids, targets, letter_at, kinds = batch
    with torch.no_grad():
        logits = text_logits(model, ids)  # (B, L, V)
    rows = torch.arange(ids.shape[0])
    right = (logits[rows, letter_at].argmax(-1) == targets[rows, letter_at]).float()  # (B,)
    per_kind = {kind: float(right[[k == kind for k in kinds]].mean()) for kind in sorted(set(kinds))}
    return float(right.mean()), per_kind


def accuracy_text(model, batch) -> str:
    overall, per_kind = letter_accuracy(model, batch)
    return f"letter accuracy {overall:.3f} (" + ", ".join(f"{kind} {acc:.3f}" for kind, acc in per_kind.items()) + ")"


def main(argv: list[str] | None = None) -> int:
    from holitom.cli import int_flag

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a llava-hf checkpoint folder (default: the embedded default)")
    parser.add_argument("--reply", choices=("letter", "option"), default="option", help="the letter alone, or the option then its letter")
    parser.add_argument("--hint", action=argparse.BooleanOptionalAction, default=True, help="the question names the answer; --no-hint: it names none, the reply's option is drawn and only its letter is learnt (what the training script's --lookup-prompts mixes in)")
    parser.add_argument("--steps", type=int_flag(0), default=5000)
    parser.add_argument("--batch", type=int_flag(1), default=32)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.reply == "letter" and not args.hint:
        parser.error("--reply letter needs --hint: a letter alone with no hint has nothing to look up")

    from transformers import AutoTokenizer

    from holitom.default_model import default_model_dir
    from holitom.errors import HolitomError
    from holitom.models.loading import load_llava

    if args.model is None:
        args.model = default_model_dir()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    try:  # the checkpoint first: its loader says what is wrong with a folder, the tokenizer's would not
        model = load_llava(args.model).float().train().requires_grad_(True)
    except HolitomError as exc:
        print(f"diagnose_choice_lookup: error: {exc}", file=sys.stderr)
        return 2
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    packer = Packer(tokenizer, model.config.video_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>"))
    params = [p for name, p in model.named_parameters() if not name.startswith("vision.")]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    letter_only = args.reply == "letter"
    val = lookup_batch(packer, np.random.default_rng([args.seed, 1]), VAL_PROMPTS, letter_only, args.hint)
    rng = np.random.default_rng([args.seed, 0])
    print(f"reply {args.reply}: step 0 {accuracy_text(model, val)}", flush=True)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        ids, targets, _, _ = lookup_batch(packer, rng, args.batch, letter_only, args.hint)
        logits = text_logits(model, ids)  # (B, L, V)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == args.steps:
            print(f"reply {args.reply}: step {step} loss {loss.item():.3f} {accuracy_text(model, val)} ({time.perf_counter() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
