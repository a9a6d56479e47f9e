"""Benchmarks: TTFT / decode / memory / FLOPs of HoliTom against the transformers baseline and competing methods."""
