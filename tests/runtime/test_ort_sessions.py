"""The onnxruntime backend's session settings: IO binding of the decode step and the optimized-graph cache."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np

from holitom import contracts as C
from holitom.export.manifest import read_manifest
from holitom.runtime import GenerationConfig, RuntimeConfig, load_pipeline
from holitom.runtime.backends.onnxruntime import loader
from holitom.runtime.backends.onnxruntime.runner import OnnxrtRunner


def _decode_feed(dims, past: int, rng) -> dict:
    feed = {"inputs_embeds": rng.standard_normal((1, 1, dims.hidden_size), dtype=np.float32), "position_ids": np.array([[past]])}
    for i in range(dims.num_layers):
        length = past if i < dims.inner_layer else past // 2  # the two KV groups have their own lengths
        for name in (C.past_key_name(i), C.past_value_name(i)):
            feed[name] = rng.standard_normal((1, dims.num_kv_heads, length, dims.head_dim), dtype=np.float32)
    return feed


def _next_feed(feed: dict, out: dict, dims) -> dict:
    nxt = {"inputs_embeds": feed["inputs_embeds"], "position_ids": feed["position_ids"] + 1}
    for i in range(dims.num_layers):
        nxt[C.past_key_name(i)] = out[C.present_key_name(i)]
        nxt[C.past_value_name(i)] = out[C.present_value_name(i)]
    return nxt


def test_bound_decode_steps_equal_plain_runs(default_export):
    """Several chained steps (each step's KV outputs are the next one's inputs, in the runner's own buffers)."""
    manifest = read_manifest(default_export)
    dims, spec = manifest.dims, C.stage_specs(manifest.dims)[C.DECODE_STEP]
    session = partial(loader.session_from_file, default_export / manifest.graphs[C.DECODE_STEP].file, ["CPUExecutionProvider"], spec)
    plain = OnnxrtRunner(spec, session).activate()
    bound = OnnxrtRunner(spec, session, output_shapes=partial(loader.decode_step_output_shapes, dims)).activate()
    feed_plain = feed_bound = _decode_feed(dims, 37, np.random.default_rng(0))
    for _ in range(5):
        want, got = plain.infer(feed_plain), bound.infer(feed_bound)
        assert set(got) == set(want)
        for name in want:
            assert got[name].shape == want[name].shape and np.array_equal(got[name], want[name]), name
        feed_plain, feed_bound = _next_feed(feed_plain, want, dims), _next_feed(feed_bound, got, dims)
    assert bound._binding is not None and plain._binding is None


def test_optimized_graph_cache_is_written_then_used(default_export, clip_path, tmp_path, monkeypatch):
    monkeypatch.setenv("HOLITOM_CACHE", str(tmp_path / "cache"))
    config = RuntimeConfig(backend="onnxruntime", preset="r15", num_frames=4)

    def answer():
        with load_pipeline(default_export, config) as pipe:
            return pipe.run(clip_path, "What happens?", 4, GenerationConfig(max_new_tokens=4)).token_ids

    first = answer()
    cached = sorted((tmp_path / "cache" / loader.OPTIMIZED_CACHE_DIR).glob("*.onnx"))
    assert len(cached) == 7 and not list((tmp_path / "cache" / loader.OPTIMIZED_CACHE_DIR).glob(".*"))  # every graph, no staging left
    loads = []
    real = loader.session_from_file

    def spy(path, providers, spec=None, settings=None):
        loads.append(loader._optimized_cache_path(path, providers, settings or loader.DEFAULT_SESSION_SETTINGS))
        return real(path, providers, spec, settings)

    monkeypatch.setattr(loader, "session_from_file", spy)
    assert answer() == first
    assert sorted(loads) == cached  # the second load found each graph's cached optimized form


def test_cuda_device_picks_the_gpu_providers_or_says_what_to_install(monkeypatch):
    """Which providers --device cuda asks for (the GPU providers themselves cannot run on this project's machines)."""
    import onnxruntime
    import pytest

    from holitom.errors import MissingDependencyError

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(MissingDependencyError, match=r"onnxruntime-gpu.*holitom-deploy\[gpu\]"):
        loader.providers_for("cuda")
    assert loader.providers_for("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    assert loader.providers_for("cuda:1") == [("TensorrtExecutionProvider", {"device_id": 1}), ("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert loader.providers_for("cuda") == [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]


def test_session_options_follow_the_settings(default_export, monkeypatch):
    """Each memory choice of SessionSettings reaches onnxruntime's SessionOptions (the defaults: no arena, no memory
    pattern, which planned the chunked prefill's growing KV chains into one block of about 1.5x the peak)."""
    import onnxruntime

    seen = []
    real = onnxruntime.InferenceSession

    def capture(path, sess_options=None, **kwargs):
        seen.append(sess_options)
        return real(path, sess_options=sess_options, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", capture)
    graph = default_export / read_manifest(default_export).graphs[C.EMBED].file
    for settings in (loader.DEFAULT_SESSION_SETTINGS, replace(loader.DEFAULT_SESSION_SETTINGS, memory_arena=True, memory_pattern=True, threads=1)):
        loader.session_from_file(graph, ["CPUExecutionProvider"], settings=replace(settings, optimized_cache=False))
        options = seen[-1]
        assert (options.enable_cpu_mem_arena, options.enable_mem_pattern, options.intra_op_num_threads) == (
            settings.memory_arena, settings.memory_pattern, settings.threads,
        )
    assert not loader.DEFAULT_SESSION_SETTINGS.memory_arena and not loader.DEFAULT_SESSION_SETTINGS.memory_pattern


def test_vision_in_chunks_equals_one_call(default_export):
    manifest = read_manifest(default_export)
    spec = C.stage_specs(manifest.dims)[C.VISION]
    session = partial(loader.session_from_file, default_export / manifest.graphs[C.VISION].file, ["CPUExecutionProvider"], spec)
    size = manifest.dims.image_size
    pixels = np.random.default_rng(1).standard_normal((7, 3, size, size), dtype=np.float32)  # 7: the last chunk is short
    whole = OnnxrtRunner(spec, session).activate().infer({"pixel_values": pixels})
    chunked = OnnxrtRunner(spec, session, chunk=3).activate().infer({"pixel_values": pixels})
    for name in whole:
        np.testing.assert_allclose(chunked[name], whole[name], rtol=1e-5, atol=1e-6, err_msg=name)


def _pool_threads(runner) -> list:
    import threading

    return [t for t in threading.enumerate() if t.name.startswith(f"holitom-{runner.spec.name}")]


def test_vision_workers_give_the_sequential_bytes_in_frame_order_and_end_their_threads(default_export):
    """Frames run concurrently on one single-threaded session: the same bytes as one frame after another (on that
    session, and on the multi-threaded one the backend used before), every call on a pool thread, none left after
    deactivate."""
    import threading

    manifest = read_manifest(default_export)
    spec = C.stage_specs(manifest.dims)[C.VISION]
    path = default_export / manifest.graphs[C.VISION].file
    settings = loader.vision_settings(loader.DEFAULT_SESSION_SETTINGS, 3)
    assert settings.threads == 1
    callers = []

    class Recording:  # the session, noting which thread calls run()
        def __init__(self, session):
            self._session = session

        def __getattr__(self, name):
            return getattr(self._session, name)

        def run(self, *args):
            callers.append(threading.current_thread().name)
            return self._session.run(*args)

    single = partial(loader.session_from_file, path, ["CPUExecutionProvider"], spec, settings)
    size = manifest.dims.image_size
    pixels = np.random.default_rng(2).standard_normal((7, 3, size, size), dtype=np.float32)  # (F, 3, H, W); 7: a short last chunk
    before = OnnxrtRunner(spec, partial(loader.session_from_file, path, ["CPUExecutionProvider"], spec)).activate()
    for chunk in (1, 2):
        sequential = OnnxrtRunner(spec, single, chunk=chunk).activate().infer({"pixel_values": pixels})
        runner = OnnxrtRunner(spec, lambda: Recording(single()), chunk=chunk, workers=3).activate()
        callers.clear()
        concurrent = runner.infer({"pixel_values": pixels})
        assert len(callers) == -(-7 // chunk) and all(name.startswith(f"holitom-{spec.name}") for name in callers), callers
        assert _pool_threads(runner)
        for name in spec.output_names:
            assert concurrent[name].dtype == sequential[name].dtype and concurrent[name].shape == sequential[name].shape, name
            assert concurrent[name].tobytes() == sequential[name].tobytes(), (chunk, name)
        runner.deactivate()
        assert not _pool_threads(runner), "the worker threads outlived deactivate()"
        assert runner.activate().infer({"pixel_values": pixels})["features"].tobytes() == sequential["features"].tobytes()  # a new pool
        runner.deactivate()
    whole = before.infer({"pixel_values": pixels})  # the default threads, all frames in one call
    for name in spec.output_names:
        assert whole[name].tobytes() == concurrent[name].tobytes(), name


def test_vision_workers_one_per_cpu_on_the_cpu_provider_only(monkeypatch):
    import pytest

    from holitom.errors import ConfigError

    monkeypatch.setattr(loader, "usable_cpus", lambda: 6)
    settings = loader.DEFAULT_SESSION_SETTINGS
    assert settings.vision_workers == 0 and loader.vision_workers(settings, ["CPUExecutionProvider"]) == 6
    assert loader.vision_workers(replace(settings, vision_workers=3), ["CPUExecutionProvider"]) == 3
    assert loader.vision_workers(replace(settings, vision_workers=1), ["CPUExecutionProvider"]) == 1
    assert loader.vision_workers(replace(settings, vision_chunk=0), ["CPUExecutionProvider"]) == 1  # all frames in one call
    for gpu in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        assert loader.vision_workers(settings, [(gpu, {"device_id": 0}), "CPUExecutionProvider"]) == 1
    assert loader.vision_settings(settings, 6).threads == 1 and loader.vision_settings(settings, 1) == settings
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="vision_workers must be an integer >= 0"):
            loader.SessionSettings(vision_workers=bad)
    with pytest.raises(ConfigError, match="workers must be a positive integer"):
        OnnxrtRunner(None, None, workers=0)


def test_the_pipeline_vision_runner_shares_its_frames_out_and_stops_its_pool(default_export, monkeypatch):
    monkeypatch.setattr(loader, "usable_cpus", lambda: 2)  # as on a 2-CPU machine, whatever this one has
    pipe = load_pipeline(default_export, RuntimeConfig(backend="onnxruntime", preset="r15", num_frames=4)).activate()
    runner = pipe.stages.runners[C.VISION]
    assert runner.workers == 2 and runner.session.get_session_options().intra_op_num_threads == 1
    assert pipe.stages.runners[C.DECODE_STEP].workers == 1
    size = read_manifest(default_export).dims.image_size
    runner.infer({"pixel_values": np.zeros((4, 3, size, size), np.float32)})  # (F, 3, H, W)
    assert _pool_threads(runner)
    pipe.deactivate()
    assert not _pool_threads(runner)
