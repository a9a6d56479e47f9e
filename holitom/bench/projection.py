"""Full-depth projection of a layer-trimmed benchmark: the model's real depth from runs at two depths.

An architecture preset trimmed to a few layers (``--vision-layers 1 --text-layers 2``)
keeps the real widths, so each layer costs what it costs in the real model, but the
ratios between rows are those of a shallow model: the fixed costs (video decoding,
the merge, the embedding and LM head) weigh far more than at 26 vision and 24 / 28
decoder layers. Each depth-dependent stage is linear in its layer count::

    t(L) = fixed + L * per_layer

so two runs at depths ``L_a != L_b`` give ``per_layer = (t_b - t_a) / (L_b - L_a)`` and
``fixed = t_a - L_a * per_layer``, and the projection is ``fixed + L_real * per_layer``.
``vision`` scales with the vision layers; ``prefill`` and the time per decoded token
with the decoder layers; ``decode_video`` and ``merge`` do not depend on depth and keep
the first run's values. The result is arithmetic on measurements, not a measurement:
reports label it as a projection. Each projected row also carries its physical floor
(:mod:`holitom.bench.floor`) from the FLOPs at the real depth, which the caller moves
there by the closed forms (matmul FLOPs are exactly linear in the layers). (For HoliTom rows the inner-merge layer K moves with
the depth, so their prefill line is the trimmed models' split extrapolated.)

Torch-free: it works on plain dicts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Stage -> the layer stack its time scales with.
DEPTH_OF_STAGE = {"vision": "vision", "prefill": "text"}
DEPTH_FREE_STAGES = ("decode_video", "merge")
LABEL = "projection to the real depth from runs at two depths (arithmetic on measurements, not measured)"


@dataclass(frozen=True)
class Depths:
    """Vision encoder layers and decoder layers of one model."""

    vision: int
    text: int

    def of(self, stack: str) -> int:
        return getattr(self, stack)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def probe_depths(measured: Depths, real: Depths) -> Depths | None:
    """The second depth to time: one more vision layer and two more decoder layers, never past the real depth.

    A stack already at its real depth stays there (it needs no projection). Returns
    None when nothing is trimmed.
    """
    if measured.vision >= real.vision and measured.text >= real.text:
        return None
    return Depths(
        vision=min(measured.vision + 1, real.vision) if measured.vision < real.vision else measured.vision,
        text=min(measured.text + 2, real.text) if measured.text < real.text else measured.text,
    )


def linear_fit(t_a: float, t_b: float, l_a: int, l_b: int) -> tuple[float, float]:
    """``(per_layer, fixed)`` of the line through ``(l_a, t_a)`` and ``(l_b, t_b)``; ``l_a != l_b``."""
    per_layer = (t_b - t_a) / (l_b - l_a)
    return per_layer, t_a - l_a * per_layer


def _project(t_a: float, t_b: float, stack: str, a: Depths, b: Depths, real: Depths) -> dict[str, float]:
    l_a, l_b, l_real = a.of(stack), b.of(stack), real.of(stack)
    if l_a == l_b:  # this stack is not trimmed: both runs measured it at the real depth
        return {"per_layer_ms": None, "fixed_ms": None, "projected_ms": t_a}
    per_layer, fixed = linear_fit(t_a, t_b, l_a, l_b)
    return {"per_layer_ms": per_layer, "fixed_ms": fixed, "projected_ms": fixed + l_real * per_layer}


def project_row(timings_a: dict, timings_b: dict, decode_a: float, decode_b: float, a: Depths, b: Depths, real: Depths) -> dict[str, Any]:
    """One row's projection from its run at depths ``a`` (timings, decode tokens/s) and at ``b``."""
    stages = {name: _project(timings_a[name], timings_b[name], stack, a, b, real) for name, stack in DEPTH_OF_STAGE.items()}
    # Decoding: the time per token is what scales with the layers (tokens/s does not).
    stages["decode_per_token"] = _project(1e3 / decode_a, 1e3 / decode_b, "text", a, b, real)
    timings = {name: timings_a[name] for name in DEPTH_FREE_STAGES}
    timings.update({name: stages[name]["projected_ms"] for name in DEPTH_OF_STAGE})
    timings["ttft"] = sum(timings[name] for name in (*DEPTH_FREE_STAGES, *DEPTH_OF_STAGE))
    per_token = stages["decode_per_token"]["projected_ms"]
    return {
        "timings_ms": timings,
        "decode_tokens_per_s": 1e3 / per_token if per_token > 0 else None,
        "stages": stages,
    }


def _speedup(base: float | None, row: float | None) -> float | None:
    if base is None or row is None or row <= 0:
        return None
    return base / row


def project(
    rows_a: list[dict],
    rows_b: dict[str, dict],
    a: Depths,
    b: Depths,
    real: Depths,
    baseline_id: str | None,
    flops: dict[str, dict] | None = None,
    rate: float | None = None,
) -> dict[str, Any]:
    """The projection block of a result.

    Args:
        rows_a: the result rows measured at depths ``a`` (``id``, ``timings_ms``, ``decode_tokens_per_s``).
        rows_b: the same rows measured at depths ``b``, by id.
        baseline_id: the transformers row ratios are taken against (None: no ratios).
        flops: per row id, the ``vision`` and ``prefill`` FLOPs at the real depth (None: FLOPs
            were not counted); with ``rate`` (FLOP/s) each projected row gets a ``floor``
            (:func:`holitom.bench.floor.row_floor`).
    """
    from holitom.bench.floor import NO_FLOPS_REASON, row_floor

    rows = {}
    for row in rows_a:
        probe = rows_b[row["id"]]
        rows[row["id"]] = project_row(
            row["timings_ms"], probe["timings_ms"], row["decode_tokens_per_s"], probe["decode_tokens_per_s"], a, b, real
        )
        rows[row["id"]]["probe_timings_ms"] = probe["timings_ms"]
        rows[row["id"]]["probe_decode_tokens_per_s"] = probe["decode_tokens_per_s"]
        stage_flops = (flops or {}).get(row["id"], {"vision": None, "prefill": None})
        rows[row["id"]]["floor"] = row_floor(rows[row["id"]]["timings_ms"], stage_flops, rate, None if flops is not None else NO_FLOPS_REASON)
    base = rows.get(baseline_id) if baseline_id is not None else None
    for projected in rows.values():
        tm, bt = projected["timings_ms"], (base or {}).get("timings_ms", {})
        projected["vs_transformers"] = None if base is None else {
            "ttft_speedup": _speedup(bt.get("ttft"), tm["ttft"]),
            "vision_speedup": _speedup(bt.get("vision"), tm["vision"]),
            "prefill_speedup": _speedup(bt.get("prefill"), tm["prefill"]),
            "decode_speedup": _speedup(projected["decode_tokens_per_s"], base["decode_tokens_per_s"]),
        }
    return {"label": LABEL, "depths": {"measured": a.to_dict(), "probe": b.to_dict(), "real": real.to_dict()}, "rows": rows}


__all__ = ["DEPTH_FREE_STAGES", "DEPTH_OF_STAGE", "Depths", "LABEL", "linear_fit", "probe_depths", "project", "project_row"]
