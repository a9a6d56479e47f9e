"""Presenting a benchmark result: a table, the JSON file and two PNG plots.

The result object (:func:`holitom.bench.runner.run_bench`) has:

- ``schema``, ``environment`` (versions, CPU / GPU, threads, load average at
  start and end), ``settings`` (the :class:`~holitom.bench.config.BenchConfig`,
  the checkpoint, the arch preset with overrides, the model geometry, the video,
  how time / memory / FLOPs are measured), ``published_reference``;
- ``rows``: per row ``id``, ``label`` (the backend, ``onnxruntime[int8]`` for a row of
  ``--export``), ``backend``, ``method``, ``ratio``, ``preset``, ``inner_merge``,
  ``export`` and ``precision`` (None but for ``--export`` rows), ``tokens`` (``visual_in`` -> ``after_outer`` -> ``after_inner``,
  ``prompt``), ``timings_ms`` (``decode_video`` + ``vision`` + ``merge`` +
  ``prefill`` = ``ttft``), ``shares`` (each part / TTFT), ``ttft_ms_all``,
  ``decode_tokens_per_s`` (+ ``_all``), ``generated_tokens``, ``memory``
  (:class:`~holitom.bench.memory.RowMemory`), ``flops`` and ``vs_transformers``
  (speed-ups and ratios against the transformers row), ``floor``
  (:func:`holitom.bench.floor.row_floor`: the counted ``flops`` of the vision stage and the
  prefill, their ``floor_ms`` and ``x_floor`` = measured / floor for vision, prefill and
  TTFT, or None with the ``reason``);
- ``matmul_rate``: :meth:`holitom.bench.floor.MatmulRate.to_dict` of the run (the rate
  the floors divide by);
- ``targets``: issue 5's targets on the HoliTom r = 0.10 rows;
- ``projection`` (layer-trimmed presets only): :func:`holitom.bench.projection.project`'s
  full-depth projection of every row (per-layer times, projected timings, decode speed
  and ratios), labelled as a projection in the table and the TTFT plot.

Plots use matplotlib's Agg canvas directly (no pyplot, no global backend switch).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, TextIO

JSON_NAME = "bench.json"
BREAKDOWN_PNG = "ttft_breakdown.png"
SCALING_PNG = "ttft_flops_vs_tokens.png"
_PART_LABELS = {"decode_video": "video decode", "vision": "vision", "merge": "merge", "prefill": "LLM prefill"}
_PART_COLORS = {"decode_video": "#b0b0b0", "vision": "#4c72b0", "merge": "#dd8452", "prefill": "#55a868"}
_BACKEND_COLORS = {"transformers": "#c44e52", "torch": "#4c72b0", "onnxruntime": "#55a868"}


def _fmt(value: Any, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


def _si(value: float | None, unit: str) -> str:
    """3 significant digits with an SI prefix: 2.76e12 -> '2.76 T' + unit."""
    if value is None:
        return "-"
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of the summary table (shared by the rich and plain renderings)."""
    header = [
        "row", "visual tokens", "decode", "vision", "merge", "prefill", "TTFT ms", "TTFT x",
        "merge %", "tok/s", "tok/s x", "peak MB", "mem x", "paper FLOPs", "FLOPs %", "counted FLOPs",
        "TTFT/floor", "vision/floor", "prefill/floor",
    ]
    cells = []
    for r in result["rows"]:
        t, tm, vs = r["tokens"], r["timings_ms"], r.get("vs_transformers") or {}
        mem = r.get("memory") or {}
        flops = r["flops"]
        tokens = f"{t['visual_in']}->{t['after_outer']}->{t['after_inner']}"
        cells.append(
            [
                r["id"],
                tokens,
                f"{tm['decode_video']:.1f}",
                f"{tm['vision']:.1f}",
                f"{tm['merge']:.1f}",
                f"{tm['prefill']:.1f}",
                f"{tm['ttft']:.1f}",
                _x(vs.get("ttft_speedup")),
                _fmt(None if r["shares"]["merge"] is None else 100 * r["shares"]["merge"], ".1f"),
                f"{r['decode_tokens_per_s']:.1f}",
                _x(vs.get("decode_speedup")),
                _fmt(mem.get("gpu_peak_allocated_mb") or mem.get("peak_mb"), ".0f"),
                _x(vs.get("peak_memory_ratio")),
                _si(flops["paper_formula"], "MAC"),
                _fmt(None if vs.get("paper_flops_ratio") is None else 100 * vs["paper_flops_ratio"], ".1f"),
                _si(flops["counted"], "FLOP"),
                *_floor_cells(r.get("floor")),
            ]
        )
    return header, cells


