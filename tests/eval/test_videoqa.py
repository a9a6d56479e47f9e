"""The generated benchmark: deterministic per seed, disjoint splits, and answers right by construction.

The answer check is independent of the generator's bookkeeping: it renders each
item's clip through the users' path (H.264 mp4 written and decoded by PyAV,
8 sampled frames) and re-derives the answer from the decoded pixels alone
(palette-coloured pixels, blob centroids, fill ratio of the bounding box for the
shape, connected components for the count), reading only the question text.
"""

from __future__ import annotations

import re
from collections import deque

import numpy as np
import pytest

from holitom.errors import InputError
from holitom.eval.videoqa import (
    COLOURS,
    NUM_FRAMES,
    QUESTION_TYPES,
    SPLITS,
    is_correct,
    make_item,
    make_items,
    normalise_answer,
    render_frames,
    write_clip,
)
from holitom.video import read_video

# Decoded H.264 (yuv420p) moves colours by a few levels and blurs edges: a pixel
# belongs to a palette colour when every channel is within this distance.
COLOUR_TOLERANCE = 60
MIN_BLOB = 40  # pixels: smaller specks are codec edge artefacts


def colour_mask(frame: np.ndarray, colour: str) -> np.ndarray:
    target = np.array(COLOURS[colour], dtype=np.int32)
    return (np.abs(frame.astype(np.int32) - target) <= COLOUR_TOLERANCE).all(axis=-1)  # (H, W)


