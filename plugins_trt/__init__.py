"""HoliTom custom ops: op names shared by ONNX, the reference implementations and TensorRT plugins."""
