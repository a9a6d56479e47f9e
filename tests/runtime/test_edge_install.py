"""The edge install: a virtualenv with only the base install (no torch, no transformers) runs an export
folder made by the full install and gives the full install's greedy answers.

The virtualenv is built once per session from this checkout (``pip install ROOT``, its base
dependencies from the package index, about a minute and a half); the export folders are the session's
own. Each setting (merging off, outer merge only, full HoliTom) runs on several generated clips in ONE
edge process, which reports at its end whether torch or transformers were ever imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = [("none", True), ("r15", False), ("r15", True)]
FRAMES = 6
PROMPT = "What is moving? <video> Answer briefly."
DRIVER = Path(__file__).with_name("edge_driver.py")  # runs the jobs in a fresh process of either install


@pytest.fixture(scope="session")
def edge_python(tmp_path_factory) -> Path:
    """A fresh virtualenv holding only ``pip install ROOT`` (the base install)."""
    env = tmp_path_factory.mktemp("edge") / "venv"
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT)], capture_output=True, text=True
    )
    assert proc.returncode == 0, f"pip install of the base package failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format", "json"], capture_output=True, text=True, check=True).stdout
    names = {p["name"].lower() for p in json.loads(listed)}
    assert not names & {"torch", "transformers", "torchvision", "onnx"}, f"the base install pulled in {names & {'torch', 'transformers', 'onnx'}}"
    return python


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> list[Path]:
    from holitom.video import make_frames, write_video

    d = tmp_path_factory.mktemp("edge_clips")
    shapes = [(20, 120, 160, 10), (9, 90, 200, None), (30, 240, 180, 7)]  # (frames, height, width, scene cut)
    return [write_video(d / f"clip{i}.mp4", make_frames(n, h, w, seed=11 + i, scene_cut_at=cut), fps=8) for i, (n, h, w, cut) in enumerate(shapes)]


def _answers(python: Path, jobs: list, cwd: Path) -> dict:
    # cwd away from the checkout: the edge process must import the installed package, not the source tree.
    proc = subprocess.run([str(python), str(DRIVER), json.dumps(jobs)], capture_output=True, text=True, cwd=str(cwd))
    assert proc.returncode == 0, f"{python} failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_edge_install_gives_the_full_install_answers_without_torch(edge_python, default_export, llava_video_export, clips):
    jobs = [
        [str(model), preset, inner, str(clip), FRAMES, PROMPT]
        for model in (default_export, llava_video_export)
        for preset, inner in SETTINGS
        for clip in clips
    ]
    edge, full = _answers(edge_python, jobs, clips[0].parent), _answers(Path(sys.executable), jobs, clips[0].parent)
    assert edge["heavy"] == [] and full["heavy"] == [], f"imported: edge {edge['heavy']}, full install {full['heavy']}"
    full = full["answers"]
    for job, got, want in zip(jobs, edge["answers"], full):
        assert got == want, f"edge and full install differ on {job}: {got} != {want}"
    # The llava-video test model's answers are not one repeated token: the comparison can tell runs apart.
    assert len({tuple(a["token_ids"]) for a in full}) > 1


def test_edge_cli_refuses_what_needs_an_extra(edge_python, tmp_path):
    """Commands that need an extra ([export], [bench], [calibrate]) say which, on one line, and exit 2."""
    for argv, extra in (
        (["export", "--model", "default", "--out", str(tmp_path / "out")], "export"),
        (["bench"], "bench"),
        (["eval"], "export"),
        (["calibrate", str(tmp_path), "--out", str(tmp_path / "int8"), "--videos", str(tmp_path)], "calibrate"),
        (["run", "--model", "default", "--backend", "torch", "--video", "x.mp4", "--prompt", "hi"], "export"),
    ):
        proc = subprocess.run([str(edge_python.parent / "holitom"), *argv], capture_output=True, text=True, cwd=str(tmp_path))
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and f'pip install "holitom-deploy[{extra}]"' in lines[0], proc.stderr


def test_cli_run_on_an_export_imports_no_torch(default_export, clip_path):
    """`holitom run` on an export folder (onnxruntime is the default backend there) in the full install."""
    code = (
        "import sys\n"
        "from holitom.cli import main\n"
        f"rc = main(['run', '--model', {str(default_export)!r}, '--video', {str(clip_path)!r}, '--prompt', 'hi', "
        f"'--frames', '{FRAMES}', '--max-new-tokens', '3', '--json'])\n"
        "print(rc, ','.join(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "0", proc.stdout
