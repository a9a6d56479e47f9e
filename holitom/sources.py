"""Resolve what the user passed as ``--model`` (the embedded default, a checkpoint, or an export), and the cache folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from holitom.errors import CheckpointError

MANIFEST_NAME = "manifest.json"


def cache_root() -> Path:
    """The toolkit's cache folder: ``$HOLITOM_CACHE`` or ``~/.cache/holitom``."""
    return Path(os.environ.get("HOLITOM_CACHE", Path.home() / ".cache" / "holitom"))


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "checkpoint" | "export"
    path: Path

    @property
    def is_export(self) -> bool:
        return self.kind == "export"


def resolve_source(model: str | Path) -> ModelSource:
    """``"default"`` -> the embedded default checkpoint; a folder with manifest.json -> an export;
    a folder with config.json -> a Hugging Face checkpoint."""
    if str(model) == "default":
        from holitom.default_model import default_model_dir

        return ModelSource("checkpoint", default_model_dir())
    path = Path(model).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"model path '{path}' does not exist; pass 'default', a Hugging Face checkpoint folder "
            f"(with config.json) or a holitom export folder (with {MANIFEST_NAME})."
        )
    if not path.is_dir():
        raise CheckpointError(f"model path '{path}' is a file; pass the folder that holds config.json or {MANIFEST_NAME}.")
    if (path / MANIFEST_NAME).is_file():
        return ModelSource("export", path)
    if (path / "config.json").is_file():
        return ModelSource("checkpoint", path)
    raise CheckpointError(
        f"'{path}' holds neither config.json (a checkpoint) nor {MANIFEST_NAME} (a holitom export); "
        "point --model at one of those folders."
    )
