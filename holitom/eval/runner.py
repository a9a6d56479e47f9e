"""Run the generated benchmark through every (backend, method, ratio) row and score it.

Per backend, one pipeline per row is loaded; each item's clip is decoded and run
through the vision stage ONCE (:meth:`Pipeline.encode_video`) and every row
answers from that encoding, since rows of one backend differ only in how they
merge. Answers are greedy. Prefill FLOPs are the paper's formula
(:mod:`holitom.flops`) on the visual-token counts each item actually ran with,
averaged over items, as a share of the same backend's vanilla row.
"""

from __future__ import annotations

import datetime as _dt
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from holitom.bench.config import RowSpec, plan_rows
from holitom.errors import ConfigError
from holitom.eval.config import EvalConfig
from holitom.eval.scoring import score_sheet
from holitom.eval.videoqa import QUESTION_TYPES, Item, make_items, write_clip

SCHEMA = "holitom.eval/1"


def _stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _text_config(source):
    """The decoder geometry the FLOPs formula needs, from a checkpoint or an export's manifest."""
    from holitom.models.config import LlavaConfig

    if source.is_export:
        from holitom.export.manifest import read_manifest

        return LlavaConfig.from_dict(read_manifest(source.path, check_files=False).model_config)
    return LlavaConfig.from_pretrained(source.path)


def plan(config: EvalConfig, source) -> list[RowSpec]:
    """The rows to run; an export runs on onnxruntime only (the torch backend needs the checkpoint)."""
    backends = config.backends or (("onnxruntime",) if source.is_export else ("torch", "onnxruntime"))
    if source.is_export and "torch" in backends:
        raise ConfigError(f"'{source.path}' is an export folder: the torch backend needs the checkpoint; use --backends onnxruntime.")
    rows = plan_rows(backends, config.methods, config.ratios)
    if config.export is not None:
        rows += _export_rows(config, source)
    if not rows:
        raise ConfigError(
            f"backends {list(backends)} x methods {list(config.methods)} give no rows (competing methods run on the torch backend only)."
        )
    return rows


def _export_rows(config: EvalConfig, source) -> list[RowSpec]:
    """The onnxruntime rows of ``config.export`` (made from the evaluated model), labelled with its precision."""
    from holitom.bench.config import export_rows
    from holitom.bench.runner import check_export_of
    from holitom.export.manifest import read_manifest

    model = read_manifest(source.path, check_files=False) if source.is_export else None
    checkpoint = model.source.get("path") if model is not None else source.path
    float_attention = model.attention if model is not None else None  # a checkpoint's rows run the toolkit's own export
    return export_rows(str(check_export_of(config.export, checkpoint)), config.methods, config.ratios, float_attention)


def _answer_all(config: EvalConfig, rows: list[RowSpec], items: list[Item], clips: dict[str, Path], log) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """Per row id, one record per item (the answer and the visual-token counts it ran with), and the rows skipped.

    A row whose method cannot meet its budget at this geometry (EVS keeps all of
    frame 0, so r * F < 1 is infeasible) raises ConfigError on its first item: it
    is reported as skipped with that message, not run.
    """
    from holitom.runtime import GenerationConfig, RuntimeConfig, load_pipeline

    generation = GenerationConfig(max_new_tokens=config.max_new_tokens)
    records: dict[str, list[dict]] = {row.id: [] for row in rows}
    skipped: dict[str, str] = {}
    # One group per backend and export folder: rows of a group share one vision encoding.
    for backend, export, label in dict.fromkeys((row.backend, row.export, row.label) for row in rows):
        group = [row for row in rows if (row.backend, row.export) == (backend, export)]
        log(f"[{label}] loading {len(group)} pipelines")
        pipelines = {
            row.id: load_pipeline(export or config.model, RuntimeConfig(backend=backend, preset=row.preset, inner_merge=row.inner_merge, num_frames=config.frames))
            for row in group
        }
        try:
            for pipeline in pipelines.values():
                pipeline.activate()
            # One encoding serves every row: made by a pipeline whose vision stage returns what every row's merge reads
            # (methods without vision scores skip them in their own vision stage).
            encoder = max(pipelines.values(), key=lambda p: len(p.vision_output_names))
            start = time.perf_counter()
            for n, item in enumerate(items):
                encoded = encoder.encode_video(clips[item.item_id], config.frames)
                for row in group:
                    if row.id in skipped:
                        continue
                    try:
                        result = pipelines[row.id].run(encoded, item.prompt, config.frames, generation)
                    except ConfigError as exc:
                        skipped[row.id] = str(exc)
                        log(f"[{label}] skipping {row.id}: {exc}")
                        continue
                    records[row.id].append(
                        {"answer": result.answer, "after_outer": result.tokens.after_outer, "after_inner": result.tokens.after_inner}
                    )
                if (n + 1) % 10 == 0 or n + 1 == len(items):
                    log(f"[{label}] {n + 1}/{len(items)} items ({time.perf_counter() - start:.0f} s)")
        finally:
            for pipeline in pipelines.values():
                pipeline.deactivate()
    return records, skipped


