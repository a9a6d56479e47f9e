"""A deterministic generated video-QA benchmark with answers known by construction.

Every item is a short clip of coloured shapes on a grey textured background and one
question about it. The clip is a pure function of the item's seed (numpy ``PCG64``
streams, stable across releases) and is rendered through the path users go through:
encoded to H.264 mp4 with PyAV (:func:`holitom.video.write_video`) and decoded back
by :func:`holitom.video.read_video`.

Question types (one scene kind each, balanced: item ``i`` has type ``i % 7``):

- ``attribute``: colour of a shape or shape of a coloured object (objects drift slowly);
- ``motion``: direction (left/right/up/down) one object moves in;
- ``count``: how many shapes there are (1..4);
- ``appear``: whether an object appears or disappears half-way;
- ``scene_cut``: colour or shape shown before / after a hard cut to a new scene;
- ``short_event``: colour or shape of an object visible in only ONE of the sampled
  frames (so temporal merging can lose it);
- ``static``: a scene where nothing moves at all (the control).

Answers are one word (``red``, ``circle``, ``left``, ``3``, ``appear``) or, for
multiple-choice items, the letter of the right option. A multiple choice asks for the
option and then its letter (``red (B)``): the letter is then a lookup of the word just
written, which a small decoder learns far sooner than the letter alone (README, "Where it
stands"); the letter is what is scored. Splits use disjoint seeds:
``train`` ``0..``, ``val`` ``1_000_000..``, ``test`` ``2_000_000..``.
"""

from __future__ import annotations

import numbers
import re
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from holitom.errors import InputError
from holitom.video.sampling import sample_frame_indices
from holitom.video.synthetic import SHAPES, background_texture, shape_mask, write_video

# Geometry of every clip: 16 source frames of 160 x 160 at 8 fps, read back as 8
# uniformly sampled frames (the model's 8 x 196 = 1568 visual tokens).
SOURCE_FRAMES = 16
NUM_FRAMES = 8
FRAME_SIZE = 160
FPS = 8.0

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (40, 80, 235),
    "yellow": (240, 220, 40),
}
DIRECTIONS = ("left", "right", "up", "down")
COUNTS = ("1", "2", "3", "4")
CHANGES = ("appear", "disappear")
QUESTION_TYPES = ("attribute", "motion", "count", "appear", "scene_cut", "short_event", "static")
FORMS = ("short", "choice")
SPLITS = {"train": 0, "val": 1_000_000, "test": 2_000_000}
SPLIT_SIZE = 1_000_000  # items per split: seeds never overlap
CHOICE_SHARE = 0.4  # share of items asked as multiple choice
LETTERS = "ABCD"

_CELL = FRAME_SIZE // 3  # objects sit in cells of a 3 x 3 grid, so they never overlap
_SIZE_RANGE = (34.0, 42.0)  # object side in pixels (about 3 x 3 pooled tokens)
DIR_VECTORS = {"left": (0.0, -1.0), "right": (0.0, 1.0), "up": (-1.0, 0.0), "down": (1.0, 0.0)}  # (dy, dx): corners are (y, x)


@dataclass(frozen=True)
class Sprite:
    """One shape: linear motion from ``start`` to ``end`` (top-left corner, pixels) over the clip.

    ``frames`` is the inclusive range of source frames where it is visible;
    ``scene`` the scene (0, or 1 after a cut) it belongs to.
    """

    shape: str
    colour: str
    size: float
    start: tuple[float, float]
    end: tuple[float, float]
    frames: tuple[int, int] = (0, SOURCE_FRAMES - 1)
    scene: int = 0

    def corner(self, t: int) -> tuple[float, float]:
        a = t / (SOURCE_FRAMES - 1)
        return (self.start[0] + a * (self.end[0] - self.start[0]), self.start[1] + a * (self.end[1] - self.start[1]))

    def visible(self, t: int) -> bool:
        return self.frames[0] <= t <= self.frames[1]


