"""Answers of the onnxruntime backend for a list of jobs, and the heavy modules the process imported.

Run as a script by tests/runtime/test_edge_install.py, once in the edge virtualenv (base install only)
and once in the full install, so both sides run exactly this code:

    python edge_driver.py '[[model, preset, inner_merge, clip, frames, prompt], ...]'

prints one JSON line ``{"answers": [...], "heavy": [...]}``.
"""

from __future__ import annotations

import json
import sys

HEAVY = ("torch", "transformers", "torchvision", "safetensors", "onnx")


def main() -> None:
    from holitom.runtime import GenerationConfig, RuntimeConfig, load_pipeline

    answers = []
    for model, preset, inner, clip, frames, prompt in json.loads(sys.argv[1]):
        config = RuntimeConfig(backend="onnxruntime", preset=preset, inner_merge=inner, num_frames=frames)
        with load_pipeline(model, config) as pipe:
            result = pipe.run(clip, prompt, frames, GenerationConfig(max_new_tokens=6))
        answers.append({"token_ids": result.token_ids, "answer": result.answer, "tokens": result.to_dict()["tokens"]})
    print(json.dumps({"answers": answers, "heavy": [m for m in HEAVY if m in sys.modules]}))


if __name__ == "__main__":
    main()