def _floor_cells(floor: dict[str, Any] | None) -> list[str]:
    """TTFT, vision and prefill over their floors; a short reason in every cell when there is no floor."""
    if not floor or floor.get("x_floor") is None:
        reason = (floor or {}).get("reason") or "no floor"
        from holitom.bench.floor import NO_FLOPS_REASON

        short = "no FLOPs" if reason == NO_FLOPS_REASON else "n/a"
        return [short] * 3
    return [_x(floor["x_floor"][name]) for name in ("ttft", "vision", "prefill")]


def floor_lines(result: dict[str, Any]) -> list[str]:
    """The matmul rate the floors divide by, and why any row has no floor."""
    rate = result.get("matmul_rate")
    lines = ["matmul rate: not measured" if not rate else (
        f"{rate['flops_per_s'] / 1e12:.3g} TFLOP/s measured matmul rate ({rate['dtype']} {rate['side']}^3 GEMM on "
        f"{rate['device']}" + ("" if rate.get("threads") is None else f", {rate['threads']} threads")
        + f", median of {len(rate['seconds'])}); '/floor' columns: measured time / (counted FLOPs / that rate)"
    )]
    reasons = dict.fromkeys((r.get("floor") or {}).get("reason") for r in result["rows"])
    lines.extend(str(reason) for reason in reasons if reason)
    return lines


def _title(result: dict[str, Any]) -> str:
    s = result["settings"]
    g = s["model_geometry"]
    arch = s.get("arch")
    name = arch["name"] + (f" {arch['overrides']}" if arch and arch.get("overrides") else "") if arch else s["checkpoint"]
    return (
        f"{name}: {s['frames']} frames x {g['tokens_per_frame']} tokens ({g['image_size']} px), "
        f"vision {g['vision_layers_used']} layers x {g['vision_hidden_size']}, LLM {g['text_layers']} layers x "
        f"{g['text_hidden_size']}, {s['device']} {s['dtype']}, {s['repeats']} repeats after {s['warmup']} warm-up"
    )


def print_table(result: dict[str, Any], file: TextIO | None = None) -> None:
    """The summary table (rich when it can render, plain text otherwise) and the targets."""
    import sys

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    file = file or sys.stdout
    header, cells = table_rows(result)
    table = Table(title=_title(result), title_justify="left")
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i < 2 else "right", no_wrap=i < 2)
    for row in cells:
        table.add_row(*map(escape, row))  # row ids hold brackets (onnxruntime[int8]/...), not markup
    console = Console(file=file, width=max(200, Console(file=file).width))
    console.print(table)
    console.print("times are ms (medians over repeats; each row shows its median-TTFT run, whose parts sum to TTFT); "
                  "'x' columns are vs the transformers row; paper FLOPs in paper units (MACs, visual tokens only).")
    for line in floor_lines(result):
        console.print(line, markup=False)
    for line in projection_lines(result):
        console.print(line, markup=False)
    for t in result.get("targets", []):
        speed = "-" if t["ttft_speedup"] is None else f"{t['ttft_speedup']:.2f}x"
        console.print(
            f"target {t['row']}: TTFT speed-up {speed} (target >= {t['ttft_speedup_target']:.0f}x: "
            f"{_met(t['ttft_speedup_met'])}{_bound(t['ttft_speedup_bound'])}); merge {100 * t['merge_share']:.1f}% of TTFT "
            f"(target <= {100 * t['merge_share_target']:.0f}%: {_met(t['merge_share_met'])})",
            markup=False,
        )
    for t in result.get("edge_targets", []):
        value = "-" if t["value"] is None else f"{t['value']:.2f}x"
        sign = ">=" if t["at_least"] else "<="
        console.print(
            f"target (edge runtime) {t['what']}: {value} (target {sign} {t['target']:g}x: {_met(t['met'])}{_bound(t.get('bound'))})",
            markup=False,
        )


def _bound(bound: float | None) -> str:
    """The TTFT speed-up a row would reach with its merge and prefill free (none: nothing to say)."""
    return "" if bound is None else f"; {bound:.2f}x with the merge and prefill taking no time"


