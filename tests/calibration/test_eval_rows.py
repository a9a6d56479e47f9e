"""`holitom eval --export`: a quantized export's onnxruntime rows beside the float32 ones, in one table."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from holitom.errors import ConfigError

ITEMS = 2


@pytest.fixture(scope="module")
def eval_result(float_export, int8_result):
    """One in-process `holitom eval --export` run, its --json output."""
    from holitom.eval.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--model", str(float_export), "--export", str(int8_result.out), "--items", str(ITEMS),
                     "--methods", "vanilla,holitom", "--ratios", "0.1", "--frames", "4", "--json", "--quiet"])
    assert code == 0
    return json.loads(out.getvalue())


def test_rows_of_each_precision(eval_result, int8_result):
    rows = {r["id"]: r for r in eval_result["rows"]}
    assert set(rows) == {"onnxruntime/vanilla", "onnxruntime/holitom@r10", "onnxruntime[int8]/vanilla", "onnxruntime[int8]/holitom@r10"}
    for rid, r in rows.items():
        quantized = rid.startswith("onnxruntime[int8]")
        assert r["backend"] == "onnxruntime"
        assert (r["precision"], r["export"]) == (("int8", str(int8_result.out)) if quantized else (None, None))
        assert r["label"] == rid.split("/")[0]
        assert r["total"] == ITEMS and len(r["answers"]) == ITEMS
        ref = rows[rid.replace("[int8]", "")]
        if quantized:
            assert r["pct_of_float32"] == (None if not ref["accuracy"] else pytest.approx(r["accuracy"] / ref["accuracy"]))
        else:
            assert "pct_of_float32" not in r
    # Each export's vanilla row is its own rows' reference.
    assert rows["onnxruntime[int8]/vanilla"]["flops"]["pct_of_vanilla"] == 1.0


def test_agreement_pairs_float32_with_int8(eval_result):
    rows = {r["id"]: r for r in eval_result["rows"]}
    got = {(a["method"], tuple(a["rows"])): a for a in eval_result["agreement"]}
    assert set(got) == {("vanilla", ("onnxruntime", "onnxruntime[int8]")), ("holitom", ("onnxruntime", "onnxruntime[int8]"))}
    for (method, _), a in got.items():
        suffix = "@r10" if method == "holitom" else ""
        want, have = rows[f"onnxruntime/{method}{suffix}"]["answers"], rows[f"onnxruntime[int8]/{method}{suffix}"]["answers"]
        assert a["same"] == sum(want[k] == have[k] for k in want) and a["total"] == ITEMS


def test_int8_rows_answer_as_the_int8_export_does(eval_result, int8_result, tmp_path):
    from holitom.eval.videoqa import make_items, write_clip
    from holitom.runtime import GenerationConfig, RuntimeConfig, load_pipeline

    item = make_items("test", 1)[0]
    clip = write_clip(item, tmp_path)
    with load_pipeline(int8_result.out, RuntimeConfig(backend="onnxruntime", preset="r10", num_frames=4)) as pipe:
        answer = pipe.run(clip, item.prompt, 4, GenerationConfig(max_new_tokens=8)).answer
    row = next(r for r in eval_result["rows"] if r["id"] == "onnxruntime[int8]/holitom@r10")
    assert row["answers"][item.item_id] == answer


def test_table_labels_the_precision(eval_result):
    from holitom.eval.report import print_table

    text = io.StringIO()
    print_table(eval_result, file=text)
    lines = text.getvalue().splitlines()
    assert any(line.split()[:3] == ["onnxruntime[int8]", "0.10", "holitom"] for line in lines)
    assert any(line.startswith("onnxruntime vs onnxruntime[int8], holitom@r0.10: same answer on") for line in lines)


def test_export_of_another_model_or_no_export_is_refused(float_export, int8_result, tmp_path):
    from holitom.eval.config import EvalConfig
    from holitom.eval.runner import plan
    from holitom.sources import ModelSource

    config = EvalConfig(model=str(float_export), export=str(int8_result.out), items=1, methods=("holitom",), ratios=(0.1,))
    with pytest.raises(ConfigError, match="was made from"):
        plan(config, ModelSource("checkpoint", tmp_path))
    with pytest.raises(ConfigError, match="must be an export folder"):
        EvalConfig(model=str(float_export), export=str(int8_result.manifest.source["path"]), items=1)
