"""scripts/train_default_model.py: packed questions compute exactly what separate prompts do; a few steps run end to end.

The training itself (an hour or more) does not run here. The tests run on the
script's starting point (the initial weights of scripts/make_default_model.py),
not on the shipped default model, which is a trained one.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from script_modules import load_script  # tests/ helper (tests/conftest.py puts it on sys.path)

from holitom.eval.videoqa import make_item, make_items, pose
from holitom.models.loading import load_llava
from holitom.models.pooling import pool_tokens


@pytest.fixture(scope="module")
def trainer():
    yield load_script("train_default_model", register=True)  # a render pool's workers find its functions by name
    sys.modules.pop("train_default_model", None)


@pytest.fixture(scope="module")
def start(tmp_path_factory) -> Path:
    """The checkpoint every run starts from: make_default_model's initial weights, tokenizer and config."""
    folder = tmp_path_factory.mktemp("start") / "model"
    load_script("make_default_model").build(folder)
    return folder


def test_packed_questions_match_separate_prefills(trainer, start):
    from transformers import AutoTokenizer

    model = load_llava(start)
    tokenizer = AutoTokenizer.from_pretrained(start)
    packer = trainer.Packer(tokenizer, model.config.video_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>"))
    hidden = torch.randn(3, 729, model.config.vision.hidden_size, generator=torch.Generator().manual_seed(0))  # (F, N, Dv)
    item = make_item("train", 0)
    rng = np.random.Generator(np.random.PCG64(0))
    posed = [pose(qa, form, rng) for qa in item.questions for form in ("short", "choice")]
    prefix, ids, targets = trainer.pack(packer, posed)
    with torch.no_grad():
        packed = trainer.forward_packed(model, hidden, prefix, ids, targets)  # (T, V)
        video = model.unmerged_video_tokens(pool_tokens(model.projector(hidden), 27, model.config.pooling))  # (Nv, D)
        offset = 0
        for question in posed:  # the oracle: each question alone through the model's own prefill
            before, after = packer.split_prompt(question.prompt)
            answer_ids = packer.answer_ids(question.reply)
            embeds = torch.cat((model.embed(torch.tensor([before]))[0], video, model.embed(torch.tensor([after + answer_ids[:-1]]))[0]))[None]
            logits, _ = model.prefill(embeds, torch.arange(embeds.shape[1])[None])  # (1, S, V)
            alone = logits[0, -len(answer_ids) :]  # the positions that predict the answer and the end token
            torch.testing.assert_close(packed[offset : offset + len(answer_ids)], alone, rtol=0, atol=1e-5)
            assert targets[targets >= 0][offset : offset + len(answer_ids)].tolist() == answer_ids
            offset += len(answer_ids)
    assert offset == packed.shape[0]


def test_a_few_training_steps_write_a_loadable_checkpoint(trainer, tmp_path, capsys, start):
    out = tmp_path / "model"
    assert trainer.main(["--out", str(out), "--train-clips", "7", "--val-clips", "7", "--steps", "3", "--eval-every", "2"]) == 0
    log = capsys.readouterr().out
    assert "step" in log and "final val accuracy" in log
    provenance = json.loads((out / "holitom_default_model.json").read_text())["training"]
    assert provenance["steps"] == 3 and 0.0 <= provenance["val_accuracy"] <= 1.0
    # Per form (one word, multiple choice): the overall accuracy is their mean weighted by the items of each form.
    forms = Counter(item.form for item in make_items("val", 7))
    per_form = provenance["val_accuracy_per_form"]
    assert set(per_form) == set(forms) and "by form:" in log
    assert sum(per_form[f] * n for f, n in forms.items()) / 7 == pytest.approx(provenance["val_accuracy"], abs=1e-3)
    trained = load_llava(out)
    initial = load_llava(start)  # same vision tower: it stays frozen
    for (name, a), (_, b) in zip(trained.named_parameters(), initial.named_parameters()):
        if name.startswith("vision."):
            assert torch.equal(a, b), name
    from transformers import LlavaOnevisionForConditionalGeneration

    _, info = LlavaOnevisionForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info


def test_frame_subsets_keep_every_answer_true(trainer):
    """The curriculum's frame subsets, checked against each question type's meaning (from the scene, not the visibility table)."""
    from holitom.eval.videoqa import NUM_FRAMES, SOURCE_FRAMES
    from holitom.video.sampling import sample_frame_indices

    sampled = sample_frame_indices(SOURCE_FRAMES, NUM_FRAMES)
    rng = np.random.Generator(np.random.PCG64(3))
    for index in range(35):
        item = make_item("train", index)
        for size in (2, 3, 4):
            keep = trainer.frame_subset(item.clip, rng, size).tolist()
            assert keep == sorted(set(keep)) and len(keep) in (size, NUM_FRAMES)
            times = [int(sampled[f]) for f in keep]
            if item.qtype == "scene_cut":  # both sides of the cut
                assert min(times) < item.clip.cut_at <= max(times)
            if item.qtype in ("appear", "short_event"):  # the changing object both shown and absent
                first, last = item.clip.sprites[1].frames
                shown = [first <= t <= last for t in times]
                assert any(shown) and not all(shown)
    item = make_item("train", 0)
    assert trainer.frame_subset(item.clip, rng, NUM_FRAMES).tolist() == list(range(NUM_FRAMES))


def test_training_the_tower_end_to_end_changes_it_and_keeps_the_layout(trainer, tmp_path, capsys, start):
    out = tmp_path / "model"
    argv = ["--out", str(out), "--train-clips", "2", "--val-clips", "2", "--steps", "2", "--eval-every", "1", "--train-tower", "--tower-lr-scale", "2"]
    argv += ["--types", "attribute,static", "--max-objects", "1", "--subset-sizes", "1", "--full-share", "0", "--eval-frames", "1", "--aux-balance"]
    assert trainer.main(argv) == 0
    log = capsys.readouterr().out
    assert "token_colour=" in log and "token_shape=" in log and "shape=" in log
    provenance = json.loads((out / "holitom_default_model.json").read_text())["training"]
    assert provenance["train_tower"] and provenance["aux_balance"] and provenance["types"] == ["attribute", "static"]
    trained, initial = load_llava(out), load_llava(start)
    changed = [name for (name, a), (_, b) in zip(trained.named_parameters(), initial.named_parameters()) if name.startswith("vision.") and not torch.equal(a, b)]
    assert "vision.patch_embedding.weight" in changed and len(changed) > 10
    from transformers import LlavaOnevisionForConditionalGeneration

    _, info = LlavaOnevisionForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info


def test_select_items_filters_in_split_order(trainer):
    items = trainer.select_items("val", 5, ("attribute", "static"), 1)
    assert [item.qtype in ("attribute", "static") and len(item.clip.sprites) == 1 for item in items] == [True] * 5
    indices = [item.index for item in items]
    assert indices == sorted(indices)
    skipped = [make_item("val", i) for i in range(indices[-1]) if i not in indices]  # every item passed over fails a filter
    assert all(item.qtype not in ("attribute", "static") or len(item.clip.sprites) > 1 for item in skipped)
    assert [item.item_id for item in trainer.select_items("val", 3)] == ["val-000000", "val-000001", "val-000002"]


def test_balanced_aux_loss_averages_object_and_background_means(trainer):
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))  # (N, C)
    labels = torch.tensor([0, 0, 0, 0, 2, 3])
    each = [float(torch.nn.functional.cross_entropy(logits[i : i + 1], labels[i : i + 1])) for i in range(6)]
    expected = 0.5 * (sum(each[:4]) / 4 + sum(each[4:]) / 2)
    assert float(trainer.aux_loss(logits, labels, True)) == pytest.approx(expected, rel=1e-6)
    assert float(trainer.aux_loss(logits, labels, False)) == pytest.approx(sum(each) / 6, rel=1e-6)
    assert float(trainer.aux_loss(logits, torch.zeros(6, dtype=torch.int64), True)) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, torch.zeros(6, dtype=torch.int64))), rel=1e-6)


