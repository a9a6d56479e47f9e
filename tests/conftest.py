"""Shared by every test folder: tests/ on sys.path for its helper modules (lean_imports)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
