"""scripts/diagnose_choice_lookup.py: its prompts, the letter position it scores, its text-only forward."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from script_modules import load_script  # tests/ helper (tests/conftest.py puts it on sys.path)


@pytest.fixture(scope="module")
def diag():
    return load_script("diagnose_choice_lookup")


@pytest.fixture(scope="module")
def tokenizer(diag):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(diag.DEFAULT_MODEL)


@pytest.mark.parametrize("reply", ["letter", "option"])
def test_the_scored_position_predicts_the_letter_that_lists_the_answer(diag, tokenizer, reply):
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    rng = np.random.default_rng(5)
    for _ in range(40):
        ids, targets, at = diag.lookup_example(tokenizer, end_id, rng, reply)
        text = tokenizer.decode(ids)
        # The oracle reads the text: the word the prompt names, and the letter its listing gives that word.
        word = re.search(r"The answer is (\w+)\.", text).group(1)
        listed = dict((w, letter) for letter, w in re.findall(r"\(([A-D])\) (\w+)", text))
        assert tokenizer.decode([targets[at]]) == listed[word]
        first = next(i for i, target in enumerate(targets) if target != -100)  # the reply's first target
        assert targets[-1] == end_id and -100 not in targets[first:] and len(ids) == len(targets)
        assert first == at if reply == "letter" else first < at
        if reply == "option":
            assert text.endswith(f"{diag.OPTION_INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n {word} ({listed[word]})")
        else:
            assert text.endswith(f"{diag.LETTER_INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n{listed[word]}")


def test_the_text_forward_is_the_models_own_prefill(diag, tokenizer):
    from holitom.models.loading import load_llava

    model = load_llava(diag.DEFAULT_MODEL).float().eval()
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids, _, _ = diag.make_batch(tokenizer, end_id, np.random.default_rng(0), 3, "option")
    with torch.no_grad():
        batched = diag.decoder_logits(model, ids)  # (3, L, V)
        for row in range(3):
            alone, _ = model.prefill(model.embed(ids[row : row + 1]), torch.arange(ids.shape[1])[None])  # (1, L, V)
            torch.testing.assert_close(batched[row], alone[0], atol=1e-5, rtol=1e-5)


def test_a_short_run_prints_its_letter_accuracy(diag, capsys):
    assert diag.main(["--steps", "2", "--batch", "4", "--reply", "letter"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("reply letter: step 0 letter accuracy") and lines[-1].startswith("reply letter: step 2 loss")
