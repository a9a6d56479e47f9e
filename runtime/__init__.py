"""The runtime: one backend protocol (torch, onnxruntime, tensorrt) and the stage pipeline."""