def test_a_render_pool_gives_the_clips_and_labels_of_one_process(trainer, tmp_path, start):
    from holitom.video import VideoPreprocessor

    model = load_llava(start)
    items = trainer.select_items("train", 3)
    preprocessor = VideoPreprocessor.from_pretrained(start)
    alone, pooled = ((tmp_path / name) for name in ("alone", "pooled"))
    for folder in (alone, pooled):
        folder.mkdir()
    one = trainer.ClipFeatures(model, preprocessor, items, alone, "one", frozen=False, workers=1)
    two = trainer.ClipFeatures(model, preprocessor, items, pooled, "two", frozen=False, workers=2)
    for a, b, la, lb in zip(one.frames, two.frames, one.labels, two.labels):
        assert np.array_equal(a, b) and torch.equal(la, lb)
    assert len(two.frames) == 3 and not any(pooled.iterdir())  # every clip file removed after decoding


def test_minutes_sets_the_step_count_from_the_first_steps(trainer, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(trainer, "TIMING_STEPS", 2)
    out = tmp_path / "model"
    argv = ["--out", str(out), "--train-clips", "2", "--val-clips", "2", "--minutes", "0.0001", "--eval-every", "100"]
    argv += ["--types", "attribute", "--max-objects", "1", "--subset-sizes", "1", "--full-share", "0", "--eval-frames", "1"]
    assert trainer.main(argv) == 0
    assert "steps fit in" in capsys.readouterr().out
    provenance = json.loads((out / "holitom_default_model.json").read_text())["training"]
    assert provenance["steps"] == 3 and provenance["device"] == "cpu"  # at least one step past the timed ones


@pytest.mark.parametrize("argv, message", [(["--workers", "0"], "--workers must be at least 1"), (["--minutes", "0"], "--minutes must be positive"),
                                           (["--device", "bogus"], "--device 'bogus'"), (["--lookup-prompts", "-1"], "--lookup-prompts must be 0 or more"),
                                           (["--lookup-hint"], "--lookup-hint shapes the --lookup-prompts")])
def test_bad_run_options_are_refused_before_any_work(trainer, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        trainer.main(["--out", str(tmp_path / "model"), *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "model").exists()


def test_object_targets_cover_each_sprite_where_it_is_shown(trainer, start):
    """Per-object coverage and classes, re-derived from the clip: each sprite's pixels, shown frames, colour and shape."""
    import torch.nn.functional as F

    from holitom.eval.videoqa import COLOURS, FRAME_SIZE, NUM_FRAMES, SOURCE_FRAMES
    from holitom.video.sampling import sample_frame_indices
    from holitom.video.synthetic import SHAPES, shape_mask

    model = load_llava(start)
    grid = model.grid
    item = next(make_item("train", i) for i in range(100) if make_item("train", i).qtype == "appear")  # one sprite not always shown
    clip = item.clip
    cover, classes = trainer.object_targets(clip, grid)
    assert cover.shape == (len(clip.sprites), NUM_FRAMES, grid[0] * grid[1])
    yy, xx = np.mgrid[0:FRAME_SIZE, 0:FRAME_SIZE].astype(np.float32)
    hidden_somewhere = False
    for s, sprite in enumerate(clip.sprites):
        assert classes[s].tolist() == [list(COLOURS).index(sprite.colour), SHAPES.index(sprite.shape)]
        for f, t in enumerate(sample_frame_indices(SOURCE_FRAMES, NUM_FRAMES)):
            if sprite.scene != clip.scene_of(int(t)) or not sprite.visible(int(t)):
                assert float(cover[s, f].sum()) == 0.0
                hidden_somewhere = True
                continue
            y0, x0 = sprite.corner(int(t))
            mask = torch.from_numpy(shape_mask(sprite.shape, yy - y0, xx - x0, sprite.size).astype(np.float32))
            assert mask.any()
            expected = F.adaptive_avg_pool2d(mask[None, None], grid).flatten()
            torch.testing.assert_close(cover[s, f], expected)
    assert hidden_somewhere
    # the pooled object is the coverage-weighted mean of its frame's tokens, and the loss names its classes
    p = grid[0] * grid[1]
    keep = torch.tensor([0, 5])
    video = torch.randn(len(keep) * p, 8, generator=torch.Generator().manual_seed(0))  # (F'*P, D)
    head = torch.randn(20, 8, generator=torch.Generator().manual_seed(1))  # (V, D)
    rows = (torch.tensor([0, 1, 2, 3, 4, 5]), torch.tensor([0, 6, 7, 8]))  # background row first, as the script's
    pooled, shown = trainer.object_pool(video, cover[:, keep])
    assert shown.tolist() == (cover[:, keep].sum(-1) > 0).tolist() and pooled.shape == (int(shown.sum()), 8)
    for m, (s, f) in enumerate(shown.nonzero().tolist()):
        w = cover[s, keep[f]]
        torch.testing.assert_close(pooled[m], (w[:, None] * video[f * p : (f + 1) * p]).sum(0) / w.sum())
    logits = trainer.object_logits(pooled, rows, head)
    torch.testing.assert_close(logits[1], pooled @ head[6:9].T)
    labels = classes[:, None, :].expand(*shown.shape, 2)[shown]  # (M, 2)
    expected = sum(F.cross_entropy(lg, labels[:, i]) for i, lg in enumerate(logits))
    assert float(trainer.object_loss(logits, labels)) == pytest.approx(float(expected))
    # the script's own path (a shown object's labels are its sprite's), for both sources
    tower = torch.randn(len(keep), model.config.vision.patch_grid**2, model.config.vision.hidden_size)  # (F', 729, Dv)
    objects = (cover, trainer.object_targets(clip, (model.config.vision.patch_grid,) * 2)[0], classes)
    for source in ("hidden", "tower"):
        d = model.lm_head.weight.shape[1]
        got, got_labels = trainer.pooled_objects(model, source, torch.randn(len(keep) * p, d), tower, objects, keep)
        assert torch.equal(got_labels, labels) and got.shape == (labels.shape[0], d)


def test_object_target_runs_and_is_recorded(trainer, tmp_path, capsys):
    out = tmp_path / "model"
    argv = ["--out", str(out), "--train-clips", "2", "--val-clips", "2", "--steps", "2", "--eval-every", "1", "--train-tower", "--object-target", "2", "--object-source", "tower"]
    argv += ["--types", "attribute,static", "--max-objects", "1", "--subset-sizes", "1", "--full-share", "0", "--eval-frames", "1"]
    assert trainer.main(argv) == 0
    log = capsys.readouterr().out
    assert "object_shape=" in log and "object_colour=" in log
    provenance = json.loads((out / "holitom_default_model.json").read_text())["training"]
    assert provenance["object_target"] == 2.0 and provenance["object_source"] == "tower"


def test_edges_patch_init_puts_oriented_filters_in_place(trainer):
    conv = torch.nn.Conv2d(3, 64, kernel_size=14, stride=14)
    random = conv.weight[45:].clone()
    names = trainer.init_patch_edges(conv)
    assert len(names) == 39 and names[:3] == ["mean c0", "mean c1", "mean c2"]
    assert torch.equal(conv.weight[45:], random)  # the other channels keep their random weights
    flat = torch.full((1, 3, 14, 14), 0.3)
    with torch.no_grad():
        out = conv(flat)[0, :, 0, 0]
    torch.testing.assert_close(out[:3], torch.full((3,), 0.3))  # mean colour
    torch.testing.assert_close(out[3:39], torch.zeros(36), atol=1e-6, rtol=0)  # no edge on a flat patch
    vertical = torch.full((1, 3, 14, 14), -1.0)
    vertical[..., 7:] = 1.0  # a vertical edge through the patch's centre
    with torch.no_grad():
        out = conv(vertical)[0, :39, 0, 0].abs()
        turned = conv(vertical.transpose(2, 3))[0, :39, 0, 0].abs()  # the same edge, horizontal
    by_angle = {a: [i for i, n in enumerate(names) if n.startswith(f"edge {a} ")] for a in trainer.EDGE_ANGLES}
    assert out[by_angle[0]].max() > 0.9 and out[by_angle[90]].max() < 1e-6
    assert turned[by_angle[90]].max() > 0.9 and turned[by_angle[0]].max() < 1e-6
    assert out[by_angle[0]].max() > 1.5 * out[by_angle[45]].max()  # step filters are broadly tuned: 1.0 against 0.63
    diagonal = torch.where(torch.arange(14)[:, None] + torch.arange(14)[None, :] >= 14, 1.0, -1.0).expand(1, 3, 14, 14)
    with torch.no_grad():
        out = conv(diagonal)[0, :39, 0, 0].abs()
    assert out[by_angle[45]].max() > out[by_angle[0]].max() and out[by_angle[45]].max() > out[by_angle[135]].max()


def test_a_few_steps_run_with_the_edge_energy_patch_init_frozen(trainer, tmp_path, capsys, start):
    out = tmp_path / "model"
    argv = ["--out", str(out), "--train-clips", "2", "--val-clips", "2", "--steps", "2", "--eval-every", "1", "--train-tower", "--patch-init", "edges-energy", "--freeze-patch-init"]
    argv += ["--types", "attribute,static", "--max-objects", "1", "--subset-sizes", "1", "--full-share", "0", "--eval-frames", "1"]
    assert trainer.main(argv) == 0
    assert "final val accuracy" in capsys.readouterr().out
    provenance = json.loads((out / "holitom_default_model.json").read_text())["training"]
    assert provenance["patch_init"] == "edges-energy" and provenance["freeze_patch_init"]
    trained, initial = load_llava(out).vision.patch_embedding, load_llava(start).vision.patch_embedding
    trainer.init_patch_edges(initial)
    torch.testing.assert_close(trained.weight[:39], initial.weight[:39], rtol=1e-3, atol=1e-7)  # frozen (AdamW's decay only)
    assert trained.bias[:39].abs().max() == 0.0
    assert (trained.weight[51:] - initial.weight[51:]).abs().min() > 0  # the random channels learn


def test_edge_energy_init_rectifies_the_edges_into_quiet_channels(trainer, start):
    """The first layer writes |edge| (summed over RGB) into spare channels that nothing else writes at init."""
    tower = load_llava(start).vision
    names = trainer.init_patch_edges(tower.patch_embedding)
    energy = trainer.init_edge_energy(tower, names)
    assert energy == list(range(39, 51))
    by_group = dict(zip(sorted({n.rsplit(" ", 1)[0] for n in names if n.startswith("edge ")}), energy))  # "edge ANGLE OFFSET" -> its channel
    vertical = torch.zeros(1, 3, 384, 384)
    vertical[..., 14 * 5 + 7 :] = 0.8  # a vertical edge through the centres of patch column 5
    with torch.no_grad():
        up, _ = tower(vertical, with_scores=False)  # (1, 729, 64)
        down, _ = tower(-vertical, with_scores=False)  # the same edge, opposite contrast
        flat, _ = tower(torch.zeros(1, 3, 384, 384), with_scores=False)
    grid = lambda h, ch: h[0, :, ch].reshape(27, 27)  # noqa: E731
    vert, horiz = by_group["edge 0 +0"], by_group["edge 90 +0"]  # energy channels of vertical and horizontal edges
    assert flat[..., energy].abs().max() < 1e-3  # no edge, no energy (whatever the position)
    for h in (up, down):  # either contrast: the sign is gone (the size only up to LayerNorm's per-token scale)
        assert grid(h, vert)[:, 5].min() > 0.1 and grid(h, vert)[:, 5].min() > 10 * grid(h, horiz)[:, 5].abs().max()
        assert grid(h, vert)[:, 10].abs().max() < 1e-3  # away from the edge


def test_answer_attention_is_transformers_attention_at_the_answer_position(trainer, start):
    """Head 0 of the last layer at each block's answer position, against transformers' eager attention of each question alone."""
    from transformers import AutoTokenizer, LlavaOnevisionForConditionalGeneration

    model = load_llava(start)
    hf = LlavaOnevisionForConditionalGeneration.from_pretrained(start, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(start)
    packer = trainer.Packer(tokenizer, model.config.video_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>"))
    hidden = torch.randn(2, 729, model.config.vision.hidden_size, generator=torch.Generator().manual_seed(0))  # (F, N, Dv)
    item = make_item("train", 0)
    rng = np.random.Generator(np.random.PCG64(0))
    posed = [pose(qa, form, rng) for qa in item.questions[:3] for form in ("short", "choice")]
    prefix, ids, targets = trainer.pack(packer, posed)
    with torch.no_grad():
        _, attention = trainer.forward_packed(model, hidden, prefix, ids, targets, with_attention=True)  # (Q, S0)
        video = model.unmerged_video_tokens(pool_tokens(model.projector(hidden), 27, model.config.pooling))  # (Nv, D)
        assert attention.shape == (len(posed), len(prefix) + video.shape[0])
        for i, question in enumerate(posed):
            before, after = packer.split_prompt(question.prompt)
            embeds = torch.cat((model.embed(torch.tensor([before]))[0], video, model.embed(torch.tensor([after]))[0]))[None]  # up to the answer position
            out = hf.model.language_model(inputs_embeds=embeds, output_attentions=True)
            want = out.attentions[-1][0, 0, -1]  # (S,) last layer, head 0, the answer position
            torch.testing.assert_close(attention[i], want[: attention.shape[1]], rtol=0, atol=1e-6)


def test_attention_loss_is_the_log_of_the_mass_on_the_question_objects(trainer):
    cover = torch.zeros(2, 2, 4)  # (S, F', P): sprite 0 on tokens 0-1 of frame 0, sprite 1 not shown
    cover[0, 0, :2] = 1.0
    attention = torch.zeros(2, 3 + 8)  # (Q, S0): 3 prefix positions, then the 8 video tokens
    attention[0, 3] = 0.5  # block 0: half its attention on sprite 0's tokens
    attention[0, 0] = 0.5
    attention[1, 3:5] = 0.5  # block 1: all of it
    loss = trainer.attention_loss(attention, 3, cover, [(0,), (0,)])
    assert float(loss) == pytest.approx((np.log(2) + 0.0) / 2)
    # a block about an object that is not shown is left out
    assert float(trainer.attention_loss(attention, 3, cover, [(1,), (0,)])) == pytest.approx(0.0, abs=1e-7)


def test_oracle_features_say_where_the_decoded_colours_are(trainer, tmp_path, start):
    """Each colour channel against the decoded pixels: where a colour covers a patch fully, the patch has that colour."""
    import torch.nn.functional as F

    from holitom.eval.videoqa import COLOURS, NUM_FRAMES, write_clip
    from holitom.video import read_video

    model = load_llava(start)
    item = make_item("train", 0)  # attribute: 1-3 objects of distinct colours
    masks, classes = trainer.object_masks(item.clip)
    patch = model.config.vision.patch_grid
    features = trainer.oracle_features(trainer.object_cover(masks, (patch, patch)), classes, model.config.vision.hidden_size).float()
    assert features.shape == (NUM_FRAMES, patch * patch, model.config.vision.hidden_size) and not features[..., 10:].any()
    frames = torch.from_numpy(read_video(write_clip(item, tmp_path), NUM_FRAMES).frames).permute(0, 3, 1, 2).float()  # (F, 3, H, W)
    pixels = F.adaptive_avg_pool2d(frames, patch).flatten(2).transpose(1, 2)  # (F, N, 3): each patch's mean colour
    scale = trainer.ORACLE_SCALE
    for c, rgb in enumerate(COLOURS.values()):
        full = features[..., c] >= 0.999 * scale  # (F, N)
        if full.any():
            assert (pixels[full] - torch.tensor(rgb, dtype=torch.float32)).abs().max() < 40
    background = features[..., 9] == 0  # (F, N)
    assert (pixels[background].std(-1) < 25).all()  # grey: no palette colour
    torch.testing.assert_close(features[..., 9], features[..., :4].sum(-1))
    assert features[0, 0, 7:9].tolist() == [-scale, -scale] and features[0, -1, 7:9].tolist() == [scale, scale]


def test_oracle_features_and_attention_target_run_and_are_recorded(trainer, tmp_path, capsys):
    out = tmp_path / "model"
    argv = ["--out", str(out), "--train-clips", "3", "--val-clips", "2", "--steps", "2", "--eval-every", "1", "--oracle-features", "--attention-target", "1"]
    assert trainer.main(argv) == 0
    log = capsys.readouterr().out
    assert "oracle features for 3 clips" in log and "final val accuracy" in log
    provenance = json.loads((out / "holitom_default_model.json").read_text())["training"]
    assert provenance["oracle_features"] is True and provenance["attention_target"] == 1.0
    with pytest.raises(SystemExit) as exc:
        trainer.main(["--out", str(tmp_path / "other"), "--oracle-features", "--train-tower"])
    assert exc.value.code == 2 and "--oracle-features replaces the tower's output" in capsys.readouterr().err


def test_lookup_prompts_train_the_model_and_are_recorded(trainer, tmp_path, capsys):
    small = ["--train-clips", "2", "--val-clips", "2", "--steps", "2", "--eval-every", "100", "--types", "attribute", "--max-objects", "1",
             "--subset-sizes", "1", "--full-share", "0", "--eval-frames", "1"]
    plain, mixed = tmp_path / "plain", tmp_path / "mixed"
    assert trainer.main(["--out", str(plain), *small]) == 0
    assert trainer.main(["--out", str(mixed), "--lookup-prompts", "3", *small]) == 0
    capsys.readouterr()
    record = json.loads((mixed / "holitom_default_model.json").read_text())["training"]
    assert (record["lookup_prompts"], record["lookup_hint"]) == (3, False)
    # Same seed and clips: only the text prompts' gradient tells the two runs apart.
    a, b = load_llava(plain).lm_head.weight, load_llava(mixed).lm_head.weight
    assert not torch.equal(a, b)


def test_init_continues_a_checkpoint_and_records_the_chain(trainer, tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    small = ["--train-clips", "2", "--val-clips", "2", "--eval-every", "100", "--types", "attribute", "--max-objects", "1",
             "--subset-sizes", "1", "--full-share", "0", "--eval-frames", "1"]
    assert trainer.main(["--out", str(first), "--steps", "2", *small]) == 0
    assert trainer.main(["--out", str(second), "--steps", "1", "--init", str(first), *small]) == 0
    capsys.readouterr()
    records = [json.loads((d / "holitom_default_model.json").read_text())["training"] for d in (first, second)]
    assert records[0]["init"] is None
    assert records[1]["init"] == {"path": str(first), "training": records[0]}
    before, after = load_llava(first), load_llava(second)
    for (name, a), (_, b) in zip(before.named_parameters(), after.named_parameters()):
        if name.startswith("vision."):
            assert torch.equal(a, b), name  # frozen tower: the first run's, untouched
        elif name.endswith(("q_proj.weight", "k_proj.weight")):
            # One step of about lr per entry, not the start's rescaling by INIT_STD / QK_STD (0.16): scaled once, in the first run.
            assert not torch.equal(a, b) and (a - b).abs().max() < 10 * trainer.LR, name


def test_init_refuses_what_is_not_a_checkpoint_of_this_script(trainer, tmp_path, capsys, start):
    def refused(init: Path) -> str:
        with pytest.raises(SystemExit) as exc:
            trainer.main(["--out", str(tmp_path / "out"), "--init", str(init), "--train-clips", "1", "--val-clips", "1", "--steps", "1"])
        return str(exc.value.code)

    assert "not a checkpoint of this script" in refused(tmp_path)  # no config.json
    assert "records no training" in refused(start)  # the initial weights: nothing to continue
    other = tmp_path / "other"
    other.mkdir()
    for p in start.iterdir():
        (other / p.name).write_bytes(p.read_bytes())
    record = json.loads((other / "holitom_default_model.json").read_text())
    (other / "holitom_default_model.json").write_text(json.dumps({**record, "training": {"steps": 1}}))
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "image_token_index": 7, "transformers_version": "0.0"}))
    message = refused(other)
    assert "differs from the starting checkpoint's in image_token_index;" in message  # not in transformers_version
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as exc:
        trainer.main(["--out", str(tmp_path / "out"), "--init", str(other), "--patch-init", "edges"])
    assert exc.value.code == 2 and "--init starts from a trained checkpoint's tower" in capsys.readouterr().err


def test_motion_labels_name_the_way_each_object_moves(trainer, start):
    """Against the generator's own answers: the mover of each motion clip, its still distractor, drifting and static objects."""
    from holitom.eval.videoqa import DIRECTIONS, NUM_FRAMES

    grid = load_llava(start).grid
    items = trainer.select_items("train", 21)  # three of each type
    movers = 0
    for item in items:
        directions = trainer.sprite_directions(item.clip)  # (S,)
        if item.qtype == "motion":  # sprite 0 moves (the question's object), a distractor stands still
            (qa,) = item.questions
            assert qa.about == (0,) and int(directions[0]) == 1 + DIRECTIONS.index(qa.answer), item.item_id
            movers += 1
            assert directions[1:].tolist() == [0] * (len(directions) - 1)
        else:  # attribute clips drift a few pixels, every other type stands still
            assert directions.tolist() == [0] * len(directions), item.item_id
        masks, _ = trainer.object_masks(item.clip)
        cover = trainer.object_cover(masks, grid)  # (S, F, P)
        labels = trainer.motion_labels(cover, directions)  # (F, P)
        assert labels.shape == (NUM_FRAMES, grid[0] * grid[1])
        assert ((labels == trainer.IGNORE) == (cover.max(0).values < trainer.AUX_MIN_COVER)).all()
        for s, d in enumerate(directions.tolist()):
            alone = cover[s] >= trainer.AUX_MIN_COVER
            for other in range(s + 1, cover.shape[0]):  # later sprites win a shared token
                alone &= cover[other] < trainer.AUX_MIN_COVER
            assert (labels[alone] == d).all()
    assert movers == 3


def test_motion_loss_leaves_out_the_first_frame_shown(trainer):
    generator = torch.Generator().manual_seed(2)
    frames, tokens, width = 3, 4, 8
    video = torch.randn(frames * tokens, width, generator=generator)  # (F'*P, D)
    lm_head = torch.randn(10, width, generator=generator)  # (V, D)
    rows = torch.tensor([9, 1, 2, 3, 4])  # still, left, right, up, down
    labels = torch.tensor([[1, 1, 0, -100], [2, 0, -100, -100], [0, 2, 2, -100]])  # (F', P)
    logits = video @ lm_head[rows].T  # (F'*P, 5)
    flat = labels.flatten()
    each = torch.nn.functional.cross_entropy(logits, flat.clamp(min=0), reduction="none")  # (F'*P,)
    after = torch.arange(frames * tokens) >= tokens  # the first frame's labels count for nothing
    moving, still = after & (flat > 0), after & (flat == 0)
    expected = 0.5 * (each[moving].mean() + each[still].mean())
    assert float(trainer.motion_loss(video, rows, lm_head, labels)) == pytest.approx(float(expected), rel=1e-6)
    labels[1:] = trainer.IGNORE  # only the first frame labelled: nothing to learn from
    assert trainer.motion_loss(video, rows, lm_head, labels) is None


def test_a_few_steps_run_with_the_motion_target(trainer, tmp_path, capsys):
    out = tmp_path / "model"
    argv = ["--out", str(out), "--train-clips", "2", "--val-clips", "2", "--steps", "2", "--eval-every", "1", "--types", "motion"]
    argv += ["--subset-sizes", "2", "--full-share", "0", "--eval-frames", "2", "--motion-target", "0.5"]
    assert trainer.main(argv) == 0
    log = capsys.readouterr().out
    assert "token_motion=" in log  # validation names the moving tokens' direction
    assert json.loads((out / "holitom_default_model.json").read_text())["training"]["motion_target"] == 0.5


def test_a_reduced_forward_feeds_the_runtime_reduction_to_the_model(trainer, start):
    """With a reduction, each packed question sees exactly the tokens the runtime's method would feed the LLM."""
    from transformers import AutoTokenizer

    from holitom.merge.config import get_preset
    from holitom.merge.methods import reduction_for

    model = load_llava(start)
    tokenizer = AutoTokenizer.from_pretrained(start)
    packer = trainer.Packer(tokenizer, model.config.video_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>"))
    generator = torch.Generator().manual_seed(1)
    hidden = torch.randn(8, 729, model.config.vision.hidden_size, generator=generator)  # (F, N, Dv)
    scores = torch.rand(8, 729, generator=generator)  # (F, N)
    item = make_item("train", 3)
    posed = [pose(qa, "short", None) for qa in item.questions]
    prefix, ids, targets = trainer.pack(packer, posed)
    for name in ("r10-outer", "topk-r25"):
        reduction = reduction_for(get_preset(name))
        with torch.no_grad():
            packed = trainer.forward_packed(model, hidden, prefix, ids, targets, reduction=reduction, scores=scores)  # (T, V)
            features = pool_tokens(model.projector(hidden), 27, model.config.pooling)  # (F, P, D)
            attention = pool_tokens(scores[..., None], 27, model.config.pooling)[..., 0]  # (F, P)
            video = reduction.outer(features, attention, model.grid, model.config.layout, model.image_newline)  # (Nr, D)
            assert video.shape[0] < 8 * 196 // 2
            offset = 0
            for question in posed:
                before, after = packer.split_prompt(question.prompt)
                answer_ids = packer.answer_ids(question.reply)
                embeds = torch.cat((model.embed(torch.tensor([before]))[0], video, model.embed(torch.tensor([after + answer_ids[:-1]]))[0]))[None]
                logits, _ = model.prefill(embeds, torch.arange(embeds.shape[1])[None])  # (1, S, V)
                torch.testing.assert_close(packed[offset : offset + len(answer_ids)], logits[0, -len(answer_ids) :], rtol=0, atol=1e-5)
                offset += len(answer_ids)
        assert offset == packed.shape[0]
    with pytest.raises(ValueError, match="unreduced"):
        trainer.forward_packed(model, hidden, prefix, ids, targets, with_video=True, reduction=reduction, scores=scores)


def test_a_few_steps_run_with_reduced_videos_and_are_recorded(trainer, tmp_path, capsys, start):
    out = tmp_path / "model"
    argv = ["--out", str(out), "--train-clips", "2", "--val-clips", "2", "--steps", "2", "--eval-every", "1", "--train-tower"]
    argv += ["--types", "attribute", "--max-objects", "1", "--full-share", "1", "--reduce-share", "1", "--reduce-presets", "pool-r25,r25-outer", "--val-reduce", "topk-r25"]
    assert trainer.main(argv) == 0
    log = capsys.readouterr().out
    assert "with topk-r25:" in log  # validation measures the reduced answers too
    record = json.loads((out / "holitom_default_model.json").read_text())["training"]
    assert record["reduce_share"] == 1.0 and record["reduce_presets"] == ["pool-r25", "r25-outer"] and record["reduced_steps"] == 2
    assert record["val_reduce"]["preset"] == "topk-r25" and 0.0 <= record["val_reduce"]["val_accuracy"] <= 1.0
    trained, initial = load_llava(out), load_llava(start)  # the reduced steps' gradients reach the tower
    assert not torch.equal(trained.vision.patch_embedding.weight, initial.vision.patch_embedding.weight)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--reduce-share", "0.5"], "need --train-tower"),
        (["--reduce-share", "1.5", "--train-tower"], "--reduce-share must be within [0, 1]"),
    ],
)
def test_bad_reduction_options_are_refused_before_any_work(trainer, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        trainer.main(["--out", str(tmp_path / "model"), *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("preset, message", [("r10", "merges inside the decoder"), ("evs-r10", "cannot reduce a video of 8 frames"), ("bogus", "unknown merge preset")])
def test_reduction_presets_that_cannot_train_are_refused_before_any_clip(trainer, tmp_path, preset, message):
    argv = ["--out", str(tmp_path / "model"), "--train-tower", "--reduce-share", "1", "--reduce-presets", preset]
    with pytest.raises(SystemExit, match=message):
        trainer.main(argv)
    assert not (tmp_path / "model").exists()
