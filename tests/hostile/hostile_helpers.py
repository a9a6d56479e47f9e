"""Helpers of the hostile-input suite (tests/hostile/conftest.py puts this folder on sys.path): run the CLI as a user would and hold it to the error contract.

Every refused command must exit 2 with exactly one stderr line (``holitom CMD: error: ...``),
no traceback, within a time bound, and must leave its working directory exactly as
it found it. Subprocess cases run concurrently (:func:`run_cli_cases`), since most of
a case's time is the interpreter start and the imports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from holitom.default_model import default_model_dir
from holitom.export.cache import OWN_EXPORT_ATTENTION
from holitom.paths import STAGING_INFIX

# Generous: the machine is shared and slow; a hang is minutes, a model load seconds.
CLI_TIMEOUT_S = 180
# An export traces five graphs: half a minute alone, many minutes on a machine shared by a dozen processes.
EXPORT_TIMEOUT_S = 1200
# Child processes: one thread each, so concurrent cases do not spin against each other.
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": ""}


@dataclass
class CliResult:
    args: tuple
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    cwd: Path
    before: dict = field(default_factory=dict)
    max_rss_mb: float | None = None  # peak resident memory of a subprocess
    imported_torch: bool | None = None  # whether a subprocess imported torch before it ended

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder`` (hidden ones too) with its kind, size and modification time."""
    out = {}
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            p = Path(root) / name
            st = p.lstat()
            out[str(p.relative_to(folder))] = (st.st_mode >> 12, st.st_size if not p.is_dir() else 0, st.st_mtime_ns)
    return out


def cli(*args, cwd: Path, env: dict | None = None, timeout: float = CLI_TIMEOUT_S) -> CliResult:
    """Run ``holitom ARGS`` in ``cwd`` (a fresh folder); record what it left there, its peak memory and imports."""
    fd, report = tempfile.mkstemp(prefix="hostile-report-", suffix=".json")  # outside cwd: cwd must stay untouched
    os.close(fd)
    full_env = {**os.environ, **CHILD_ENV, **(env or {}), "HOSTILE_REPORT": report}
    before = snapshot(cwd)
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", REPORTING_DRIVER, *map(str, args)], cwd=cwd, env=full_env, capture_output=True, timeout=timeout,
        )
        seconds = time.perf_counter() - start
        data = json.loads(Path(report).read_text() or "{}")
    finally:
        os.unlink(report)
    result = CliResult(tuple(args), proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"), seconds, cwd, before)
    result.max_rss_mb, result.imported_torch = data.get("peak_mb"), data.get("torch")
    return result


def cli_in_process(*args, cwd: Path, env: dict | None = None, capsys, monkeypatch) -> CliResult:
    """``holitom.cli.main(ARGS)`` in this process (the same code path as the command, without an interpreter start).

    Any exception other than the CLI's own exit would propagate and fail the test: that is the "no traceback" check.
    """
    from holitom.cli import main

    monkeypatch.chdir(cwd)
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    before = snapshot(cwd)
    capsys.readouterr()
    start = time.perf_counter()
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    seconds = time.perf_counter() - start
    out = capsys.readouterr()
    return CliResult(tuple(args), code, out.out, out.err, seconds, cwd, before)


def assert_refused(result: CliResult, pattern: str, max_seconds: float = CLI_TIMEOUT_S, leaves: Callable[[dict], bool] | None = None) -> None:
    """Exit 2, one ``holitom CMD: error:`` line matching ``pattern``, no traceback, in time, nothing left behind."""
    command = next((a for a in result.args if not str(a).startswith("-")), "")
    lines = result.stderr_lines
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1, lines
    # The subcommand's prefix; unknown flags are reported by the top-level parser as "holitom: error:".
    assert lines[0].startswith((f"holitom {command}: error: ", "holitom: error: ")), lines[0]
    assert re.search(pattern, lines[0]), (pattern, lines[0])
    assert result.seconds < max_seconds, f"took {result.seconds:.1f} s"
    after = snapshot(result.cwd)
    assert after == result.before, sorted(set(after) ^ set(result.before))


def run_cli_cases(cases: dict[str, tuple], root: Path, workers: int = 4) -> dict[str, CliResult]:
    """Run ``{case id: (setup(cwd) -> args, env)}`` concurrently, each in its own fresh folder under ``root``."""

    def one(item):
        case_id, (setup, env) = item
        cwd = root / case_id
        cwd.mkdir()
        args = setup(cwd)
        return case_id, cli(*args, cwd=cwd, env=env)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(pool.map(one, cases.items()))


def copy_default_checkpoint(dst: Path, **config_changes) -> Path:
    """The embedded default model copied to ``dst``, with ``text_config`` entries changed."""
    shutil.copytree(default_model_dir(), dst)
    if config_changes:
        cfg = json.loads((dst / "config.json").read_text())
        cfg["text_config"].update(config_changes)
        (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    return dst


def write_manifest(folder: Path, data: dict) -> None:
    (folder / "manifest.json").write_text(json.dumps(data, indent=2))


def read_manifest_json(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


# In the attention form of the runtime's own cache exports: CACHE_DRIVER reuses these graphs for one, and the
# onnxruntime form's decode step has another I/O (KV buffers) than the standard one.
EXPORT = ("export", "--model", "default", "--preset", "none", "--no-validate", "--attention", OWN_EXPORT_ATTENTION)
# The runtime's own cache export on the real code path (ensure_export -> export_model -> staging -> move into
# place, then a real onnxruntime run), with one preset, no validation, and each stage's graph taken from an
# existing export ($HOSTILE_GRAPHS) instead of being traced again (the merge graph of 'none' is exported for real).
CACHE_DRIVER = textwrap.dedent(
    """
    import os, sys
    import onnx
    from holitom.export import exporter
    from holitom.runtime import validate
    exporter.PAPER_PRESETS = ("none",)
    validate.validate_export = lambda *args, **kwargs: []
    exporter.export_module = lambda module, args, spec, opset: onnx.load(os.path.join(os.environ["HOSTILE_GRAPHS"], spec.name + ".onnx"))
    from holitom.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)
# `holitom ARGS` that also reports the process's own peak memory (VmHWM: per address space, so not the
# parent's, which a forked child's ru_maxrss inherits) and whether torch was imported, into $HOSTILE_REPORT.
REPORTING_DRIVER = textwrap.dedent(
    """
    import atexit, json, os, sys
    def report():
        peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
        with open(os.environ["HOSTILE_REPORT"], "w") as f:
            json.dump({"peak_mb": peak / 1024, "torch": "torch" in sys.modules}, f)
    atexit.register(report)
    from holitom.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _sigint_as_from_a_terminal() -> None:
    # A test run started in the background by a non-interactive shell inherits SIGINT ignored, and
    # so would the child (the CLI leaves an ignored SIGINT ignored, as Python does): give the child
    # the default disposition a command typed at a terminal starts with.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(argv: list[str], cwd: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        argv, cwd=cwd, env={**os.environ, **CHILD_ENV, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_sigint_as_from_a_terminal,
    )


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=EXPORT_TIMEOUT_S)
    return proc.returncode, err


def staging_folders(parent: Path, name: str) -> list[Path]:
    return [p for p in parent.iterdir() if p.name.startswith(f".{name}{STAGING_INFIX}")]