def _row_result(row: RowSpec, items: list[Item], recs: list[dict], text, frames: int) -> dict[str, Any]:
    from holitom.bench.runner import measured_formula_flops, paper_nominal_flops, row_merge_config

    merge = row_merge_config(row)
    answers = {item.item_id: rec["answer"] for item, rec in zip(items, recs)}
    flops = [measured_formula_flops(text.text, rec, merge) for rec in recs]
    return {
        **row.to_dict(),
        "label": row.label,
        **score_sheet(items, answers).to_dict(),
        "tokens": {k: sum(r[k] for r in recs) / len(recs) for k in ("after_outer", "after_inner")},
        "flops": {
            "paper_formula": sum(flops) / len(flops),  # paper units (MACs), mean over items
            "paper_nominal": paper_nominal_flops(text.text, text.tokens_per_frame, frames, merge),
        },
        "answers": answers,
    }


def _relative(rows: list[dict[str, Any]]) -> None:
    """Accuracy and FLOPs of each row as a share of its own backend's (and export's) vanilla row (None without one);
    a row of a quantized export also as a share of the float32 onnxruntime row of its method and ratio."""
    vanilla = {r["label"]: r for r in rows if r["method"] == "vanilla"}
    float32 = {(r["method"], r["ratio"]): r for r in rows if r["label"] == "onnxruntime"}
    for r in rows:
        base = vanilla.get(r["label"])
        r["pct_of_vanilla"] = None if base is None or not base["accuracy"] else r["accuracy"] / base["accuracy"]
        r["flops"]["pct_of_vanilla"] = None if base is None else r["flops"]["paper_formula"] / base["flops"]["paper_formula"]
        if r["precision"] is not None:
            ref = float32.get((r["method"], r["ratio"]))
            r["pct_of_float32"] = None if ref is None or not ref["accuracy"] else r["accuracy"] / ref["accuracy"]


def _agreement(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Same method and ratio on two paths: on how many items they gave the same answer.

    Pairs: torch vs onnxruntime (float32), and onnxruntime float32 vs each quantized export's rows.
    """
    by_key: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        by_key.setdefault((r["method"], r["ratio"]), {})[r["label"]] = r
    out = []
    for (method, ratio), found in by_key.items():
        pairs = [("torch", "onnxruntime")] + [("onnxruntime", label) for label, r in found.items() if r["precision"] is not None]
        for first, second in pairs:
            if {first, second} <= found.keys():
                a, b = found[first]["answers"], found[second]["answers"]
                differ = sorted(k for k in a if a[k] != b[k])
                out.append(
                    {"method": method, "ratio": ratio, "rows": [first, second], "same": len(a) - len(differ), "total": len(a), "differing_items": differ}
                )
    return out


def run_eval(config: EvalConfig, log: Callable[[str], None] | None = _stderr_log) -> dict[str, Any]:
    """Evaluate ``config.model`` on the benchmark; returns the result object (see :mod:`holitom.eval.report`)."""
    import torch

    from holitom.sources import resolve_source

    log = log or (lambda message: None)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    source = resolve_source(config.model)
    rows = plan(config, source)
    text = _text_config(source)
    items = make_items(config.split, config.items, config.start)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="holitom-eval-") as tmp:
        clips = {item.item_id: write_clip(item, tmp) for item in items}
        log(f"rendered {len(items)} clips ({config.split} split, items {config.start}..{config.start + len(items) - 1}); {len(rows)} rows")
        records, skipped = _answer_all(config, rows, items, clips, log)
    results = [_row_result(row, items, records[row.id], text, config.frames) for row in rows if row.id not in skipped]
    _relative(results)
    return {
        "schema": SCHEMA,
        "settings": {**config.to_dict(), "source": {"kind": source.kind, "path": str(source.path)}},
        "benchmark": {
            "split": config.split,
            "items": [{"id": i.item_id, "qtype": i.qtype, "form": i.form, "prompt": i.prompt, "answer": i.answer} for i in items],
            "per_type_counts": {t: sum(i.qtype == t for i in items) for t in QUESTION_TYPES},
            "chance_accuracy": sum(i.chance for i in items) / len(items),
        },
        "rows": results,
        "skipped": [{"id": row_id, "reason": reason} for row_id, reason in skipped.items()],
        "agreement": _agreement(results),
        "environment": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - began, 1),
        },
    }


__all__ = ["SCHEMA", "plan", "run_eval"]
