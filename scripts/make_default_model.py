#!/usr/bin/env python
"""Create the tiny LLaVA-OneVision checkpoint that ``holitom/assets/default_model/`` is trained from.

The toolkit needs a model that works on a fresh machine without a download: the
tests, ``holitom demo`` and the export smoke tests all run on it. This script
builds one deterministically, in the llava-hf layout that real checkpoints use:

- a byte-level BPE tokenizer trained with ``tokenizers`` on a built-in English
  corpus (generated below from fixed templates), with Qwen2's special tokens and
  LLaVA's ``<image>`` / ``<video>`` placeholders, and a ChatML chat template;
- a ``LlavaOnevisionConfig`` with the real vision geometry (SigLIP, 384 px,
  patch 14 -> 27x27 grid) but tiny widths and depths;
- ``model.safetensors`` written by transformers' own
  ``LlavaOnevisionForConditionalGeneration.save_pretrained``, so key names are
  exactly what transformers writes and reads;
- the processor configs written by ``LlavaOnevisionProcessor.save_pretrained``.

Weights: the model is built by transformers (which fixes names, shapes and the
on-disk layout) and every tensor is then overwritten from a numpy ``PCG64``
generator seeded from the tensor's name. Torch's own initialisers are not used
because their random streams (and transformers' choice of initialiser per
module) may change between releases; numpy's ``Generator.standard_normal`` is
stable, so the tensor VALUES depend only on this script. The file BYTES also
depend on safetensors' serialisation, which has been stable but is not
promised; ``tests/test_default_model.py`` therefore compares tensors and the
vocabulary, not bytes.

The shipped default is this checkpoint TRAINED by ``scripts/train_default_model.py``
(its ``holitom_default_model.json`` records the training): this script writes
the starting point, the same files with the initial weights.

Usage::

    python scripts/make_default_model.py --out DIR  # the starting checkpoint (the trainer and tests build it this way)
    python scripts/make_default_model.py --replace-trained  # back to the untrained weights in holitom/assets/default_model/

This script needs torchvision (the transformers image/video processor classes
require it to be constructed); the toolkit itself does not.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import shutil
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

# Written next to the weights (the tests compare files against a regenerated copy only when its versions match).
from holitom.default_model import PROVENANCE_FILE, training_record

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "holitom" / "assets" / "default_model"

SEED = 20240611
TRAINED_VOCAB_SIZE = 1275  # + 5 special tokens = 1280 ids in all
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]

# Qwen2's pre-tokenizer regex (contractions, letter runs, single digits, punctuation
# runs, newlines, whitespace). Using the same split keeps our tokenizer behaving
# like Qwen2's on whitespace and digits, which prompt-construction code relies on.
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# ChatML, as Qwen2 uses it (default system prompt when none is given). It also
# accepts the list-of-parts message content that transformers processors pass
# ({"type": "video"} / {"type": "image"} / {"type": "text", "text": ...}), which
# renders as the placeholder then a newline then the text, the layout of the
# original LLaVA-OneVision "qwen_1_5" conversation template.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<image>\\n' -}}"
    "{%- elif part['type'] == 'video' -%}{{- '<video>\\n' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

# Architecture: the real LLaVA-OneVision geometry (SigLIP at 384 px, patch 14,
# 27x27 = 729 patches per frame, pooled to 14x14 = 196 video tokens per frame),
# with tiny widths and depths so the float32 checkpoint stays a few MB.
VISION = dict(
    hidden_size=64,
    intermediate_size=256,
    num_hidden_layers=3,
    num_attention_heads=4,
    image_size=384,
    patch_size=14,
    num_channels=3,
    hidden_act="gelu_pytorch_tanh",
    layer_norm_eps=1e-6,
    vision_use_head=False,
)
TEXT = dict(
    hidden_size=128,
    intermediate_size=344,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    hidden_act="silu",
    max_position_embeddings=8192,
    rms_norm_eps=1e-6,
    rope_theta=1000000.0,
    tie_word_embeddings=False,
    use_sliding_window=False,
)
# Random weights (see init_std): the decoder's initializer_range, small biases,
# and query/key scales chosen so attention logits have a standard deviation
# near 2, i.e. peaked attention as in trained models. With normalised inputs
# of width d (unit variance per channel), q and k entries have variance
# d * std^2, so a logit q.k / sqrt(head_dim) has std ~ d * std^2:
# vision 64 * 0.18^2 = 2.1, text 128 * 0.125^2 = 2.0.
INIT_STD = 0.02
BIAS_STD = 0.01
QK_STD = {"vision": 0.18, "text": 0.125}
# Parameter-name prefixes (transformers 5 in-memory names) of the two parts
# that get variance-preserving weights.
VISION_PREFIXES = ("model.vision_tower.",)
PROJECTOR_PREFIXES = ("model.multi_modal_projector.",)

IMAGE_MEAN = [0.5, 0.5, 0.5]  # SigLIP normalisation, as the llava-hf checkpoints ship it
IMAGE_STD = [0.5, 0.5, 0.5]


# --------------------------------------------------------------------------- corpus


def build_corpus() -> list[str]:
    """A deterministic English corpus about videos, scenes, colours and shapes.

    Built from fixed word lists and sentence templates with a seeded
    ``random.Random``, so it is identical on every machine (``random.Random(int)``
    with ``choice``/``randint``/``shuffle`` is stable across Python versions).
    The word lists are broad enough (about 600 distinct words, each used many
    times) for the BPE trainer to fill the requested vocabulary with whole
    words and common pieces rather than stopping early.
    """
    colors = "red green blue yellow orange purple white black gray pink brown cyan golden silver dark light".split()
    shapes = "circle square triangle rectangle ball box star disk line block cube sphere cone ring arrow dot".split()
    animals = "dog cat bird horse cow sheep duck fish rabbit mouse lion tiger bear monkey elephant snake".split()
    people = "man woman child boy girl person player driver cook teacher student worker dancer singer".split()
    things = (
        "car bicycle truck bus train boat plane robot chair table door window lamp phone cup bottle book bag "
        "hat shirt shoe ball kite umbrella clock camera screen computer keyboard knife plate bowl apple banana "
        "bread cake flower tree leaf rock wall fence bridge tower house building road river lake mountain cloud"
    ).split()
    places = (
        "kitchen street park room beach forest office garden road field station market school library "
        "museum stadium hospital airport restaurant bedroom bathroom classroom playground farm city village"
    ).split()
    verbs = [  # (present, past, gerund)
        ("move", "moved", "moving"), ("slide", "slid", "sliding"), ("roll", "rolled", "rolling"),
        ("walk", "walked", "walking"), ("run", "ran", "running"), ("jump", "jumped", "jumping"),
        ("turn", "turned", "turning"), ("drift", "drifted", "drifting"), ("bounce", "bounced", "bouncing"),
        ("fly", "flew", "flying"), ("open", "opened", "opening"), ("close", "closed", "closing"),
        ("pick", "picked", "picking"), ("throw", "threw", "throwing"), ("catch", "caught", "catching"),
        ("push", "pushed", "pushing"), ("pull", "pulled", "pulling"), ("cut", "cut", "cutting"),
        ("pour", "poured", "pouring"), ("wash", "washed", "washing"), ("cook", "cooked", "cooking"),
        ("eat", "ate", "eating"), ("drink", "drank", "drinking"), ("read", "read", "reading"),
        ("write", "wrote", "writing"), ("play", "played", "playing"), ("dance", "danced", "dancing"),
        ("sing", "sang", "singing"), ("climb", "climbed", "climbing"), ("swim", "swam", "swimming"),
        ("ride", "rode", "riding"), ("drive", "drove", "driving"), ("carry", "carried", "carrying"),
        ("hold", "held", "holding"), ("place", "placed", "placing"), ("stop", "stopped", "stopping"),
        ("start", "started", "starting"), ("appear", "appeared", "appearing"), ("vanish", "vanished", "vanishing"),
        ("enter", "entered", "entering"), ("leave", "left", "leaving"), ("follow", "followed", "following"),
        ("chase", "chased", "chasing"), ("wave", "waved", "waving"), ("point", "pointed", "pointing"),
        ("sit", "sat", "sitting"), ("stand", "stood", "standing"), ("fall", "fell", "falling"),
        ("rise", "rose", "rising"), ("spin", "spun", "spinning"), ("shake", "shook", "shaking"),
    ]
    adjectives = (
        "small large bright dark fast slow round thin tall short wide narrow heavy light empty full old new "
        "clean dirty wet dry warm cold soft hard smooth rough quiet loud busy calm happy sad sharp blurry"
    ).split()
    adverbs = "quickly slowly suddenly gently carefully steadily smoothly briefly again still".split()
    directions = [
        "left", "right", "up", "down", "forward", "backward", "across the frame", "toward the camera",
        "away from the camera", "around the center", "along the edge", "behind the table", "into the scene",
        "out of the scene", "over the fence", "under the bridge", "through the door", "past the window",
    ]
    times = [
        "at the start", "in the middle", "near the end", "after a few seconds", "before the cut", "at the end",
        "during the first half", "in the second half", "right after the cut", "for the whole clip",
        "in the first frame", "in the last frame", "every few frames", "later in the video",
    ]
    weather = "sunny rainy cloudy snowy windy foggy stormy clear".split()
    numbers = (
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty thirty forty fifty hundred thousand"
    ).split()
    camera = [
        "The camera pans slowly to the left.", "The camera zooms in on the object.",
        "The camera stays still for the whole clip.", "The shot is taken from above.",
        "The video is filmed with a handheld camera.", "The lighting changes after the cut.",
        "The picture becomes blurry when the object moves quickly.", "The scene is recorded at night.",
        "The frame rate is thirty frames per second.", "The resolution is low and the colors are faded.",
        "A caption appears at the bottom of the screen.", "The background is a plain wall.",
    ]
    questions = [
        "What is happening in this video?", "Describe the video in detail.",
        "How many objects move in the video?", "What color is the moving shape?",
        "Where does the scene take place?", "Does the camera move during the clip?",
        "What happens after the scene cut?", "Which object appears first?",
        "Summarize the video in one sentence.", "Is there a person in the video?",
        "What is the main action in the clip?", "Answer with a single word: what shape is shown?",
        "What is the weather like in the video?", "Who is holding the object?",
        "Why does the person stop?", "When does the animal appear?",
        "Which direction does the car move?", "What does the woman do after she opens the door?",
    ]
    fixed = [
        "The video shows a static textured background with several moving shapes.",
        "A scene cut happens halfway through the clip and the background changes.",
        "The camera does not move; only the objects change position between frames.",
        "Each frame is resized to three hundred eighty four pixels before encoding.",
        "Token merging keeps the important visual tokens and merges the redundant ones.",
        "Static regions of a video repeat across frames and can be merged in time.",
        "The assistant answers questions about the video in short, clear sentences.",
        "You are a helpful assistant.",
        "The user asks a question, the system sets the role, and the assistant answers the user.",
        "The numbers 0 1 2 3 4 5 6 7 8 9 appear on the screen.",
        "There are 3 shapes, 2 of them move and 1 stays still.",
        "The clip lasts 4 seconds at 8 frames per second, 32 frames in total.",
        "Yes. No. Maybe. I am not sure. It is a circle. It is a square.",
        "I cannot tell from the video. The answer is (A). The answer is (B). The answer is (C). The answer is (D).",
    ]
    rng = random.Random(SEED)
    pick = rng.choice
    actors = animals + people
    sentences: list[str] = fixed + camera + questions
    for color, shape in itertools.product(colors, shapes):
        present, past, gerund = pick(verbs)
        sentences.append(f"A {pick(adjectives)} {color} {shape} {present}s {pick(directions)} {pick(times)}.")
        sentences.append(f"The {shape} is {color} and it stays in the {pick(['center', 'corner', 'top', 'bottom'])}.")
        sentences.append(f"We see the {color} {shape} {gerund} {pick(adverbs)}.")
    for actor, place in itertools.product(actors, places):
        present, past, gerund = pick(verbs)
        thing = pick(things)
        sentences.append(f"A {pick(adjectives)} {actor} {past} the {thing} in the {place} {pick(times)}.")
        sentences.append(f"In the {place}, the {actor} is {gerund} {pick(adverbs)} {pick(directions)}.")
        sentences.append(f"On a {pick(weather)} day the {actor} {present}s near the {pick(colors)} {pick(things)}.")
    for thing in things:
        for _ in range(3):
            sentences.append(
                f"There {pick(['is one', 'are two', 'are three', 'are several', 'are many'])} {thing}s "
                f"in the {pick(places)}, and one of them is {pick(colors)}."
            )
    for word in numbers:
        sentences.append(f"I count {word} {pick(things)}s and {pick(numbers)} {pick(animals)}s in the {pick(places)}.")
        sentences.append(f"After {word} seconds the {pick(people)} {pick(verbs)[1]} the {pick(things)}.")
    for i in range(600):
        n = rng.randint(1, 12)
        color, shape = pick(colors), pick(shapes)
        present, past, gerund = pick(verbs)
        sentences.append(
            f"Question: {pick(questions)} Answer: There {'is' if n == 1 else 'are'} {n} {color} "
            f"{shape}{'' if n == 1 else 's'} {pick(times)}, and the {pick(actors)} keeps {gerund} {pick(directions)}."
        )
        if i % 3 == 0:
            sentences.append(
                f"Frame {rng.randint(0, 999)} shows the {pick(places)} with a {pick(adjectives)} {color} {shape}; "
                f"the {pick(actors)} {past} it {pick(adverbs)}."
            )
    rng.shuffle(sentences)
    return sentences


# ------------------------------------------------------------------------ tokenizer


def train_tokenizer():
    """Train the byte-level BPE and return a ``tokenizers.Tokenizer``.

    The pipeline matches the one transformers' ``Qwen2Tokenizer`` builds (NFC,
    Qwen2 regex split, byte-level without prefix space, byte-level decoder), so
    loading through ``AutoTokenizer`` tokenises exactly like
    ``tokenizers.Tokenizer.from_file`` whichever path transformers takes.
    Special tokens are added after training so they take the last ids, as in
    Qwen2 (ordinary vocabulary first).
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TRAINED_VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        # All 256 byte symbols, so any UTF-8 text can be encoded (no unknown token).
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(build_corpus(), trainer=trainer)
    if tok.get_vocab_size() != TRAINED_VOCAB_SIZE:
        raise RuntimeError(
            f"the BPE trainer produced {tok.get_vocab_size()} tokens, expected {TRAINED_VOCAB_SIZE}; "
            "the corpus is too small for the requested vocabulary: lower TRAINED_VOCAB_SIZE"
        )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tok


