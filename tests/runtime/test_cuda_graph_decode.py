"""The torch backend's CUDA-graph decode: its bookkeeping on the CPU, the refusals off CUDA, the real capture on a GPU.

On the CPU the graph's replay is injected as the eager step itself, so everything but
``torch.cuda.CUDAGraph`` runs: static inputs copied in, the fixed KV buffers written in
place, the logits copied out, captures per capacity, the host's length mirror. The
structure of the step (no host syncs, no shape that follows the position) is checked in
tests/models/test_fixed_cache.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from holitom.runtime import GenerationConfig, RuntimeConfig, load_pipeline
from holitom.runtime.config import resolve_cuda_graph

from holitom import contracts as C
from holitom.errors import ConfigError

FRAMES = 4
TOKENS = 12


# A multiple choice: the trained default writes an option, its bracketed letter and the end token, at
# least 5 distinct tokens, where a free question gets one word and then the end token repeated.
PROMPT = "What colour is the shape before the scene cut? Options: (A) red (B) blue (C) green. Answer with the option and its letter."


def _answer(pipe, clip_path) -> list[int]:
    return pipe.run(clip_path, PROMPT, FRAMES, GenerationConfig(max_new_tokens=TOKENS, stop_token_ids=())).token_ids


@pytest.mark.parametrize("preset", ["none", "r15"])
def test_graphed_runner_gives_the_eager_greedy_tokens(clip_path, preset):
    # r15: two KV groups of different lengths (inner merge); none: one group.
    with load_pipeline("default", RuntimeConfig(preset=preset, num_frames=FRAMES)) as pipe:
        runner = pipe.stages.runners[C.DECODE_STEP]
        assert runner.capture is None  # CPU: eager by default
        eager = _answer(pipe, clip_path)
        captured = []

        def eager_replay(step):
            captured.append(step)
            return step

        runner.capture = eager_replay  # the graph runner with the eager step as its "replay"
        graphed = _answer(pipe, clip_path)
        again = _answer(pipe, clip_path)  # a new prompt of the same capacity: no new capture
    assert graphed == eager == again
    assert len(set(eager)) > 2, f"degenerate generation {eager}: the parity check would be weak"
    assert len(captured) == 1


def test_cuda_graph_is_refused_off_cuda_and_off_torch():
    with pytest.raises(ConfigError, match="CUDA-graph decoding.*device cpu.*--device cuda"):
        RuntimeConfig(cuda_graph=True)
    with pytest.raises(ConfigError, match="backend onnxruntime"):
        RuntimeConfig(backend="onnxruntime", device="cuda", cuda_graph=True)
    with pytest.raises(ConfigError, match="True, False or None"):
        RuntimeConfig(cuda_graph="yes")
    assert resolve_cuda_graph(None, "cpu") is False and resolve_cuda_graph(None, "cuda:0") is True
    assert resolve_cuda_graph(False, "cuda") is False and resolve_cuda_graph(None, "cuda", "onnxruntime") is False
    RuntimeConfig(cuda_graph=False)  # eager anywhere is fine


def test_build_torch_stages_refuses_cuda_graph_on_cpu():
    from holitom.runtime.backends.torch.loader import build_torch_stages

    from holitom.default_model import default_model_dir
    from holitom.models.checkpoint import load_tokenizer
    from holitom.models.loading import load_llava

    folder = default_model_dir()
    model = load_llava(folder)
    merge = RuntimeConfig(preset="r15").merge_config()
    with pytest.raises(ConfigError, match="CUDA-graph decoding"):
        build_torch_stages(model, load_tokenizer(folder), None, merge, "r15", torch.device("cpu"), cuda_graph=True)


def test_cli_refuses_cuda_graph_on_cpu_in_one_line(clip_path):
    proc = subprocess.run(
        [sys.executable, "-m", "holitom.cli", "run", "--model", "default", "--video", str(clip_path), "--prompt", "What?", "--cuda-graph"],
        check=False, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--cuda-graph" in lines[0] and "device cpu" in lines[0]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_graph_decode_on_a_gpu_gives_the_eager_tokens(clip_path, dtype):
    answers = {}
    for cuda_graph in (False, True):
        config = RuntimeConfig(preset="r15", num_frames=FRAMES, device="cuda", dtype=dtype, cuda_graph=cuda_graph)
        with load_pipeline("default", config) as pipe:
            assert (pipe.stages.runners[C.DECODE_STEP].capture is not None) == cuda_graph
            answers[cuda_graph] = _answer(pipe, clip_path)
    assert answers[True] == answers[False]
