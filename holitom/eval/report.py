"""Presenting an evaluation: the paper-style table, ``eval.json`` and the accuracy-vs-FLOPs plot.

The result object (:func:`holitom.eval.runner.run_eval`) has ``schema``,
``settings``, ``benchmark`` (split, items with prompt and expected answer, items
per type), ``rows`` (per backend x method x ratio: ``accuracy``, ``correct``,
``total``, ``per_type``, ``per_form``, ``pct_of_vanilla``, mean ``tokens``
entering the LLM and after the inner step, ``flops`` with the paper's formula
and its ``pct_of_vanilla``, and every ``answers``), ``agreement`` (torch vs
onnxruntime answers per method and ratio, and float32 onnxruntime vs each quantized export's rows; a
row of a quantized export, ``holitom eval --export``, has its ``label`` and ``precision`` and
``pct_of_float32``), ``skipped`` (rows whose method cannot meet
the budget at this geometry, with the reason) and ``environment``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, TextIO

from holitom.eval.videoqa import FORMS, QUESTION_TYPES

JSON_NAME = "eval.json"
PLOT_NAME = "accuracy_vs_flops.png"
_TYPE_LABELS = {
    "attribute": "attr",
    "motion": "motion",
    "count": "count",
    "appear": "appear",
    "scene_cut": "cut",
    "short_event": "short",
    "static": "static",
}
_FORM_LABELS = {"short": "word", "choice": "choice"}  # one-word answers, multiple choices


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def table_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells, laid out like the paper's table: per backend vanilla, then one block per ratio."""
    header = ["backend", "r", "method", "tokens", "FLOPs %", "acc %", "% vanilla"] + [_TYPE_LABELS[t] for t in QUESTION_TYPES] + [_FORM_LABELS[f] for f in FORMS]
    cells = []
    # Per ratio, the quantized rows right after the float32 rows they are compared with.
    rows = sorted(result["rows"], key=lambda r: (r["backend"] != "torch", r["ratio"] is not None, r["ratio"] or 0, r["precision"] or ""))
    for r in rows:
        cells.append(
            [
                r["label"],
                "-" if r["ratio"] is None else f"{r['ratio']:.2f}",
                r["method"],
                f"{r['tokens']['after_outer']:.0f}" + ("" if r["tokens"]["after_inner"] == r["tokens"]["after_outer"] else f">{r['tokens']['after_inner']:.0f}"),
                _pct(r["flops"]["pct_of_vanilla"]),
                _pct(r["accuracy"]),
                _pct(r["pct_of_vanilla"]),
            ]
            + [_pct(r["per_type"][t]) for t in QUESTION_TYPES]
            + [_pct(r["per_form"][f]) for f in FORMS]
        )
    return header, cells


def print_table(result: dict[str, Any], file: TextIO | None = None) -> None:
    header, cells = table_rows(result)
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    previous = None
    for c in cells:
        if previous is not None and (c[0], c[1]) != previous:
            lines.append("")
        previous = (c[0], c[1])
        lines.append("  ".join(v.rjust(w) for v, w in zip(c, widths)))
    s = result["settings"]
    bench = result["benchmark"]
    title = f"held-out accuracy: {s['source']['path']} on the '{bench['split']}' split, {len(bench['items'])} items, {s['frames']} frames"
    notes = [
        "tokens: visual tokens entering the LLM (> after the inner step); FLOPs %: the paper's prefill formula vs vanilla",
        "attr .. static: accuracy per question type; word, choice: on the one-word and the multiple-choice items",
        f"uniform guessing among each item's allowed answers scores {_pct(bench['chance_accuracy'])}% on these items",
    ]
    for skip in result.get("skipped", []):
        notes.append(f"skipped {skip['id']}: {skip['reason']}")
    for a in result["agreement"]:
        ratio = "" if a["ratio"] is None else f"@r{a['ratio']:.2f}"
        notes.append(f"{a['rows'][0]} vs {a['rows'][1]}, {a['method']}{ratio}: same answer on {a['same']}/{a['total']} items")
    for r in result["rows"]:
        if r.get("pct_of_float32") is not None:
            notes.append(f"{r['id']}: accuracy {_pct(r['pct_of_float32'])}% of float32's")
    print("\n".join([title, *lines, "", *notes]), file=file)


def write_json(result: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def plot_accuracy_vs_flops(result: dict[str, Any], path: Path) -> Path:
    """Accuracy (y) against prefill FLOPs as a share of vanilla (x), one line per method and backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    series: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in result["rows"]:
        if r["flops"]["pct_of_vanilla"] is not None:  # a row's FLOPs are a share of its backend's vanilla row
            series.setdefault((r["method"], r["label"]), []).append(r)
    for (method, backend), rows in series.items():
        rows = sorted(rows, key=lambda r: r["flops"]["pct_of_vanilla"])
        xs = [100 * r["flops"]["pct_of_vanilla"] for r in rows]
        ys = [100 * r["accuracy"] for r in rows]
        style = "-" if backend == "torch" else "--"
        marker = "*" if method == "vanilla" else ("o" if backend == "torch" else "s")
        ax.plot(xs, ys, linestyle=style if len(rows) > 1 else "none", marker=marker, markersize=10 if method == "vanilla" else 5, label=f"{method} ({backend})")
    if series:
        ax.set_xscale("log")
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no vanilla row in this run: add vanilla to --methods\nto place the rows on the FLOPs axis", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("LLM prefill FLOPs, % of vanilla (paper formula)")
    ax.set_ylabel("accuracy on the held-out split (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(f"generated video QA, {len(result['benchmark']['items'])} items, {result['settings']['frames']} frames", fontsize=9)
    fig.savefig(path, bbox_inches="tight")
    return path


def write_outputs(result: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """``eval.json`` and the PNG in ``out_dir``, staged in a hidden folder and renamed into place together."""
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".eval-staging-") as tmp:
        stage = Path(tmp)
        staged = {"json": write_json(result, stage / JSON_NAME), "plot": plot_accuracy_vs_flops(result, stage / PLOT_NAME)}
        for p in staged.values():
            os.replace(p, out / p.name)
    return {key: out / p.name for key, p in staged.items()}


__all__ = ["JSON_NAME", "PLOT_NAME", "plot_accuracy_vs_flops", "print_table", "table_rows", "write_json", "write_outputs"]
