"""Layers point one way (DESIGN.md section 3): models and merge, then export, then runtime, with the CLI and bench on top.

Checked on the source: every ``import`` / ``from ... import`` of a module,
including the lazy ones inside functions, names only packages of its own layer
or below. A backend may read the export manifest format, never call the exporter.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# folder (relative to the repository) -> holitom packages its modules must not import
FORBIDDEN = {
    "holitom/models": ("holitom.export", "holitom.runtime", "holitom.bench", "holitom.cli"),
    "holitom/merge": ("holitom.export", "holitom.runtime", "holitom.bench", "holitom.cli"),
    "holitom/video": ("holitom.export", "holitom.runtime", "holitom.bench", "holitom.cli"),
    "export": ("holitom.runtime", "holitom.bench", "holitom.cli"),
    "runtime/backends": ("holitom.export", "holitom.bench", "holitom.cli"),
    "runtime": ("holitom.bench", "holitom.cli"),
    # Above the runtime (it runs exports to calibrate and validate them); its cli.py borrows the CLI's flag types, as holitom.bench.cli does.
    "calibration": ("holitom.bench",),
}
# ... except these: the export folder's file format (the manifest, the graphs' I/O checks) that backends read.
ALLOWED = {"runtime/backends": ("holitom.export.manifest", "holitom.export.onnx_io")}


def _matches(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def imported_modules(path: Path) -> set[str]:
    """Every module (and ``module.name`` for ``from module import name``) that ``path`` imports absolutely."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_no_upward_imports(folder):
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"{folder} holds no Python files: the layering table is out of date"
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in sorted(imported_modules(path))
        if _matches(name, FORBIDDEN[folder]) and not _matches(name, ALLOWED.get(folder, ()))
    ]
    assert not bad, "imports against the layering:\n" + "\n".join(bad)