@dataclass(frozen=True)
class ClipSpec:
    """What a clip shows: backgrounds (one per scene), the cut frame (or None), the sprites."""

    background_seeds: tuple[int, ...]
    cut_at: int | None
    sprites: tuple[Sprite, ...]

    def scene_of(self, t: int) -> int:
        return 0 if self.cut_at is None or t < self.cut_at else 1


@dataclass(frozen=True)
class QA:
    """A question about a clip, its one-word answer and the words a multiple choice draws from.

    ``about``: indices (into the clip's sprites) of the objects the question is about, known by
    construction (a count is about every object): where the answer is to be seen.
    """

    question: str
    answer: str
    candidates: tuple[str, ...]
    about: tuple[int, ...] = ()


@dataclass(frozen=True)
class Item:
    """One benchmark item: a clip, the prompt the model gets and the expected answer.

    Attributes:
        split, index, seed: where it comes from (``seed = SPLITS[split] + index``).
        qtype: one of :data:`QUESTION_TYPES`.
        form: ``"short"`` (answer one word) or ``"choice"`` (answer the option and its letter).
        prompt: the user's text (question plus the answer instruction).
        answer: the expected answer, what is scored (a word, or a letter for ``choice``).
        reply: the reply a perfect model writes (the word, or ``"red (B)"`` for ``choice``).
        word: the one-word answer behind a letter (equal to ``answer`` for ``short``).
        options: the listed options of a ``choice`` item, else empty.
        clip: the scene, for rendering and for tests that re-derive the answer.
        questions: every question this clip answers (training asks them all).
        asked: which of ``questions`` the prompt asks (its index).
    """

    split: str
    index: int
    seed: int
    qtype: str
    form: str
    prompt: str
    answer: str
    reply: str
    word: str
    options: tuple[str, ...]
    clip: ClipSpec = field(repr=False)
    questions: tuple[QA, ...] = field(repr=False)
    asked: int = field(repr=False)

    @property
    def item_id(self) -> str:
        return f"{self.split}-{self.index:06d}"

    @property
    def chance(self) -> float:
        """The accuracy of a uniform guess among the answers this question allows: its listed options, or its candidate words."""
        if self.options:
            return 1.0 / len(self.options)
        return 1.0 / len(self.questions[self.asked].candidates)


# --------------------------------------------------------------------------- scenes


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(list(key)))


def _size(rng: np.random.Generator) -> float:
    return float(rng.uniform(*_SIZE_RANGE))


def _cell_corner(rng: np.random.Generator, cell: int, size: float) -> tuple[float, float]:
    """A random top-left corner that keeps a ``size`` box inside grid cell ``cell`` (0..8)."""
    row, col = divmod(cell, 3)
    slack = _CELL - size
    return (row * _CELL + float(rng.uniform(0, slack)), col * _CELL + float(rng.uniform(0, slack)))


def _distinct(rng: np.random.Generator, words: tuple[str, ...] | list[str], n: int) -> list[str]:
    return [words[i] for i in rng.permutation(len(words))[:n]]


def _attribute_qas(sprites: list[Sprite]) -> list[QA]:
    qas = []
    for i, s in enumerate(sprites):
        qas.append(QA(f"What colour is the {s.shape}?", s.colour, tuple(COLOURS), (i,)))
        qas.append(QA(f"What shape is the {s.colour} object?", s.shape, SHAPES, (i,)))
    return qas


def _scene_objects(rng: np.random.Generator, n: int, drift: float) -> list[Sprite]:
    """``n`` objects of distinct colours and shapes in distinct cells, each drifting up to ``drift`` px."""
    colours, shapes = _distinct(rng, tuple(COLOURS), n), _distinct(rng, SHAPES, n)
    cells = rng.permutation(9)[:n]
    sprites = []
    for colour, shape, cell in zip(colours, shapes, cells):
        size = _size(rng) - drift
        start = _cell_corner(rng, int(cell), size + drift)
        step = rng.uniform(0.0, 1.0, size=2) * drift  # stays in the cell: the corner left ``drift`` px of room
        end = (start[0] + float(step[0]), start[1] + float(step[1]))
        sprites.append(Sprite(shape, colour, size, start, end))
    return sprites


