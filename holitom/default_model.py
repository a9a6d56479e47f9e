"""The tiny LLaVA-OneVision checkpoint shipped inside the package.

It lets everything (tests, ``holitom demo``, export smoke tests) run on a fresh
machine with no download: a real llava-hf-layout checkpoint (config, float32
safetensors, tokenizer, chat template, processor configs) with the real vision
geometry (SigLIP 384 px, patch 14, 27x27 grid), about 5 MB.

``scripts/make_default_model.py`` builds it with deterministic initial weights;
``scripts/train_default_model.py`` trains those on the generated video-QA
benchmark (:mod:`holitom.eval.videoqa`), and the trained files are shipped as
package data under ``holitom/assets/default_model/``. Its provenance file
records both steps (generator, seed, library versions, and the training runs
with their validation accuracy).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from holitom.errors import CheckpointError

DEFAULT_MODEL_NAME = "default"

# Files a complete checkpoint needs: the model (config + weights), the
# tokenizer (+ its config with the chat template), and the processor config.
DEFAULT_MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "processor_config.json",
    "generation_config.json",
)

# Next to the weights: who made them (generator, seed, library versions) and, for
# trained weights, the "training" record of each run.
PROVENANCE_FILE = "holitom_default_model.json"
TRAINING_KEY = "training"  # scripts/train_default_model.py's record of its run (its "init" holds the run before)

_REGENERATE = (
    "reinstall holitom-deploy, or restore it in a source checkout with `git checkout holitom/assets/default_model` "
    "(`python scripts/make_default_model.py` writes its untrained starting point)"
)


def default_model_dir() -> Path:
    """The folder of the shipped default checkpoint.

    Returns:
        An existing directory holding every file in :data:`DEFAULT_MODEL_FILES`.

    Raises:
        CheckpointError: the package data is missing or incomplete (a partial
            install, or a source checkout where the generated files were
            deleted), or the package is installed in a form that is not a
            folder on disk (e.g. a zip).
    """
    resource = resources.files("holitom") / "assets" / "default_model"
    path = Path(str(resource))
    if not path.is_dir():
        raise CheckpointError(f"the default model folder '{path}' is missing from the holitom package; {_REGENERATE}.")
    missing = [name for name in DEFAULT_MODEL_FILES if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"the default model in '{path}' is incomplete (missing: {', '.join(missing)}); {_REGENERATE}.")
    return path


def training_record(folder: Path) -> dict | None:
    """The training record in ``folder``'s provenance file (steps, clips, validation accuracy, ...); None without one."""
    record = folder / PROVENANCE_FILE
    if not record.is_file():
        return None
    return json.loads(record.read_text()).get(TRAINING_KEY)


def default_model_training() -> dict | None:
    """The shipped weights' last training record, None if untrained."""
    return training_record(default_model_dir())


__all__ = ["DEFAULT_MODEL_FILES", "DEFAULT_MODEL_NAME", "PROVENANCE_FILE", "TRAINING_KEY", "default_model_dir", "default_model_training", "training_record"]
