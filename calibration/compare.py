"""A quantized graph against its float32 original on the runtime's own feeds: per-output cosine and max error.

Quantization changes every value a little, so float32's allclose tolerances do
not apply; each output instead has an explicit floor on its cosine similarity to
the float32 output (the direction of a feature vector, what the next layer reads)
and a cap on its max abs error relative to the float32 output's largest magnitude.
Both are per precision and were set from the default model's measured values
(in the comments) with margin; a graph outside them fails the calibration.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from holitom.errors import ExportError

from holitom.calibration.config import INT4, INT8

# precision -> output -> (minimum cosine, maximum abs error / max |float32 output|).
# Measured (MinMax, whole 4-8 frame clips): the default model, vision int8 features cos 0.969 / rel error 0.31,
# attention 0.981 / 0.45; decoder int8 >= 0.9998 / 0.02. The tests' LLaVA-Video model (weights 4x the init
# scale, so sharper softmaxes): decoder int8 attn_row 0.9944 / 0.135, decode logits 0.998 / 0.112.
# Float32-vs-float32 parity is the exporter's job (holitom.runtime.validate, allclose); these bound quantization.
_DECODER_INT8, _DECODER_INT4 = (0.99, 0.2), (0.95, 0.4)
TOLERANCES: dict[str, dict[str, tuple[float, float]]] = {
    INT8: {
        "features": (0.95, 0.5),
        "attention": (0.95, 0.6),
        **{name: _DECODER_INT8 for name in ("hidden_states", "attn_row", "logits", "present")},
    },
    INT4: {name: _DECODER_INT4 for name in ("hidden_states", "attn_row", "logits", "present")},
}


@dataclass
class OutputAgreement:
    stage: str
    output: str
    precision: str
    cosine: float  # worst over the calls
    max_abs_error: float  # worst over the calls
    reference_max_abs: float
    min_cosine: float
    max_error: float  # the allowed max abs error: relative cap x reference_max_abs
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"{self.stage}/{self.output} [{self.precision}]: cosine {self.cosine:.5f} (>= {self.min_cosine}), "
            f"max abs error {self.max_abs_error:.3e} (<= {self.max_error:.3e}) {verdict}"
        )


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two tensors taken as flat vectors, in float64 (1.0 for two zero tensors)."""
    a, b = a.double().flatten(), b.double().flatten()
    na, nb = a.norm(), b.norm()
    if na == 0 and nb == 0:
        return 1.0
    return float((a @ b) / (na * nb).clamp_min(1e-300))


def _key(output: str) -> str:
    return "present" if output.startswith("present.") else output


def agreement(stage: str, precision: str, got: list[dict], want: list[dict]) -> list[OutputAgreement]:
    """Compare each output over matching calls (quantized ``got`` vs float32 ``want``)."""
    rows = []
    for name in want[0]:
        min_cos, rel = TOLERANCES[precision][_key(name)]
        cos = min(cosine(g[name], w[name]) for g, w in zip(got, want))
        err = max(float((g[name].double() - w[name].double()).abs().max()) for g, w in zip(got, want))
        ref = max(float(w[name].abs().max()) for w in want)
        rows.append(OutputAgreement(stage, name, precision, cos, err, ref, min_cos, rel * ref, cos >= min_cos and err <= rel * ref))
    return rows


def run_graph(path: Path, stage: str, dims, feeds: list[dict], details: dict | None = None) -> list[dict]:
    """Outputs of the graph at ``path`` (quantized as ``details`` say) for each feed, through the onnxruntime backend's runner."""
    from holitom import contracts as C
    from holitom.runtime.backends.onnxruntime.loader import providers_for, session_from_file, settings_for
    from holitom.runtime.backends.onnxruntime.runner import OnnxrtRunner
    from holitom.runtime.validate import as_torch

    spec = C.stage_specs(dims)[stage]
    runner = OnnxrtRunner(spec, lambda: session_from_file(path, providers_for("cpu"), spec, settings_for(details))).activate()
    try:
        # Copies: a runner may return buffers that its next call rewrites (the KV-buffer decode step's logits).
        return [as_torch({name: np.array(value) for name, value in runner.infer(feed).items()}) for feed in feeds]
    finally:
        runner.deactivate()


def check_agreement(rows: list[OutputAgreement]) -> None:
    """ExportError listing every output outside its tolerance."""
    failed = [r for r in rows if not r.passed]
    if failed:
        raise ExportError(
            f"the quantized graphs drift too far from float32 on {len(failed)} output(s): " + "; ".join(r.line() for r in failed)
            + ". Try another --method, more --calibration-frames, or a wider precision (--decoder int8, --vision float32)."
        )
