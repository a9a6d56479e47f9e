"""The calibration report: where INT8 changes the vision tower, and whether HoliTom and the answers notice.

- per-layer cosine: each vision layer's output (and the graph's outputs) of the
  INT8 graph against the float32 graph on the calibration clips;
- HoliTom decisions: the outer-merge plan (DESIGN.md Stage I + II) of each clip
  from float32 and from INT8 vision outputs: identical temporal windows, and the
  overlap of the kept tokens (frame, grid position) of the two plans;
- end to end: greedy answers of the float32 and the quantized export.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from holitom.calibration.compare import cosine
from holitom.calibration.graphs import layer_outputs

REPORT_PNG = "calibration_report.png"


@dataclass
class CalibrationReport:
    layer_cosine: dict[str, float] = field(default_factory=dict)  # layer -> mean over clips
    windows_identical: float | None = None  # share of clips whose temporal windows are identical
    kept_overlap: float | None = None  # mean |kept fp32 & kept int8| / max(|kept fp32|, |kept int8|)
    answers_identical: float | None = None  # share of clips with identical greedy token ids
    answer_prefix: float | None = None  # mean share of the float32 answer's tokens matched before the first difference
    clips: int = 0
    preset: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        out = [f"calibration report ({self.clips} clips, preset {self.preset}):"]
        if self.layer_cosine:
            out.append("  vision tower, cosine INT8 vs float32: " + ", ".join(f"{k} {v:.4f}" for k, v in self.layer_cosine.items()))
        if self.windows_identical is not None:
            out.append(f"  HoliTom decisions: temporal windows identical on {self.windows_identical:.0%} of clips, kept-token overlap {self.kept_overlap:.1%}")
        if self.answers_identical is not None:
            out.append(f"  end to end: identical greedy answers on {self.answers_identical:.0%} of clips, matched prefix {self.answer_prefix:.1%}")
        return out


def _with_outputs(path: Path, names: list[str]):
    """The graph at ``path`` with ``names`` added as graph outputs (a session over it returns them)."""
    import onnx

    model = onnx.load(str(path))
    present = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in present)
    return model


def layer_cosine(float_path: Path, quant_path: Path, batches: list[torch.Tensor]) -> dict[str, float]:
    """Mean over ``batches`` (pixel_values) of each vision layer's output cosine, INT8 vs float32."""
    import onnx
    import onnxruntime as ort

    layers = layer_outputs(onnx.load(str(float_path), load_external_data=False))
    sums = dict.fromkeys(layers, 0.0)
    sessions = [ort.InferenceSession(_with_outputs(p, list(layers.values())).SerializeToString()) for p in (float_path, quant_path)]
    names = list(layers.values())
    for pixel_values in batches:
        ref, got = (s.run(names, {"pixel_values": pixel_values.numpy()}) for s in sessions)
        for label, r, g in zip(layers, ref, got):
            sums[label] += cosine(torch.from_numpy(g), torch.from_numpy(r))
    return {label: s / max(len(batches), 1) for label, s in sums.items()}


def decision_agreement(pairs: list[tuple[dict, dict]], merge, grid: tuple[int, int], layout: str) -> tuple[float, float]:
    """(share of clips with identical windows, mean kept-token overlap) of float32 vs INT8 vision outputs."""
    from holitom.merge.outer import plan_outer_merge

    same_windows, overlaps = 0, []
    for want, got in pairs:
        plans = [plan_outer_merge(v["features"], v["attention"], merge, grid, layout) for v in (want, got)]  # (F, P, D), (F, P)
        same_windows += bool(torch.equal(plans[0].windows, plans[1].windows))
        kept = [
            {(int(f), int(p)) for f, p in zip(plan.frame_index.tolist(), plan.position_index.tolist()) if p >= 0}
            for plan in plans
        ]
        overlaps.append(len(kept[0] & kept[1]) / max(len(kept[0]), len(kept[1]), 1))
    return same_windows / len(pairs), sum(overlaps) / len(overlaps)


def answer_agreement(want: list[list[int]], got: list[list[int]]) -> tuple[float, float]:
    """(share of identical token sequences, mean matched-prefix share of the float32 answer)."""
    identical = sum(a == b for a, b in zip(want, got)) / len(want)
    prefixes = []
    for a, b in zip(want, got):
        n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        prefixes.append(n / max(len(a), 1))
    return identical, sum(prefixes) / len(prefixes)


def write_png(report: CalibrationReport, path: Path) -> Path:
    """Per-layer cosine bars with the decision and answer agreement in the title (matplotlib, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.0, 0.5 * len(report.layer_cosine) + 2), 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    labels = list(report.layer_cosine)
    values = [report.layer_cosine[k] for k in labels]
    ax.bar(range(len(values)), [max(1 - v, 1e-9) for v in values], color="tab:blue")  # log axis: no zeros
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("1 - cosine (INT8 vs float32)")
    title = [f"vision tower INT8, {report.clips} clips"]
    if report.windows_identical is not None:
        title.append(f"windows identical {report.windows_identical:.0%}, kept overlap {report.kept_overlap:.1%}")
    if report.answers_identical is not None:
        title.append(f"answers identical {report.answers_identical:.0%}")
    ax.set_title("; ".join(title), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