def make_hf_tokenizer(tok):
    """Wrap the trained tokenizer in transformers' ``Qwen2Tokenizer`` (ChatML template, eos/pad).

    ``tokenizer_class`` is then "Qwen2Tokenizer", as in the llava-hf checkpoints,
    so ``AutoTokenizer`` picks the same class for our model and for real ones.
    Built from the tokenizer file, the class keeps our pipeline (same as its own).
    """
    from transformers import Qwen2Tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        tok.save(str(path))
        hf_tok = Qwen2Tokenizer(
            tokenizer_file=str(path),
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            unk_token=None,
            bos_token=None,
            # Exposes tokenizer.image_token(_id) / video_token(_id), which
            # LlavaOnevisionProcessor reads instead of its hard-coded defaults.
            extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
            chat_template=CHAT_TEMPLATE,
            model_max_length=TEXT["max_position_embeddings"],
            clean_up_tokenization_spaces=False,
            split_special_tokens=False,
        )
    return hf_tok


# ---------------------------------------------------------------------------- model


def make_config(vocab_size: int, image_token_id: int, video_token_id: int):
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    vision = SiglipVisionConfig(**VISION)
    text = Qwen2Config(vocab_size=vocab_size, initializer_range=INIT_STD, **TEXT)
    return LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        video_token_index=video_token_id,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9",
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
        tie_word_embeddings=TEXT["tie_word_embeddings"],
        # Read by holitom (LLaVA-OneVision and LLaVA-Video share transformers'
        # model class but pool and place newlines differently); transformers
        # keeps unknown config keys as attributes and ignores them.
        holitom_variant="onevision",
    )


