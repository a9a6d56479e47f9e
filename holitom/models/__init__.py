"""Our own export-friendly model code (SigLIP + projector + pooling + Qwen2) and checkpoint loading."""
