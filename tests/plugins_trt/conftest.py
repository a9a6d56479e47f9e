"""Make the shared test helpers importable under --import-mode=importlib: this folder's
``kernel_cases.py`` and the merge tests' oracle and case generators (tests/merge), shared, not copied."""

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for folder in (str(_HERE), str(_HERE.parent / "merge")):
    if folder not in sys.path:
        sys.path.insert(0, folder)
