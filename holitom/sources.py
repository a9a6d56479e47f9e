"""Resolve what the user passed as ``--model``: the embedded default, a checkpoint, or an export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from holitom.errors import CheckpointError

MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "checkpoint" | "export"
    path: Path

    @property
    def is_export(self) -> bool:
        return self.kind == "export"


def resolve_source(model: str | Path, flag: str = "--model") -> ModelSource:
    """``"default"`` -> the embedded default checkpoint; a folder with manifest.json -> an export;
    a folder with config.json -> a Hugging Face checkpoint. ``flag`` names the argument in error messages."""
    if str(model) == "default":
        from holitom.default_model import default_model_dir

        return ModelSource("checkpoint", default_model_dir())
    from holitom.paths import existing_path

    path = existing_path(model, f"{flag} folder", "dir", CheckpointError)
    if (path / MANIFEST_NAME).is_file():
        return ModelSource("export", path)
    if (path / "config.json").is_file():
        from holitom.models.checkpoint import check_checkpoint_folder

        check_checkpoint_folder(path)
        return ModelSource("checkpoint", path)
    raise CheckpointError(
        f"'{path}' holds neither config.json (a checkpoint) nor {MANIFEST_NAME} (a holitom export); "
        f"point {flag} at one of those folders."
    )
