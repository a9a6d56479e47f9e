"""The text-only letter-lookup prompts (scripts/train_default_model.py's ``lookup_example``, which its
``--lookup-prompts`` mixes into training) and scripts/diagnose_choice_lookup.py, which trains on them alone."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from script_modules import load_script  # tests/ helper (tests/conftest.py puts it on sys.path)

from holitom.default_model import default_model_dir
from holitom.eval.videoqa import CHANGES, COLOURS, COUNTS, DIRECTIONS
from holitom.video.synthetic import SHAPES

# The oracle of lookup_example's kind: the benchmark's answer words of each kind of question
KIND_WORDS = {"colour": COLOURS, "shape": SHAPES, "direction": DIRECTIONS, "count": COUNTS, "change": CHANGES}


@pytest.fixture(scope="module")
def diag():
    return load_script("diagnose_choice_lookup")


@pytest.fixture(scope="module")
def train():
    return load_script("train_default_model")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_dir())


@pytest.fixture(scope="module")
def packer(train, tokenizer):
    from holitom.models.config import LlavaConfig

    video_token_id = LlavaConfig.from_pretrained(default_model_dir()).video_token_id
    return train.Packer(tokenizer, video_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>"))


@pytest.mark.parametrize("letter_only", [True, False])
def test_the_scored_position_predicts_the_letter_that_lists_the_answer(train, tokenizer, packer, letter_only):
    from holitom.eval.videoqa import CHOICE_INSTRUCTION

    rng = np.random.default_rng(5)
    for _ in range(40):
        ids, targets, at, kind = train.lookup_example(packer, rng, letter_only)
        text = tokenizer.decode(ids)
        # The oracle reads the text: the word the prompt names, and the letter its listing gives that word.
        word = re.search(r"The answer is (\w+)\.", text).group(1)
        listed = dict((w, letter) for letter, w in re.findall(r"\(([A-D])\) (\w+)", text))
        assert tokenizer.decode([targets[at]]) == listed[word]
        assert set(listed) <= set(KIND_WORDS[kind])
        first = next(i for i, target in enumerate(targets) if target != -100)  # the reply's first target
        assert targets[-1] == packer.end_id and -100 not in targets[first:] and len(ids) == len(targets)
        assert first == at if letter_only else first < at
        if letter_only:
            assert text.endswith(f"{train.LETTER_INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n{listed[word]}")
        else:  # asked and answered as the benchmark asks a multiple choice
            assert text.endswith(f"{CHOICE_INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n{word} ({listed[word]})")


def test_without_a_hint_only_the_letter_after_the_written_option_is_a_target(train, tokenizer, packer):
    from holitom.eval.videoqa import CHOICE_INSTRUCTION

    rng = np.random.default_rng(6)
    drawn, kinds = set(), set()
    for _ in range(40):
        ids, targets, at, kind = train.lookup_example(packer, rng, hint=False)
        text = tokenizer.decode(ids)
        # The oracle reads the text: the prompt's listing, and the option the reply writes.
        assert "The answer is" not in text and text.count(CHOICE_INSTRUCTION) == 1
        listed = dict((w, letter) for letter, w in re.findall(r"\(([A-D])\) (\w+)", text))
        written = re.search(r"assistant\n(\w+) \([A-D]\)$", text).group(1)
        drawn.add(listed[written])
        kinds.add(kind)
        assert set(listed) <= set(KIND_WORDS[kind])
        assert tokenizer.decode([targets[at]]) == listed[written]
        scored = [tokenizer.decode([t]) for t in targets if t != -100]
        assert scored == [" (", listed[written], ")", "<|im_end|>"]
    assert len(drawn) > 1  # the letter varies: no fixed answer to learn
    assert kinds == set(KIND_WORDS)  # every kind of options is drawn
    with pytest.raises(ValueError, match="nothing to look up"):
        train.lookup_example(packer, rng, letter_only=True, hint=False)


def test_the_text_forward_is_the_models_own_prefill(train, packer):
    from holitom.models.loading import load_llava

    model = load_llava(default_model_dir()).float().eval()
    ids, _, _, _ = train.lookup_batch(packer, np.random.default_rng(0), 3)
    with torch.no_grad():
        batched = train.text_logits(model, ids)  # (3, L, V)
        for row in range(3):
            alone, _ = model.prefill(model.embed(ids[row : row + 1]), torch.arange(ids.shape[1])[None])  # (1, L, V)
            torch.testing.assert_close(batched[row], alone[0], atol=1e-5, rtol=1e-5)


def test_a_short_run_prints_its_letter_accuracy(diag, capsys):
    assert diag.main(["--steps", "2", "--batch", "4", "--reply", "letter"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("reply letter: step 0 letter accuracy") and lines[-1].startswith("reply letter: step 2 loss")
    for kind in KIND_WORDS:  # the per-kind breakdown of the 256 held-out prompts
        assert re.search(rf"(\(|, ){kind} [01]\.\d{{3}}", lines[0])


def test_a_letter_reply_without_a_hint_is_refused(diag, capsys):
    with pytest.raises(SystemExit) as exc:
        diag.main(["--reply", "letter", "--no-hint"])
    assert exc.value.code == 2 and "--reply letter needs --hint" in capsys.readouterr().err


def test_a_bad_model_folder_or_step_count_is_an_error_line(diag, tmp_path, capsys):
    assert diag.main(["--model", str(tmp_path / "nope"), "--steps", "0"]) == 2  # the loader's message, not a traceback
    assert capsys.readouterr().err.startswith(f"diagnose_choice_lookup: error: checkpoint directory '{tmp_path / 'nope'}' does not exist")
    with pytest.raises(SystemExit) as exc:
        diag.main(["--steps", "-1"])
    assert exc.value.code == 2 and "argument --steps: must be an integer >= 0, got -1" in capsys.readouterr().err
