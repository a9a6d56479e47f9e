"""Which heavy modules a piece of code imports, run in a fresh interpreter (the lean-import tests)."""

from __future__ import annotations

import subprocess
import sys


def imported_by(code: str, modules: tuple[str, ...]) -> list[str]:
    """Run ``code`` in a fresh ``python -c``; return those of ``modules`` it left in ``sys.modules``."""
    script = f"{code}\nimport sys\nprint('imported:' + ','.join(m for m in {modules!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    found = out.strip().splitlines()[-1].removeprefix("imported:")
    return [m for m in found.split(",") if m]
