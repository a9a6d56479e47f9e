"""Video-calibrated low-precision exports: an INT8 vision tower (QDQ) and weight-only INT8 / INT4 decoders.

    from holitom.calibration import CalibrationConfig, calibrate_export
    calibrate_export("out/default-onnx", "out/default-int8", CalibrationConfig(videos="clips/"))

The result is an ordinary export folder (the onnxruntime backend runs it as is)
whose manifest's ``quantization`` table records each graph's precision, the
calibration method and data, the validation against the float32 graphs and the
calibration report.
"""

from __future__ import annotations


def __getattr__(name):
    # Lazy: importing holitom.calibration must not import torch / onnx / onnxruntime.
    if name == "CalibrationConfig":
        from holitom.calibration.config import CalibrationConfig

        return CalibrationConfig
    if name in ("calibrate_export", "CalibrationResult"):
        from holitom.calibration import calibrate

        return getattr(calibrate, name)
    raise AttributeError(name)


__all__ = ["CalibrationConfig", "CalibrationResult", "calibrate_export"]
