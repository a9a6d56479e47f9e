"""Scoring an answer sheet against the generated benchmark's expected answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from holitom.errors import InputError
from holitom.eval.videoqa import FORMS, QUESTION_TYPES, Item, is_correct


@dataclass(frozen=True)
class Score:
    """Exact-match accuracy overall, per question type and per form (``None`` where a group is empty)."""

    correct: int
    total: int
    per_type: dict[str, float | None]
    per_form: dict[str, float | None]

    @property
    def accuracy(self) -> float:
        return self.correct / self.total

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "correct": self.correct, "total": self.total, "per_type": self.per_type, "per_form": self.per_form}


def _mean(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def score_sheet(items: Sequence[Item], answers: Mapping[str, str]) -> Score:
    """Score ``answers`` (item id -> the model's answer text) on ``items``.

    Raises:
        InputError: no items, or an item without an answer (a sheet must answer every item).
    """
    if not items:
        raise InputError("there are no items to score; evaluate at least one item.")
    missing = [item.item_id for item in items if item.item_id not in answers]
    if missing:
        raise InputError(f"the answer sheet has no answer for {len(missing)} item(s), e.g. {missing[:3]}; answer every item.")
    flags = {item.item_id: is_correct(item, answers[item.item_id]) for item in items}
    per_type = {t: _mean([flags[i.item_id] for i in items if i.qtype == t]) for t in QUESTION_TYPES}
    per_form = {f: _mean([flags[i.item_id] for i in items if i.form == f]) for f in FORMS}
    return Score(sum(flags.values()), len(items), per_type, per_form)


__all__ = ["Score", "score_sheet"]
