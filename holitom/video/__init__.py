"""Video input: decoding with PyAV, uniform frame sampling, preprocessing identical to transformers' LLaVA-OneVision processor."""