def projection_lines(result: dict[str, Any]) -> list[str]:
    """One line per row of the full-depth projection (empty without one), labelled as a projection."""
    projection = result.get("projection")
    if not projection:
        return []
    d = projection["depths"]
    lines = [
        f"PROJECTED to {d['real']['vision']} vision / {d['real']['text']} decoder layers from runs at "
        f"{d['measured']['vision']}/{d['measured']['text']} and {d['probe']['vision']}/{d['probe']['text']} layers "
        "(not measured):"
    ]
    for row_id, p in projection["rows"].items():
        tm, vs, st = p["timings_ms"], p.get("vs_transformers") or {}, p["stages"]
        per_layer = ", ".join(f"{name} {_fmt(st[name]['per_layer_ms'], '.1f')}" for name in ("vision", "prefill", "decode_per_token"))
        floor = _floor_cells(p.get("floor"))
        lines.append(
            f"  {row_id}: TTFT {tm['ttft']:.0f} ms ({_x(vs.get('ttft_speedup'))}), vision {tm['vision']:.0f} ms "
            f"({_x(vs.get('vision_speedup'))}), prefill {tm['prefill']:.0f} ms ({_x(vs.get('prefill_speedup'))}), "
            f"{_fmt(p['decode_tokens_per_s'], '.1f')} tok/s ({_x(vs.get('decode_speedup'))}); ms per layer: {per_layer}; "
            f"/floor: TTFT {floor[0]}, vision {floor[1]}, prefill {floor[2]}"
        )
    return lines


def _met(value: bool | None) -> str:
    return "n/a" if value is None else ("met" if value else "MISSED")


