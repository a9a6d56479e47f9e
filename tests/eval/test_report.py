"""The printed eval table: its per-form columns read each row's own scores."""

from __future__ import annotations

from holitom.eval.report import table_rows
from holitom.eval.scoring import score_sheet
from holitom.eval.videoqa import make_items

ITEMS = make_items("test", 28)


def _row(sheet: dict[str, str]) -> dict:
    score = score_sheet(ITEMS, sheet).to_dict()
    return {
        **score,
        "backend": "torch",
        "label": "torch",
        "method": "vanilla",
        "ratio": None,
        "precision": None,
        "tokens": {"after_outer": 1569.0, "after_inner": 1569.0},
        "flops": {"pct_of_vanilla": 1.0},
        "pct_of_vanilla": 1.0,
    }


def test_the_table_shows_one_word_and_multiple_choice_accuracy_apart():
    # Right on every one-word item, wrong on every multiple choice (the other letter).
    sheet = {i.item_id: i.answer if i.form == "short" else ("B" if i.answer == "A" else "A") for i in ITEMS}
    header, cells = table_rows({"rows": [_row(sheet)]})
    (row,) = cells
    shown = dict(zip(header, row))
    short = sum(i.form == "short" for i in ITEMS)
    assert (shown["word"], shown["choice"]) == ("100.0", "0.0")
    assert shown["acc %"] == f"{100 * short / len(ITEMS):.1f}"