def _tensor_rng(name: str) -> np.random.Generator:
    # crc32 (not hash()) so the seed does not depend on PYTHONHASHSEED.
    return np.random.Generator(np.random.PCG64([SEED, zlib.crc32(name.encode("utf-8"))]))


def _fan_in(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape[1:]))  # (out, in) linear or (out, in, kh, kw) conv


def init_std(name: str, shape: tuple[int, ...]) -> float:
    """Standard deviation of the normal a weight matrix is drawn from.

    Follows the towers' own recipes where they keep the model well conditioned:
    the vision tower and projector are variance preserving (1/sqrt(fan_in),
    LeCun, as SigLIP's initialisation), the Qwen2 decoder uses its
    ``initializer_range`` (0.02). Query/key projections are the exception
    (:data:`QK_STD`): at these tiny widths the usual values make the softmax
    uniform to ~1e-5, and HoliTom's attention scores (top-k over tokens)
    become near-ties that flip between backends.
    """
    if ".q_proj." in name or ".k_proj." in name:
        return QK_STD["vision"] if name.startswith(VISION_PREFIXES) else QK_STD["text"]
    if name.endswith("position_embedding.weight"):
        return 1.0 / np.sqrt(shape[-1])  # SigLIP: normal(0, 1/sqrt(width))
    if name.startswith(VISION_PREFIXES + PROJECTOR_PREFIXES):
        return 1.0 / np.sqrt(_fan_in(shape))
    return INIT_STD


