"""scripts/sweep_max_window.py: HoliTom rows with bounded temporal windows, checked against the paper presets."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from script_modules import load_script  # tests/ helper (tests/conftest.py puts it on sys.path)

from holitom.eval.videoqa import NUM_FRAMES
from holitom.limits import PAPER_RETAIN_PERCENTS
from holitom.merge import config as config_module


@pytest.fixture
def sweep(monkeypatch):
    # The script registers presets; a copy of the registry keeps them out of the other tests.
    monkeypatch.setattr(config_module, "_PRESETS", dict(config_module._PRESETS))
    return load_script("sweep_max_window")


def test_each_window_is_the_paper_preset_with_only_its_window_bounded(sweep):
    from holitom.bench.config import method_specs
    from holitom.merge import get_preset

    assert sweep.register_windowed_presets([3, 5]) == ["holitom_w3_outer", "holitom_w3", "holitom_w5_outer", "holitom_w5"]
    specs = method_specs()
    for window in (3, 5):
        for family, paper in (("holitom_w{}", "r{}"), ("holitom_w{}_outer", "r{}-outer")):
            assert specs[family.format(window)].backends == ("torch",)
            for pct in PAPER_RETAIN_PERCENTS:
                got = dataclasses.asdict(get_preset(f"{family.format(window)}-r{pct}"))
                want = dataclasses.asdict(get_preset(paper.format(pct)))
                assert want["max_window"] is None and got.pop("max_window") == window
                want.pop("max_window")
                assert got == want


def test_rows_of_one_frame_windows_and_of_windows_as_long_as_the_clip(sweep, capsys):
    """W >= frames is the paper's unbounded setting: same tokens, same answers. W = 1 merges nothing over
    time, so every position is dynamic and each frame keeps ceil(P * r) tokens (DESIGN.md stage II)."""
    rc = sweep.main(["--windows", f"1,{NUM_FRAMES}", "--methods", "holitom-outer,holitom", "--items", "3",
                     "--backends", "torch", "--ratios", "0.1", "--threads", "1", "--json", "--quiet"])
    assert rc == 0
    rows = {r["method"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert sorted(rows) == sorted(["holitom-outer", "holitom", "holitom_w1_outer", "holitom_w1",
                                   f"holitom_w{NUM_FRAMES}_outer", f"holitom_w{NUM_FRAMES}"])
    for paper, bounded in (("holitom-outer", f"holitom_w{NUM_FRAMES}_outer"), ("holitom", f"holitom_w{NUM_FRAMES}")):
        assert rows[bounded]["answers"] == rows[paper]["answers"]
        assert rows[bounded]["tokens"] == rows[paper]["tokens"]
    per_frame = math.ceil(14 * 14 * 0.1)  # 196 tokens a frame after pooling, all dynamic
    assert rows["holitom_w1_outer"]["tokens"]["after_outer"] == NUM_FRAMES * per_frame + 1  # + the newline token
    assert rows["holitom_w1"]["tokens"]["after_outer"] == NUM_FRAMES * per_frame + 1
    assert rows["holitom_w1"]["tokens"]["after_inner"] < rows["holitom_w1"]["tokens"]["after_outer"]
    # the paper's windows do merge over time on these clips, so W = 1 is a different plan
    assert rows["holitom-outer"]["tokens"]["after_outer"] != rows["holitom_w1_outer"]["tokens"]["after_outer"]


@pytest.mark.parametrize("argv, message", [
    (["--windows", "0"], "--windows takes a comma list"),
    (["--windows", "a,b"], "--windows takes a comma list"),
    (["--windows", ""], "--windows takes a comma list"),
    (["--backends", "onnxruntime"], "run on the torch backend only"),  # the W rows would be left out without a word
    (["--backends", " , "], "--backends is empty"),
])
def test_bad_flags_are_usage_errors(sweep, capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        sweep.main(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_backends_are_read_as_holitom_eval_reads_them(sweep, monkeypatch):
    import holitom.eval.cli

    seen = []
    monkeypatch.setattr(holitom.eval.cli, "main", lambda argv, prog: seen.append(argv) or 0)
    assert sweep.main(["--windows", "2", "--backends", "onnxruntime, torch", "--items", "1"]) == 0
    assert seen == [["--items", "1", "--backends", "onnxruntime, torch", "--methods", "vanilla,holitom-outer,holitom,holitom_w2_outer,holitom_w2"]]
