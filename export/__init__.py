"""Export a LLaVA-OneVision / LLaVA-Video checkpoint to ONNX graphs plus a versioned manifest.

    from holitom.export import ExportConfig, export_model
    export_model("default", "out/default-onnx", ExportConfig(presets=("r15",)))
"""

from __future__ import annotations


def __getattr__(name):
    # Lazy: importing holitom.export must not import torch / onnx.
    if name in ("ExportConfig", "ExportResult", "export_model"):
        from holitom.export import exporter

        return getattr(exporter, name)
    raise AttributeError(name)


__all__ = ["ExportConfig", "ExportResult", "export_model"]