def deterministic_value(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The float32 value of one parameter: a pure function of its name and shape.

    Norm scales are ones; biases are small random values (not zeros), so model
    code that drops a bias fails parity tests instead of passing by luck; the
    newline embedding is N(0, 1/hidden) as LLaVA initialises it; every other
    tensor is N(0, :func:`init_std`^2).
    """
    rng = _tensor_rng(name)
    leaf = name.rsplit(".", 1)[-1]
    if "norm" in name and leaf == "weight":  # LayerNorm / RMSNorm scales
        return np.ones(shape, dtype=np.float32)
    if leaf == "bias":
        return (rng.standard_normal(shape) * BIAS_STD).astype(np.float32)
    if name.endswith("image_newline"):
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)
    return (rng.standard_normal(shape) * init_std(name, shape)).astype(np.float32)


def make_model(config):
    import torch
    from transformers import LlavaOnevisionForConditionalGeneration

    torch.manual_seed(SEED)  # transformers' own init runs first; everything is overwritten below
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    known = VISION_PREFIXES + PROJECTOR_PREFIXES + ("model.language_model.", "lm_head.", "model.image_newline")
    unknown = [n for n, _ in model.named_parameters() if not n.startswith(known)]
    if unknown:
        # init_std() keys on these names; a silent fallback would change the weights.
        raise RuntimeError(f"this transformers version names parameters differently ({unknown[:3]}...); update the prefixes in this script")
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(torch.from_numpy(deterministic_value(name, tuple(param.shape))))
    return model


def rewrite_in_hub_layout(path: Path) -> None:
    """Rename the SigLIP weights to the layout of the llava-hf checkpoints on the hub.

    transformers 5 flattens ``SiglipVisionModel`` and its ``save_pretrained``
    writes ``vision_tower.<rest>``, while every llava-hf LLaVA-OneVision /
    LLaVA-Video checkpoint (saved by transformers 4) has
    ``vision_tower.vision_model.<rest>``. transformers 5 loads both; the shipped
    model uses the hub's names so that loaders written against it (holitom's
    own model code) also read the real checkpoints. All other keys are already
    in the hub layout (``language_model.model.*``, ``language_model.lm_head.*``,
    ``multi_modal_projector.*``, ``image_newline``).
    """
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    renamed = {}
    for key, tensor in state.items():
        if key.startswith("vision_tower.") and not key.startswith("vision_tower.vision_model."):
            key = "vision_tower.vision_model." + key[len("vision_tower.") :]
        renamed[key] = tensor
    save_file(renamed, str(path), metadata={"format": "pt"})
    path.chmod(0o644)  # safetensors writes 0600; keep the package data world-readable


# ------------------------------------------------------------------------ processor


def make_processor(hf_tok):
    from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

    common = dict(
        size={"height": VISION["image_size"], "width": VISION["image_size"]},
        resample=3,  # PIL BICUBIC, as the llava-hf checkpoints ship it
        do_resize=True,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
        do_convert_rgb=True,
    )
    image_processor = LlavaOnevisionImageProcessor(**common, do_pad=True)
    video_processor = LlavaOnevisionVideoProcessor(**common)
    grid = VISION["image_size"] // VISION["patch_size"]
    return LlavaOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=hf_tok,
        video_processor=video_processor,
        num_image_tokens=grid * grid,
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE,
        vision_aspect_ratio="anyres_max_9",
    )


# ----------------------------------------------------------------------------- main


def build(out: Path, replace_trained: bool = False) -> None:
    """Write the whole checkpoint into ``out`` (replacing an earlier output of this script).

    A folder whose provenance records training (scripts/train_default_model.py
    wrote it, as it did the shipped default) is replaced only with
    ``replace_trained``: the initial weights would silently discard an hour of training.
    """
    import tokenizers
    import torch
    import transformers

    tok = train_tokenizer()
    hf_tok = make_hf_tokenizer(tok)
    vocab_size = len(hf_tok)
    image_id = hf_tok.convert_tokens_to_ids("<image>")
    video_id = hf_tok.convert_tokens_to_ids("<video>")

    config = make_config(vocab_size, image_id, video_id)
    model = make_model(config)
    processor = make_processor(hf_tok)

    if out.exists():
        # Only ever delete a previous output of this script, never a folder
        # someone pointed --out at by mistake.
        if any(out.iterdir()) and not (out / PROVENANCE_FILE).is_file():
            raise SystemExit(f"refusing to overwrite '{out}': it is not empty and holds no {PROVENANCE_FILE}; pick an empty --out")
        if not replace_trained and training_record(out) is not None:
            raise SystemExit(
                f"refusing to overwrite '{out}': it holds a trained checkpoint (see its {PROVENANCE_FILE}) and this script writes the "
                "initial, untrained weights; pick another --out, or pass --replace-trained to go back to them"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model.save_pretrained(out, safe_serialization=True)
    rewrite_in_hub_layout(out / "model.safetensors")
    processor.save_pretrained(out)

    # The generation config transformers writes carries no information for a
    # random model beyond eos/pad ids; keep it (loaders look for it) but with
    # our token ids so generate() stops at <|im_end|>.
    gen_path = out / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.exists() else {}
    gen.update({"eos_token_id": hf_tok.convert_tokens_to_ids("<|im_end|>"), "pad_token_id": hf_tok.pad_token_id})
    gen_path.write_text(json.dumps(gen, indent=2, sort_keys=True) + "\n")

    provenance = {
        "generator": "scripts/make_default_model.py",
        "seed": SEED,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "numpy": np.__version__,
        },
    }
    (out / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    parser.add_argument("--replace-trained", action="store_true", help="overwrite a trained checkpoint in --out (the shipped default is one) with the initial weights")
    args = parser.parse_args(argv)
    build(args.out, replace_trained=args.replace_trained)
    total = sum(p.stat().st_size for p in args.out.iterdir())
    for p in sorted(args.out.iterdir()):
        print(f"{p.stat().st_size:>10,d}  {p.name}")
    print(f"{total:>10,d}  total, in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