def _attribute(rng: np.random.Generator) -> tuple[list[Sprite], int | None, list[QA]]:
    sprites = _scene_objects(rng, int(rng.integers(1, 4)), drift=6.0)
    return sprites, None, _attribute_qas(sprites)


def _static(rng: np.random.Generator) -> tuple[list[Sprite], int | None, list[QA]]:
    sprites = _scene_objects(rng, int(rng.integers(1, 3)), drift=0.0)
    return sprites, None, _attribute_qas(sprites)


def _motion(rng: np.random.Generator) -> tuple[list[Sprite], int | None, list[QA]]:
    direction = DIRECTIONS[int(rng.integers(0, 4))]
    colour, other_colour = _distinct(rng, tuple(COLOURS), 2)
    shape, other_shape = _distinct(rng, SHAPES, 2)
    size = _size(rng)
    dy, dx = DIR_VECTORS[direction]
    lane, other_lane = (int(v) for v in rng.permutation(3)[:2])  # row (horizontal motion) or column
    travel = float(rng.uniform(0.45, 0.6)) * FRAME_SIZE
    along = float(rng.uniform(0, FRAME_SIZE - size - travel))  # start of the path on its axis
    across = lane * _CELL + float(rng.uniform(0, _CELL - size))
    begin = along if (dy > 0 or dx > 0) else along + travel
    finish = begin + travel * (dy + dx)
    if dx != 0:
        start, end = (across, begin), (across, finish)
    else:
        start, end = (begin, across), (finish, across)
    mover = Sprite(shape, colour, size, start, end)
    sprites = [mover]
    if rng.random() < 0.5:  # a static distractor in another lane
        osize = _size(rng)
        cell_along = int(rng.integers(0, 3))
        cell = other_lane * 3 + cell_along if dx != 0 else cell_along * 3 + other_lane
        corner = _cell_corner(rng, cell, osize)
        sprites.append(Sprite(other_shape, other_colour, osize, corner, corner))
    qa = QA(f"Which way does the {colour} {shape} move?", direction, DIRECTIONS, (0,))
    return sprites, None, [qa]


def _count(rng: np.random.Generator) -> tuple[list[Sprite], int | None, list[QA]]:
    n = int(rng.integers(1, 5))
    cells = rng.permutation(9)[:n]
    sprites = []
    for cell in cells:
        size = _size(rng)
        corner = _cell_corner(rng, int(cell), size)
        shape = SHAPES[int(rng.integers(0, len(SHAPES)))]
        colour = tuple(COLOURS)[int(rng.integers(0, len(COLOURS)))]
        sprites.append(Sprite(shape, colour, size, corner, corner))
    return sprites, None, [QA("How many shapes are there?", str(n), COUNTS, tuple(range(n)))]


def _sampled() -> np.ndarray:
    return sample_frame_indices(SOURCE_FRAMES, NUM_FRAMES)  # (NUM_FRAMES,) source index of each sampled frame


def _appear(rng: np.random.Generator) -> tuple[list[Sprite], int | None, list[QA]]:
    (keep, target) = _scene_objects(rng, 2, drift=0.0)
    change = CHANGES[int(rng.integers(0, 2))]
    # The change happens between two sampled frames, with at least two sampled frames on each side.
    k = int(rng.integers(2, NUM_FRAMES - 1))  # first sampled frame of the second part
    switch = int(_sampled()[k])
    frames = (switch, SOURCE_FRAMES - 1) if change == "appear" else (0, switch - 1)
    target = Sprite(target.shape, target.colour, target.size, target.start, target.end, frames=frames)
    qa = QA(f"Does the {target.colour} {target.shape} appear or disappear?", change, CHANGES, (1,))
    return [keep, target], None, [qa]


