#!/usr/bin/env python
"""Which objects of the generated benchmark's clips keep a token of their own through the outer merge.

A diagnosis of `holitom eval`'s accuracy table, not a benchmark: it says, per question type, whether the
objects a question is about are still in the video tokens after the merge, and in how many of the sampled
frames. An output row "shows" object s when at least ``--share`` of its weight comes from s's pixels: each
merge edge (input token t*P+p -> output row, weight w) carries w times the share of patch p's area that s
covers at frame t (the same area-pooled coverage the training script's object targets use, from the clip's
ground truth). A static cluster counts for its window's first frame, as the merged sequence places it.

    python scripts/probe_merge_objects.py --model CKPT --types count,short_event --items 140 --preset r10

Prints one row per question type for vanilla (every token kept) and the preset: the share of the questions'
objects shown by some row, the mean number of sampled frames in which each is shown, the share of items
whose every question object is shown (for a count: what the answer needs), and the frames in which the
clip's other objects are shown (for a short event: the steady object the flash is told apart from).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_default_model beside it, imported by name


def outer_plan(config, video, layout):
    """The outer step's plan of a preset: HoliTom's (``plan_outer_merge``) or a competitor's (its ``ReductionPlan``)."""
    from holitom.merge import plan_outer_merge
    from holitom.merge.baselines import BaselineConfig

    if isinstance(config, BaselineConfig):
        return config.plan(video.features, video.attention, video.grid)
    return plan_outer_merge(video.features, video.attention, config, video.grid, layout)


def shown_frames(plan, cover, share: float) -> list[set[int]]:
    """Per object, the frames of the output rows it fills at least ``share`` of: ``cover (S, F, P)`` numpy.

    ``plan``: HoliTom's outer plan, or a competitor's ``ReductionPlan`` (no newline rows)."""
    from holitom.merge.baselines import ReductionPlan

    if isinstance(plan, ReductionPlan):
        P, rows = plan.input_shape[1], plan.num_out
    else:
        P, rows = plan.tokens_per_frame, plan.num_rows
    src = plan.src_index.numpy()  # (E,) flat input index t * P + p
    dst = plan.dst_index.numpy()  # (E,) output row
    w = plan.weight.numpy().astype(np.float64)  # (E,)
    total = np.bincount(dst, weights=w, minlength=rows)  # (N_out,) newline rows have no edges: 0
    frame_of_row = plan.frame_index.numpy()  # (N_out,)
    out = []
    for s in range(cover.shape[0]):
        mass = np.bincount(dst, weights=w * cover[s, src // P, src % P], minlength=rows)  # (N_out,)
        filled = mass >= share * np.where(total > 0, total, np.inf)
        out.append({int(f) for f in frame_of_row[filled]})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a checkpoint folder (llava-hf layout), e.g. a train_default_model.py --out")
    parser.add_argument("--split", default="test")
    parser.add_argument("--items", type=int, default=140, help="items of the split to look at (the first N, then filtered by --types)")
    parser.add_argument("--types", default=None, help="comma-separated question types (default: all)")
    parser.add_argument("--preset", default="r10", help="the merge preset to compare with vanilla: HoliTom's (r10) or a competitor's outer step (pool-r10, topk-r10, evs-r25)")
    parser.add_argument("--share", type=float, default=0.5, help="share of a row's weight an object must fill to be shown by it")
    args = parser.parse_args(argv)

    import tempfile

    import torch

    from holitom.errors import HolitomError
    from holitom.eval.videoqa import NUM_FRAMES, QUESTION_TYPES, make_items, write_clip
    from holitom.merge import get_preset
    from holitom.merge.config import MergeConfig
    from holitom.models.loading import load_llava
    from holitom.video import read_video
    from holitom.video.preprocess_np import NumpyVideoPreprocessor

    types = tuple(QUESTION_TYPES) if args.types is None else tuple(t.strip() for t in args.types.split(","))
    unknown = sorted(set(types) - set(QUESTION_TYPES))
    if unknown:
        print(f"probe_merge_objects: error: unknown question types {unknown}; choose from {list(QUESTION_TYPES)}.", file=sys.stderr)
        return 2
    if not 0.0 < args.share <= 1.0:
        print(f"probe_merge_objects: error: --share must be in (0, 1], got {args.share}.", file=sys.stderr)
        return 2
    try:
        model = load_llava(args.model)
        preprocess = NumpyVideoPreprocessor.from_pretrained(args.model)
        configs = {"vanilla": MergeConfig(), args.preset: get_preset(args.preset)}
        items = [i for i in make_items(args.split, args.items) if i.qtype in types]
    except HolitomError as exc:
        print(f"probe_merge_objects: error: {exc}", file=sys.stderr)
        return 2
    import train_default_model as train  # its object masks and coverage: one definition
    torch.set_num_threads(1)

    # (type, method) -> per question object: shown at all, frames shown; per other object: frames shown;
    # per item: every question object shown
    shown, frames, others, whole = defaultdict(list), defaultdict(list), defaultdict(list), defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        for n, item in enumerate(items):
            clip = read_video(write_clip(item, tmp), NUM_FRAMES)  # the eval's path: H.264 file, PyAV decode
            video = model.encode_video(torch.from_numpy(preprocess(clip)))  # features (F, P, D), attention (F, P)
            masks, _ = train.object_masks(item.clip)  # (S, F, H, W)
            cover = train.object_cover(masks, video.grid).numpy()  # (S, F, P)
            asked = next(qa for qa in item.questions if qa.question in item.prompt)
            about = list(asked.about) or list(range(cover.shape[0]))
            for method, config in configs.items():
                plan = outer_plan(config, video, model.layout)
                per_object = shown_frames(plan, cover, args.share)
                key = (item.qtype, method)
                shown[key] += [bool(per_object[s]) for s in about]
                frames[key] += [len(per_object[s]) for s in about]
                others[key] += [len(per_object[s]) for s in range(cover.shape[0]) if s not in about]
                whole[key].append(all(per_object[s] for s in about))
            if (n + 1) % 20 == 0 or n + 1 == len(items):
                print(f"[probe] {n + 1}/{len(items)} clips", file=sys.stderr)

    print(f"objects a question is about, shown by a row filled >= {args.share:.0%} by them ({args.split} split, {len(items)} items)")
    print(f"{'type':<12} {'method':<8} {'items':>5} {'objects':>7} {'shown':>6} {'frames':>6} {'all shown':>9} {'others':>6} {'frames':>6}")
    for qtype in types:
        for method in configs:
            key = (qtype, method)
            if not whole[key]:
                continue
            print(f"{qtype:<12} {method:<8} {len(whole[key]):>5} {len(shown[key]):>7} {np.mean(shown[key]):>6.1%} "
                  f"{np.mean(frames[key]):>6.2f} {np.mean(whole[key]):>9.1%} {len(others[key]):>6} "
                  + (f"{np.mean(others[key]):>6.2f}" if others[key] else f"{'-':>6}"))
    print(f"frames: mean number of the {NUM_FRAMES} sampled frames in which an object is shown (a static cluster counts for its "
          "window's first frame); others: the clip's objects the question is not about")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