def write_json(result: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def plot_ttft_breakdown(result: dict[str, Any], path: Path) -> Path:
    """Stacked horizontal bars per row (video decode / vision / merge / LLM prefill), and the paper's bars."""
    rows = result["rows"]
    bars = len(rows) + len((result.get("projection") or {}).get("rows", {}))
    fig = _figure(11, 1.6 + 0.42 * bars + 1.6)
    grid = fig.add_gridspec(2, 1, height_ratios=[max(bars, 1), 2.2], hspace=0.55)
    ax = fig.add_subplot(grid[0])
    labels = [r["id"] for r in rows][::-1]
    left = [0.0] * len(rows)
    for part in ("decode_video", "vision", "merge", "prefill"):
        widths = [r["timings_ms"][part] for r in rows][::-1]
        ax.barh(range(len(rows)), widths, left=left, color=_PART_COLORS[part], label=_PART_LABELS[part])
        left = [a + b for a, b in zip(left, widths)]
    for y, r in enumerate(rows[::-1]):
        speed = (r.get("vs_transformers") or {}).get("ttft_speedup")
        note = f" {r['timings_ms']['ttft']:.0f} ms" + (f" ({speed:.2f}x)" if speed and r["backend"] != "transformers" else "")
        ax.text(left[y], y, note, va="center", fontsize=8)
    projection = result.get("projection")
    if projection:
        # Projected rows above the measured ones, hatched and labelled: arithmetic, not a measurement.
        d = projection["depths"]["real"]
        projected = list(projection["rows"].items())[::-1]
        projected_labels = [f"PROJECTED {row_id} @ {d['vision']}v/{d['text']}t layers" for row_id, _ in projected]
        offset = len(rows)
        y = list(range(offset, offset + len(projected)))
        plan_left = [0.0] * len(projected)
        for part in ("decode_video", "vision", "merge", "prefill"):
            widths = [p["timings_ms"][part] for _, p in projected]
            ax.barh(y, widths, left=plan_left, color=_PART_COLORS[part], hatch="//", alpha=0.55)
            plan_left = [a + b for a, b in zip(plan_left, widths)]
        for yy, (_, p), total in zip(y, projected, plan_left):
            speed = (p.get("vs_transformers") or {}).get("ttft_speedup")
            ax.text(total, yy, f" {total:.0f} ms" + (f" ({speed:.2f}x)" if speed else ""), va="center", fontsize=8)
        labels = labels + projected_labels
        left = left + plan_left
    ax.set_yticks(list(range(len(labels))), labels)
    ax.set_xlim(0, max(left) * 1.25 if left else 1)
    ax.set_xlabel("time to first token (ms), measured" + ("; hatched rows: full-depth PROJECTION, not measured" if projection else ""))
    ax.set_title(_title(result), fontsize=8, loc="left")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.tick_params(axis="y", labelsize=8)

    ref = fig.add_subplot(grid[1])
    published = result["published_reference"]["ttft_ms"]
    names = list(published)[::-1]
    left = [0.0] * len(names)
    for part in ("vision", "merge", "prefill"):
        widths = [published[n][part] for n in names]
        ref.barh([f"paper: {n}" for n in names], widths, left=left, color=_PART_COLORS[part])
        left = [a + b for a, b in zip(left, widths)]
    for y, total in enumerate(left):
        ref.text(total, y, f" {total:.0f} ms", va="center", fontsize=8)
    ref.set_xlim(0, max(left) * 1.25)
    ref.set_xlabel("published TTFT (ms): " + result["published_reference"]["model"] + "; 'merge' is the paper's 'other'")
    ref.tick_params(axis="y", labelsize=8)
    fig.savefig(path, bbox_inches="tight")
    return path


_METHOD_COLORS = {"vanilla": "#4d4d4d", "holitom-outer": "#dd8452", "holitom": "#4c72b0"}
_OTHER_COLORS = ("#55a868", "#8172b2", "#937860", "#da8bc3", "#ccb974", "#64b5cd")
_BACKEND_STYLE = {"transformers": ("*", "none"), "torch": ("o", "-"), "onnxruntime": ("s", "--")}


def _method_color(method: str, methods: list[str]) -> str:
    if method in _METHOD_COLORS:
        return _METHOD_COLORS[method]
    others = [m for m in methods if m not in _METHOD_COLORS]
    return _OTHER_COLORS[others.index(method) % len(_OTHER_COLORS)]


def plot_scaling(result: dict[str, Any], path: Path) -> Path:
    """TTFT (per backend x method) and prefill FLOPs (per method) against the visual tokens entering the LLM.

    Colour = method, marker = backend (star: transformers, circle: torch,
    square: onnxruntime); in the FLOPs panel filled markers are the paper's
    formula and hollow ones the counted matmuls.
    """
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig = _figure(12, 4.8)
    ax_t, ax_f = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    series: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in result["rows"]:
        series.setdefault((r["label"], r["method"]), []).append(r)
    methods = list(dict.fromkeys(m for _, m in series))

    def tokens(r: dict[str, Any]) -> int:
        return r["tokens"]["after_outer"]

    for (backend, method), rows in series.items():
        rows = sorted(rows, key=tokens)
        marker, line = _BACKEND_STYLE.get(backend, ("D", ":"))
        ax_t.plot([tokens(r) for r in rows], [r["timings_ms"]["ttft"] for r in rows], marker=marker, markersize=11 if marker == "*" else 6,
                  color=_BACKEND_COLORS["transformers"] if backend == "transformers" else _method_color(method, methods),
                  label=f"{backend} {method}", linestyle=line if len(rows) > 1 else "none")

    # FLOPs do not depend on the runtime backend: one series per method (torch rows,
    # else onnxruntime rows), plus the transformers row.
    backends = [b for b in ("torch", "onnxruntime") if any(k[0] == b for k in series)]
    flop_series = {k: v for k, v in series.items() if k[0] == "transformers"}
    if backends:
        flop_series.update({k: v for k, v in series.items() if k[0] == backends[0]})
    for (backend, method), rows in flop_series.items():
        rows = sorted(rows, key=tokens)
        baseline = backend == "transformers"
        color = _BACKEND_COLORS["transformers"] if baseline else _method_color(method, methods)
        marker = "*" if baseline else "o"
        label = "transformers" if baseline else method
        xs = [tokens(r) for r in rows]
        line = "-" if len(xs) > 1 else "none"
        ax_f.plot(xs, [r["flops"]["paper_formula"] / 1e9 for r in rows], marker=marker, markersize=11 if baseline else 6, color=color, linestyle=line, label=f"{label}: paper formula (GMAC)")
        counted = [r["flops"]["counted"] for r in rows]
        if all(c is not None for c in counted):
            ax_f.plot(xs, [c / 1e9 for c in counted], marker=marker, markersize=11 if baseline else 6, color=color, markerfacecolor="none",
                      linestyle=":" if len(xs) > 1 else "none", label=f"{label}: counted (GFLOP)")
    for ax in (ax_t, ax_f):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("visual tokens entering the LLM (after the outer merge)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    ax_t.set_ylabel("TTFT (ms)")
    ax_t.set_title("TTFT vs retained visual tokens", fontsize=9)
    ax_f.set_yscale("log")
    ax_f.set_ylabel("LLM prefill (G)")
    ax_f.set_title("prefill compute vs retained visual tokens (counted: whole prompt, 2 FLOP/MAC)", fontsize=9)
    fig.suptitle(_title(result), fontsize=8)
    fig.savefig(path, bbox_inches="tight")
    return path


def write_outputs(result: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """``bench.json`` and the two PNGs in ``out_dir`` (created if missing).

    All three are rendered into a hidden staging folder inside ``out_dir`` and
    renamed into place only once every one is written, so a failure (a plot
    that raises, an interrupt) leaves no half-written or mismatched files.
    """
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".bench-staging-") as tmp:
        stage = Path(tmp)
        staged = {
            "json": write_json(result, stage / JSON_NAME),
            "breakdown": plot_ttft_breakdown(result, stage / BREAKDOWN_PNG),
            "scaling": plot_scaling(result, stage / SCALING_PNG),
        }
        for path in staged.values():
            os.replace(path, out / path.name)  # same file system: atomic per file
    return {key: out / path.name for key, path in staged.items()}


__all__ = ["BREAKDOWN_PNG", "JSON_NAME", "SCALING_PNG", "floor_lines", "plot_scaling", "plot_ttft_breakdown", "print_table", "projection_lines", "table_rows", "write_json", "write_outputs"]