def components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask, as (n, 2) pixel coordinate arrays (plain BFS)."""
    seen = np.zeros_like(mask)
    out = []
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        queue, pixels = deque([(y, x)]), []
        seen[y, x] = True
        while queue:
            cy, cx = queue.popleft()
            pixels.append((cy, cx))
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(pixels) >= MIN_BLOB:
            out.append(np.array(pixels))
    return out


def blobs(frame: np.ndarray) -> list[tuple[str, np.ndarray]]:
    return [(c, b) for c in COLOURS for b in components(colour_mask(frame, c))]


def shape_of(pixels: np.ndarray) -> str:
    """Fill ratio of the bounding box: square ~1, circle ~pi/4, triangle ~1/2."""
    h = pixels[:, 0].max() - pixels[:, 0].min() + 1
    w = pixels[:, 1].max() - pixels[:, 1].min() + 1
    fill = len(pixels) / (h * w)
    return "square" if fill > 0.9 else ("circle" if fill > 0.65 else "triangle")


def described(frame: np.ndarray) -> list[tuple[str, str, np.ndarray]]:
    return [(c, shape_of(b), b) for c, b in blobs(frame)]


def derive_answer(question: str, frames: np.ndarray) -> str:
    """The one-word answer to ``question`` read off the decoded frames ``(F, H, W, 3)``."""
    first, last = described(frames[0]), described(frames[-1])
    if question.startswith("How many"):
        return str(len(first))
    if m := re.match(r"What colour is the (\w+)\?", question):
        return next(c for c, s, _ in first if s == m[1])
    if m := re.match(r"What shape is the (\w+) object\?", question):
        return next(s for c, s, _ in first if c == m[1])
    if m := re.match(r"Which way does the (\w+) (\w+) move\?", question):
        a = next(b for c, s, b in first if c == m[1]).mean(axis=0)
        z = next(b for c, s, b in last if c == m[1]).mean(axis=0)
        dy, dx = z - a
        return ("down" if dy > 0 else "up") if abs(dy) > abs(dx) else ("right" if dx > 0 else "left")
    if m := re.match(r"Does the (\w+) (\w+) appear or disappear\?", question):
        at_start = any(c == m[1] for c, _, _ in first)
        at_end = any(c == m[1] for c, _, _ in last)
        assert at_start != at_end
        return "disappear" if at_start else "appear"
    if m := re.match(r"What (colour|shape) (?:is the shape|is shown) (before|after) the scene cut\?", question):
        c, s, _ = (first if m[2] == "before" else last)[0]
        return c if m[1] == "colour" else s
    if m := re.match(r"What (?:colour is the object that flashes|shape flashes) briefly\?", question):
        per_frame = [described(f) for f in frames]
        counts = {}
        for objs in per_frame:
            for c, s, _ in objs:
                counts[(c, s)] = counts.get((c, s), 0) + 1
        (c, s), = [k for k, n in counts.items() if n == 1]
        return c if "colour" in question else s
    raise AssertionError(f"no rule for question {question!r}")


@pytest.fixture(scope="module")
def decoded(tmp_path_factory):
    """Two items of each type from each split, rendered to mp4 and decoded back (8 frames)."""
    folder = tmp_path_factory.mktemp("videoqa")
    out = []
    for split in SPLITS:
        for item in make_items(split, 2 * len(QUESTION_TYPES), start=35):
            out.append((item, read_video(write_clip(item, folder), NUM_FRAMES).frames))
    return out


def test_answers_are_right_by_construction(decoded):
    checked = 0
    for item, frames in decoded:
        for qa in item.questions:  # every question the clip answers, not only the item's own
            assert derive_answer(qa.question, frames) == qa.answer, (item.item_id, qa.question)
            checked += 1
        if item.form == "short":
            assert item.answer == item.word
        else:
            assert item.options[ord(item.answer) - ord("A")] == item.word
            assert f"({item.answer}) {item.word}" in item.prompt
    assert checked >= len(decoded)


def test_each_question_is_about_the_sprites_that_show_its_answer(decoded):
    """``QA.about``: the sprites named by the question, or holding its answer, re-derived from the question text."""
    from holitom.eval.videoqa import CHANGES, COUNTS, DIRECTIONS

    for item, frames in decoded:
        sprites = item.clip.sprites
        for qa in item.questions:
            about = [sprites[i] for i in qa.about]
            assert about and len(set(qa.about)) == len(qa.about), (item.item_id, qa.question)
            if qa.answer in COUNTS:  # a count is about every object
                assert sorted(qa.about) == list(range(len(sprites))) and int(qa.answer) == len(sprites)
                continue
            (sprite,) = about
            named = set(re.findall(r"\w+", qa.question))
            if qa.answer in DIRECTIONS or qa.answer in CHANGES:  # the question names the object by colour and shape
                assert {sprite.colour, sprite.shape} <= named, (item.item_id, qa.question)
            else:  # a colour or a shape: the answer is this sprite's, and what the question names is too
                assert qa.answer in (sprite.colour, sprite.shape), (item.item_id, qa.question)
                assert named.isdisjoint({s.colour for s in sprites} | {s.shape for s in sprites}) or named & {sprite.colour, sprite.shape}
            if "before" in named or "after" in named:
                assert sprite.scene == ("after" in named)
            if "flashes" in named:
                assert sprite.frames != (0, len(render_frames(item.clip)) - 1)


def test_static_control_has_no_motion(decoded):
    for item, frames in decoded:
        if item.qtype == "static":
            source = render_frames(item.clip)
            assert (source == source[:1]).all(), item.item_id
            diff = np.abs(frames.astype(np.int16) - frames[:1].astype(np.int16))
            assert diff.mean() < 2.0, item.item_id  # decoded: codec noise only
        if item.qtype == "short_event":
            seen = [len(described(f)) for f in frames]
            assert seen.count(2) == 1 and seen.count(1) == NUM_FRAMES - 1, (item.item_id, seen)


def test_deterministic_per_seed():
    a, b = make_item("test", 12), make_item("test", 12)
    assert (a.prompt, a.answer, a.clip, a.questions) == (b.prompt, b.answer, b.clip, b.questions)
    assert np.array_equal(render_frames(a.clip), render_frames(b.clip))
    other = make_item("test", 19)  # same type (12 % 7 == 19 % 7), other seed
    assert other.qtype == a.qtype and not np.array_equal(render_frames(other.clip), render_frames(a.clip))


def test_splits_share_no_seeds_and_types_are_balanced():
    seeds = {split: {make_item(split, i).seed for i in (0, 1, 999_999)} for split in SPLITS}
    assert not (seeds["train"] & seeds["val"]) and not (seeds["val"] & seeds["test"]) and not (seeds["train"] & seeds["test"])
    items = make_items("test", 140)
    assert {t: sum(i.qtype == t for i in items) for t in QUESTION_TYPES} == {t: 20 for t in QUESTION_TYPES}
    assert {i.form for i in items} == {"short", "choice"}


def test_bad_arguments_are_refused():
    with pytest.raises(InputError, match="unknown split"):
        make_item("dev", 0)
    with pytest.raises(InputError, match="index"):
        make_item("test", 1_000_000)
    with pytest.raises(InputError, match="count"):
        make_items("test", 0)


def test_answer_normalisation():
    item = next(i for i in make_items("test", 14) if i.form == "choice")
    assert is_correct(item, f" ({item.answer}).") and is_correct(item, item.answer.lower())
    assert not is_correct(item, item.word) and not is_correct(item, "")
    assert normalise_answer(" Red. ") == "red"


def test_a_multiple_choice_asks_for_the_option_and_scores_the_letter_it_picks():
    items = [i for i in make_items("test", 70) if i.form == "choice"]
    assert items
    for item in items:
        # The oracle reads the prompt: its listing, and the letter that lists the item's word.
        listed = dict(re.findall(r"\(([A-D])\) (\w+)", item.prompt))
        letter = next(k for k, w in listed.items() if w == item.word)
        other = next(k for k in listed if k != letter)
        assert item.prompt.endswith(" Answer with the option and its letter.")
        assert (item.answer, item.reply) == (letter, f"{item.word} ({letter})")
        assert is_correct(item, item.reply) and is_correct(item, f"{item.word} ({letter}).")
        assert is_correct(item, f"{listed[other]} ({letter})")  # the letter is what is scored
        assert not is_correct(item, f"{item.word} ({other})") and not is_correct(item, f"({letter}) {item.word} ({other})")
    short = next(i for i in make_items("test", 7) if i.form == "short")
    assert short.reply == short.answer == short.word and not is_correct(short, f"{short.word} (A)")


def test_chance_is_one_over_the_answers_the_question_allows():
    items = make_items("val", 70)
    for item in items:
        if item.form == "choice":  # the letters listed in the prompt
            assert item.chance == pytest.approx(1 / len(re.findall(r"\([A-Z]\) ", item.prompt)))
        else:  # the candidate words of the one question whose text the prompt asks
            asked = [qa for qa in item.questions if item.prompt.startswith(qa.question + " ")]
            assert len({len(qa.candidates) for qa in asked}) == 1 and item.word in asked[0].candidates
            assert item.chance == pytest.approx(1 / len(asked[0].candidates))
    # The README's figure for this slice, worked out by hand in an earlier diagnosis.
    assert sum(i.chance for i in items) / len(items) == pytest.approx(0.311, abs=5e-4)
