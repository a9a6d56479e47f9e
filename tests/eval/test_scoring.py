"""The evaluator's scoring: a perfect sheet scores 1, a wrong one 0, per type and per form."""

from __future__ import annotations

import pytest

from holitom.errors import InputError
from holitom.eval.scoring import score_sheet
from holitom.eval.videoqa import DIRECTIONS, LETTERS, QUESTION_TYPES, make_items

ITEMS = make_items("test", 28)


def _wrong(item) -> str:
    if item.form == "choice":
        return next(letter for letter in LETTERS[: len(item.options)] if letter != item.answer)
    return next(w for w in ("red", "blue", "circle", "left") + DIRECTIONS if w != item.answer)


def test_perfect_sheet():
    score = score_sheet(ITEMS, {i.item_id: i.answer for i in ITEMS})
    assert (score.correct, score.total, score.accuracy) == (28, 28, 1.0)
    assert score.per_type == {t: 1.0 for t in QUESTION_TYPES}
    assert set(score.per_form.values()) == {1.0}


def test_wrong_sheet():
    score = score_sheet(ITEMS, {i.item_id: _wrong(i) for i in ITEMS})
    assert (score.correct, score.accuracy) == (0, 0.0)
    assert score.per_type == {t: 0.0 for t in QUESTION_TYPES}


def test_mixed_sheet_counts_each_group():
    # Right on the first item of each type (4 per type in 28 items), formatted loosely.
    right = {i.item_id for i in ITEMS if i.index < len(QUESTION_TYPES)}
    sheet = {i.item_id: (f" ({i.answer.lower()})." if i.item_id in right else _wrong(i)) for i in ITEMS}
    score = score_sheet(ITEMS, sheet)
    assert score.correct == len(QUESTION_TYPES)
    assert score.per_type == {t: 0.25 for t in QUESTION_TYPES}
    assert score.to_dict()["accuracy"] == pytest.approx(0.25)


def test_incomplete_sheet_is_refused():
    with pytest.raises(InputError, match="no answer for 1 item"):
        score_sheet(ITEMS, {i.item_id: i.answer for i in ITEMS[1:]})
    with pytest.raises(InputError, match="no items"):
        score_sheet([], {})
