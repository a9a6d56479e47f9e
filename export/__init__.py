"""Export a LLaVA-OneVision / LLaVA-Video checkpoint to ONNX graphs plus a versioned manifest."""