def _scene_cut(rng: np.random.Generator) -> tuple[list[Sprite], int | None, list[QA]]:
    colours, shapes = _distinct(rng, tuple(COLOURS), 2), _distinct(rng, SHAPES, 2)
    k = int(rng.integers(2, NUM_FRAMES - 1))
    cut = int(_sampled()[k])
    sprites = []
    for scene in (0, 1):
        size = _size(rng)
        corner = _cell_corner(rng, int(rng.integers(0, 9)), size)
        frames = (0, cut - 1) if scene == 0 else (cut, SOURCE_FRAMES - 1)
        sprites.append(Sprite(shapes[scene], colours[scene], size, corner, corner, frames=frames, scene=scene))
    qas = []
    for scene, when in ((0, "before"), (1, "after")):
        qas.append(QA(f"What colour is the shape {when} the scene cut?", colours[scene], tuple(COLOURS), (scene,)))
        qas.append(QA(f"What shape is shown {when} the scene cut?", shapes[scene], SHAPES, (scene,)))
    return sprites, cut, qas


def _short_event(rng: np.random.Generator) -> tuple[list[Sprite], int | None, list[QA]]:
    (keep, flash) = _scene_objects(rng, 2, drift=0.0)
    sampled = _sampled()
    k = int(rng.integers(1, NUM_FRAMES - 1))  # the one sampled frame that shows the event
    # Visible from just after the previous sampled frame to just before the next one.
    frames = (int(sampled[k - 1]) + 1, int(sampled[k + 1]) - 1)
    flash = Sprite(flash.shape, flash.colour, flash.size, flash.start, flash.end, frames=frames)
    qas = [
        QA("What colour is the object that flashes briefly?", flash.colour, tuple(COLOURS), (1,)),
        QA("What shape flashes briefly?", flash.shape, SHAPES, (1,)),
    ]
    return [keep, flash], None, qas


SceneBuilder = Callable[[np.random.Generator], tuple[list[Sprite], "int | None", list[QA]]]
SCENES: dict[str, SceneBuilder] = {
    "attribute": _attribute,
    "motion": _motion,
    "count": _count,
    "appear": _appear,
    "scene_cut": _scene_cut,
    "short_event": _short_event,
    "static": _static,
}


# ---------------------------------------------------------------------------- items


def _check_split(split: object) -> str:
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose one of {list(SPLITS)}.")
    return str(split)


def _check_index(index: object) -> int:
    if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not 0 <= index < SPLIT_SIZE:
        raise InputError(f"item index must be an integer in 0..{SPLIT_SIZE - 1}, got {index!r}.")
    return int(index)


class Posed(NamedTuple):
    """A question put in one form: the prompt, the answer scored, the full reply expected, the listed options."""

    prompt: str
    answer: str
    reply: str
    options: tuple[str, ...]


CHOICE_INSTRUCTION = "Answer with the option and its letter."


def choice_reply(option: str, letter: str) -> str:
    """The reply to a multiple choice: the option, then its letter in brackets (``"red (B)"``)."""
    return f"{option} ({letter})"


def pose(qa: QA, form: str, rng: np.random.Generator | None) -> Posed:
    """``qa`` asked in ``form`` (``rng`` orders a choice's options)."""
    if form == "short":
        return Posed(f"{qa.question} Answer with one word.", qa.answer, qa.answer, ())
    if form != "choice":
        raise InputError(f"unknown question form {form!r}; choose one of {list(FORMS)}.")
    others = [c for c in qa.candidates if c != qa.answer]
    picked = [qa.answer] + [others[i] for i in rng.permutation(len(others))[: len(LETTERS) - 1]]
    options = tuple(picked[i] for i in rng.permutation(len(picked)))
    listed = " ".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(options))
    letter = LETTERS[options.index(qa.answer)]
    return Posed(f"{qa.question} Options: {listed}. {CHOICE_INSTRUCTION}", letter, choice_reply(qa.answer, letter), options)


def make_item(split: str, index: int) -> Item:
    """The item ``index`` of ``split``: a pure function of the two."""
    split, index = _check_split(split), _check_index(index)
    seed = SPLITS[split] + index
    qtype = QUESTION_TYPES[index % len(QUESTION_TYPES)]
    rng = _rng(seed)
    sprites, cut, qas = SCENES[qtype](rng)
    scenes = 1 if cut is None else 2
    clip = ClipSpec(tuple(int(s) for s in rng.integers(0, 2**31, size=scenes)), cut, tuple(sprites))
    asked = int(rng.integers(0, len(qas)))
    qa = qas[asked]
    form = "choice" if rng.random() < CHOICE_SHARE else "short"
    posed = pose(qa, form, rng)
    return Item(split, index, seed, qtype, form, posed.prompt, posed.answer, posed.reply, qa.answer, posed.options, clip, tuple(qas), asked)


