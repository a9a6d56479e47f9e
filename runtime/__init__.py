"""The runtime: one backend protocol (torch, onnxruntime) and the stage pipeline.

    from holitom.runtime import RuntimeConfig, load_pipeline

    with load_pipeline("default", RuntimeConfig(preset="r15")) as pipe:
        result = pipe.run("clip.mp4", "What happens in the video?")
    print(result.answer, result.tokens, result.timings_ms)
"""

from __future__ import annotations

from pathlib import Path

from holitom.runtime.config import RuntimeConfig
from holitom.runtime.generation import GenerationConfig


def load_pipeline(model: str | Path, config: RuntimeConfig | None = None):
    """Build the pipeline for ``model`` ('default', a checkpoint folder or an export folder) on ``config.backend``.

    The pipeline is returned inactive: use it as a context manager (or call ``activate()``).
    """
    from holitom.runtime.pipeline import Pipeline
    from holitom.runtime.registry import get_backend, runs_exports
    from holitom.sources import ModelSource, resolve_source

    config = config or RuntimeConfig()
    source = resolve_source(model)
    factory = get_backend(config.backend)
    if runs_exports(config.backend) and not source.is_export:
        from holitom.errors import require_extra

        require_extra("export", f"running the checkpoint '{model}' on the {config.backend} backend (it is exported first; an export folder runs without it)")
        from holitom.export.cache import ensure_export
        from holitom.runtime.validate import validate_export

        source = ModelSource("export", ensure_export(source, validator=validate_export))
    stages = factory(source, config)
    return Pipeline(stages)


__all__ = ["GenerationConfig", "RuntimeConfig", "load_pipeline"]
