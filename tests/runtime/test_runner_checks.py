"""The runner base class checks inputs against the stage contract, the same way for every backend."""

from __future__ import annotations

import pytest
import torch

from holitom import contracts as C
from holitom.errors import BackendError, ConfigError, InputError
from holitom.runtime import GenerationConfig, RuntimeConfig, load_pipeline
from holitom.runtime.generation import TokenSelector


@pytest.fixture(scope="module", params=["torch", "onnxruntime"])
def vision_runner(request, default_export):
    model = "default" if request.param == "torch" else default_export
    pipe = load_pipeline(model, RuntimeConfig(backend=request.param, preset="r15")).activate()
    yield pipe.stages.runners[C.VISION]
    pipe.deactivate()


def test_frames_of_the_wrong_size_are_refused(vision_runner):
    with pytest.raises(InputError, match=r"pixel_values.*size 200 on axis 2.*expected 384"):
        vision_runner.infer({"pixel_values": torch.zeros(2, 3, 200, 384)})


def test_wrong_rank_dtype_and_names_are_refused(vision_runner):
    with pytest.raises(InputError, match="rank 3"):
        vision_runner.infer({"pixel_values": torch.zeros(3, 384, 384)})
    with pytest.raises(InputError, match="dtype int64; expected float32"):
        vision_runner.infer({"pixel_values": torch.zeros(1, 3, 384, 384, dtype=torch.int64)})
    with pytest.raises(InputError, match="missing \\['pixel_values'\\], unexpected \\['images'\\]"):
        vision_runner.infer({"images": torch.zeros(1, 3, 384, 384)})


def test_named_dims_must_agree_across_inputs():
    spec = C.stage_specs(C.ModelDims(4, 2, 8, 1, 8, 10, 28, 4))[C.DECODER_HEAD]
    with pytest.raises(InputError, match="sequence=5.*sequence=4"):
        spec.check_inputs({"inputs_embeds": torch.zeros(1, 4, 8), "position_ids": torch.zeros(1, 5, dtype=torch.int64)})


def test_inactive_runner_and_unknown_backend_or_preset():
    pipe = load_pipeline("default", RuntimeConfig(preset="r15"))
    with pytest.raises(BackendError, match="not active"):
        pipe.stages.runners[C.VISION].infer({"pixel_values": torch.zeros(1, 3, 384, 384)})
    with pytest.raises(ConfigError, match="unknown backend 'tensorrtx'.*onnxruntime"):
        RuntimeConfig(backend="tensorrtx")
    with pytest.raises(ConfigError, match="unknown preset 'r99'"):
        RuntimeConfig(preset="r99")
    with pytest.raises(ConfigError, match="num_frames must be an integer >= 1 and <= 512, got 0"):
        RuntimeConfig(num_frames=0)


def test_prompt_placeholder_count_is_checked(clip_path):
    with load_pipeline("default", RuntimeConfig(preset="r15", num_frames=2)) as pipe:
        with pytest.raises(InputError, match="2"):
            pipe.run(clip_path, "<video> and <video>", 2)
        with pytest.raises(InputError, match="exactly one"):
            pipe.run(clip_path, "no placeholder here", 2, chat_template=False)


def test_generation_config_validation():
    for bad in (dict(max_new_tokens=0), dict(temperature=0.0), dict(top_k=-1), dict(top_p=0.0), dict(top_p=1.5)):
        with pytest.raises(ConfigError):
            GenerationConfig(**bad)


def test_token_selector_greedy_topk_topp():
    logits = torch.tensor([[0.0, 5.0, 5.0, 1.0, -2.0]])
    assert TokenSelector(GenerationConfig())(logits) == 1  # ties go to the lowest id
    topk = TokenSelector(GenerationConfig(do_sample=True, top_k=2, seed=0))
    assert {topk(logits) for _ in range(50)} == {1, 2}
    # top_p=0.5: token 1 alone holds < 0.5 of the mass, tokens 1 and 2 together more: both stay, 3 and 4 go.
    topp = TokenSelector(GenerationConfig(do_sample=True, top_p=0.5, seed=0))
    assert {topp(logits) for _ in range(50)} == {1, 2}
    a = TokenSelector(GenerationConfig(do_sample=True, seed=11))
    b = TokenSelector(GenerationConfig(do_sample=True, seed=11))
    assert [a(logits) for _ in range(20)] == [b(logits) for _ in range(20)]