def make_items(split: str, count: int, start: int = 0) -> list[Item]:
    """Items ``start .. start + count - 1`` of ``split`` (every type equally often for a multiple of 7)."""
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 1:
        raise InputError(f"count must be a positive integer, got {count!r}.")
    return [make_item(split, i) for i in range(start, start + int(count))]


# ------------------------------------------------------------------------ rendering


def _grey_background(seed: int) -> np.ndarray:
    """The shared texture, desaturated and kept mid-grey so no palette colour appears in it. (H, W, 3) float32."""
    texture = background_texture(_rng(seed), FRAME_SIZE, FRAME_SIZE)  # (H, W, 3)
    grey = texture.mean(axis=-1, keepdims=True)  # (H, W, 1)
    return 0.15 * texture + 0.85 * (0.5 * grey + 0.5 * 128.0)


def render_frames(clip: ClipSpec) -> np.ndarray:
    """All source frames of a clip: ``(SOURCE_FRAMES, H, W, 3)`` uint8 RGB."""
    backgrounds = [_grey_background(s) for s in clip.background_seeds]
    yy, xx = np.mgrid[0:FRAME_SIZE, 0:FRAME_SIZE].astype(np.float32)  # (H, W)
    out = np.empty((SOURCE_FRAMES, FRAME_SIZE, FRAME_SIZE, 3), dtype=np.float32)
    for t in range(SOURCE_FRAMES):
        scene = clip.scene_of(t)
        frame = backgrounds[scene].copy()  # (H, W, 3)
        for sprite in clip.sprites:
            if sprite.scene == scene and sprite.visible(t):
                y0, x0 = sprite.corner(t)
                frame[shape_mask(sprite.shape, yy - y0, xx - x0, sprite.size)] = COLOURS[sprite.colour]
        out[t] = frame
    return np.rint(np.clip(out, 0, 255)).astype(np.uint8)


def write_clip(item: Item, folder: str | os.PathLike) -> Path:
    """Encode the item's clip to ``folder/<item_id>.mp4`` (H.264, as users' videos are) and return the path."""
    return write_video(Path(folder) / f"{item.item_id}.mp4", render_frames(item.clip), fps=FPS)


# -------------------------------------------------------------------------- scoring


def normalise_answer(text: str) -> str:
    """Lower case, no surrounding spaces, brackets or final full stop: ``" (B)."`` -> ``"b"``."""
    return text.strip().lower().rstrip(".").strip().strip("()").strip()


# The last bracketed letter of a reply: the letter a multiple-choice reply picks ("red (B)" -> "B").
_PICKED_LETTER = re.compile(r"\(([A-Za-z])\)")


def is_correct(item: Item, answer: str) -> bool:
    """Whether a model's answer to ``item`` is right (exact match after :func:`normalise_answer`).

    A multiple choice is scored on the letter it picks: the last bracketed letter of the reply
    (``"red (B)"``), else the whole reply (``"B"``). The option written before it is not scored:
    the letter is the answer, as in any multiple-choice benchmark.
    """
    if item.form == "choice":
        picked = _PICKED_LETTER.findall(answer)
        if picked:
            answer = picked[-1]
    return normalise_answer(answer) == normalise_answer(item.answer)


__all__ = [
    "CHOICE_INSTRUCTION",
    "CHOICE_SHARE",
    "COLOURS",
    "ClipSpec",
    "DIRECTIONS",
    "DIR_VECTORS",
    "FPS",
    "FRAME_SIZE",
    "Item",
    "LETTERS",
    "NUM_FRAMES",
    "Posed",
    "QA",
    "QUESTION_TYPES",
    "SCENES",
    "SOURCE_FRAMES",
    "SPLITS",
    "Sprite",
    "choice_reply",
    "is_correct",
    "make_item",
    "make_items",
    "normalise_answer",
    "pose",
    "render_frames",
    "write_clip",
]
