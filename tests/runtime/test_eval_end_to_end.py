"""`holitom eval` on a small slice of the held-out split, end to end (torch on the checkpoint, onnxruntime on an export)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from holitom.errors import ConfigError
from holitom.eval.config import EvalConfig
from holitom.eval.report import JSON_NAME, PLOT_NAME
from holitom.eval.runner import run_eval
from holitom.eval.scoring import score_sheet
from holitom.eval.videoqa import make_items

ITEMS = 2


@pytest.fixture(scope="module")
def torch_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    proc = subprocess.run(
        [sys.executable, "-m", "holitom.cli", "eval", "--items", str(ITEMS), "--backends", "torch", "--methods", "vanilla,holitom,holitom-outer,topk,fastv",
         "--ratios", "0.15", "--out", str(out), "--json", "--quiet"],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (out / PLOT_NAME).stat().st_size > 0
    assert json.loads((out / JSON_NAME).read_text())["rows"] == result["rows"]
    return result


def test_rows_scores_and_flops(torch_result):
    rows = {r["id"]: r for r in torch_result["rows"]}
    assert set(rows) == {"torch/vanilla", "torch/holitom@r15", "torch/holitom-outer@r15", "torch/topk@r15", "torch/fastv@r15"}
    items = make_items("test", ITEMS)
    for r in rows.values():
        assert r["accuracy"] == score_sheet(items, r["answers"]).accuracy  # the reported score is the sheet's
    vanilla, holitom, outer = rows["torch/vanilla"], rows["torch/holitom@r15"], rows["torch/holitom-outer@r15"]
    assert vanilla["flops"]["pct_of_vanilla"] == 1.0
    assert holitom["flops"]["pct_of_vanilla"] < outer["flops"]["pct_of_vanilla"] < 0.5
    assert holitom["tokens"]["after_inner"] < holitom["tokens"]["after_outer"] == outer["tokens"]["after_outer"] < vanilla["tokens"]["after_outer"]


def test_onnxruntime_on_an_export_gives_the_torch_answers(default_export, torch_result):
    result = run_eval(EvalConfig(model=str(default_export), items=ITEMS, methods=("vanilla", "holitom"), ratios=(0.15,)), log=None)
    assert [r["backend"] for r in result["rows"]] == ["onnxruntime", "onnxruntime"]  # an export runs on onnxruntime only
    torch_rows = {r["id"].split("/")[1]: r for r in torch_result["rows"]}
    for r in result["rows"]:
        assert r["answers"] == torch_rows[r["id"].split("/")[1]]["answers"], r["id"]


def test_bad_settings_are_refused(default_export):
    with pytest.raises(ConfigError, match="export folder"):
        run_eval(EvalConfig(model=str(default_export), backends=("torch",), items=1), log=None)
    with pytest.raises(ConfigError, match="unknown methods"):
        EvalConfig(methods=("holitom", "magic"))
    with pytest.raises(ConfigError, match="no preset"):
        EvalConfig(ratios=(0.3,))
    proc = subprocess.run([sys.executable, "-m", "holitom.cli", "eval", "--split", "dev"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "split 'dev'" in proc.stderr and "Traceback" not in proc.stderr


def test_a_method_that_cannot_meet_the_budget_is_reported_as_skipped():
    import io

    from holitom.eval.report import print_table

    result = run_eval(EvalConfig(items=1, backends=("torch",), methods=("vanilla", "evs"), ratios=(0.1,)), log=None)
    assert [r["id"] for r in result["rows"]] == ["torch/vanilla"]
    assert [s["id"] for s in result["skipped"]] == ["torch/evs@r10"]  # EVS keeps frame 0: 196 > 0.1 * 8 * 196
    assert "frame 0" in result["skipped"][0]["reason"]
    text = io.StringIO()
    print_table(result, file=text)
    assert "skipped torch/evs@r10" in text.getvalue()


def test_the_plot_of_a_run_without_vanilla_places_no_row(tmp_path, recwarn):
    """Without a vanilla row no FLOPs share exists: the figure says so instead of plotting rows at an x of 0 on a log axis."""
    from holitom.eval.report import plot_accuracy_vs_flops

    rows = [{"method": "holitom", "label": label, "accuracy": 0.5, "flops": {"pct_of_vanilla": None}} for label in ("onnxruntime", "onnxruntime[int8]")]
    result = {"rows": rows, "benchmark": {"items": [{}] * 3}, "settings": {"frames": 8}}
    path = plot_accuracy_vs_flops(result, tmp_path / PLOT_NAME)
    assert path.stat().st_size > 0
    assert not [w for w in recwarn if "log-scaled" in str(w.message)]


def test_the_embedded_default_answers_far_above_guessing():
    """The shipped weights are the trained ones: a random model answers almost nothing, guessing scores about 31%.

    Measured on these 70 held-out items (10 per type): the model of 2026-12-05 answers
    47 of them right (67.1%). Greedy answers on float32 weights: the same on every run of one machine.
    """
    result = run_eval(EvalConfig(items=70, backends=("torch",), methods=("vanilla",)), log=None)
    accuracy, chance = result["rows"][0]["accuracy"], result["benchmark"]["chance_accuracy"]
    assert chance == pytest.approx(0.308, abs=1e-3)
    assert accuracy >= 1.5 * chance, f"the embedded default answers {accuracy:.1%} of 70 held-out items, guessing {chance:.1%}"
