"""The things the benchmark times: one subject per row, over models shared by a session.

A :class:`BenchSession` loads each backend's model once and hands out
subjects:

- runtime rows (torch, onnxruntime) are a :class:`~holitom.runtime.pipeline.Pipeline`
  per (preset, inner merge). The torch stage sets all wrap ONE loaded
  :class:`~holitom.models.llava.LlavaModel` (``build_torch_stages`` over an
  already loaded model, as the exporter does); the onnxruntime stage sets
  share the sessions of the preset-independent graphs (vision, embedding,
  decoder head / tail, decode step), so one set of sessions serves every row.
  Only the merge graphs differ per preset.
- the transformers row is :class:`~holitom.models.baseline.TransformersBaseline`
  (transformers' own LlavaOnevisionForConditionalGeneration, all video tokens),
  driven through ``generate`` exactly as a transformers user would, with
  forward hooks (added to this instance only, removed on close) that timestamp
  where its vision part ends, to split TTFT into vision and LLM prefill.

Every subject's :meth:`run` answers the prompt once and returns a :class:`Sample`
with the same timing keys (``decode_video``, ``vision``, ``merge``,
``prefill``, ``ttft``; ``ttft`` is exactly the sum of the other four), token
counts and decode speed. The video is decoded and preprocessed by the same
holitom code in every row, so that stage costs the same everywhere.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from holitom import contracts as C
from holitom.bench.config import TRANSFORMERS, BenchConfig, RowSpec
from holitom.errors import ConfigError

TIMING_PARTS = ("decode_video", "vision", "merge", "prefill")
# Stages whose graphs do not depend on the merge preset (one session each serves every row).
_SHARED_STAGES = (C.VISION, C.EMBED, C.DECODER_HEAD, C.DECODER_TAIL, C.DECODE_STEP)


@dataclass
class Sample:
    """One measured answer: milliseconds per TTFT part (summing to ``ttft``), token counts, decode speed."""

    timings_ms: dict[str, float]
    tokens: dict[str, int]
    decode_tokens_per_s: float
    generated: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FlopSample:
    """Matmul FLOPs (2 per multiply-add) of the LLM prefill of one answer, counted by FlopCounterMode.

    ``counted``: what ran. ``closed_form``: :func:`holitom.flops.decoder_matmul_flops`
    for the sequence lengths that ran, plus the ``lm_head`` on the last
    position and (our decoder head) the last token's attention row over the
    prompt; ``counted == closed_form`` checks that the counter saw exactly the
    decoder the formula describes. ``by_part``: counted FLOPs per stage.
    ``vision``: counted FLOPs of the vision stage of the same answer (tower and
    projector; the physical floor's vision part, :mod:`holitom.bench.floor`).
    """

    counted: int
    closed_form: int
    by_part: dict[str, int] = field(default_factory=dict)
    counted_on: str = "torch"
    vision: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


class _CountingRunner:
    """Stands in for a runner during one FLOP-counting run: delegates and counts each ``infer``."""

    def __init__(self, inner):
        self.inner = inner
        self.flops = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def infer(self, feed):
        from holitom.flops import count_matmul_flops

        count = count_matmul_flops(self.inner.infer, feed)
        self.flops += count.total
        return count.result


class PipelineSubject:
    """A runtime row: our pipeline on one backend with one merge setting."""

    def __init__(self, row: RowSpec, pipeline, config: BenchConfig, video: Path):
        self.row = row
        self.pipeline = pipeline
        self.config = config
        self.video = video

    def _generation(self, tokens: int):
        from holitom.runtime import GenerationConfig

        # No stop tokens: every row generates exactly the same number of tokens.
        return GenerationConfig(max_new_tokens=tokens, stop_token_ids=())

    def run(self) -> Sample:
        result = self.pipeline.run(str(self.video), self.config.prompt, self.config.frames, self._generation(self.config.decode_tokens))
        parts = {k: float(result.timings_ms.get(k, 0.0)) for k in TIMING_PARTS}
        parts["ttft"] = sum(parts.values())  # the pipeline's own ttft is this sum before rounding
        return Sample(
            timings_ms=parts,
            tokens=asdict(result.tokens),
            decode_tokens_per_s=float(result.decode_tokens_per_s or 0.0),
            generated=len(result.token_ids),
        )

    def count_flops(self) -> FlopSample:
        """Count the decoder head + tail of one prefill (untimed); torch pipelines only."""
        from holitom.flops import decoder_matmul_flops

        stages = self.pipeline.stages
        if stages.backend != "torch":
            raise ConfigError(f"FLOPs are counted on the torch model; row '{self.row.id}' runs on {stages.backend}.")
        saved = dict(stages.runners)
        counters = {name: _CountingRunner(saved[name]) for name in (C.VISION, C.DECODER_HEAD, C.DECODER_TAIL)}
        stages.runners.update(counters)
        try:
            result = self.pipeline.run(str(self.video), self.config.prompt, self.config.frames, self._generation(1))
        finally:
            stages.runners.clear()
            stages.runners.update(saved)
        model = saved[C.DECODER_HEAD].model
        t = model.config.text
        L, K = stages.dims.num_layers, stages.dims.inner_layer
        seq = result.tokens.prompt
        tail_seq = seq - result.tokens.after_outer + result.tokens.after_inner

        def layers(n: int, tokens: int) -> int:
            return decoder_matmul_flops(n, tokens, t.hidden_size, t.intermediate_size, t.num_heads, t.num_kv_heads)

        # + lm_head on the last position, + the last token's attention row (H x S x hd multiply-adds).
        closed = layers(K, seq) + layers(L - K, tail_seq) + 2 * t.hidden_size * t.vocab_size + 2 * t.num_heads * seq * t.head_dim
        vision = counters.pop(C.VISION).flops
        by_part = {name: c.flops for name, c in counters.items()}
        return FlopSample(counted=sum(by_part.values()), closed_form=closed, by_part=by_part, vision=vision)

    def close(self) -> None:
        self.pipeline.deactivate()


class TransformersSubject:
    """The baseline row: transformers' LlavaOnevisionForConditionalGeneration with every video token."""

    def __init__(self, row: RowSpec, baseline, tokenizer, preprocessor, config: BenchConfig, video: Path):
        from holitom.prompting import build_video_prompt, encode_prompt

        self.row = row
        self.baseline = baseline
        self.preprocessor = preprocessor
        self.config = config
        self.video = video
        self._sync = _synchronizer(baseline.device)
        text = build_video_prompt(tokenizer, config.prompt)
        ids = torch.tensor(list(encode_prompt(tokenizer, text, video_token_id=baseline.config.video_token_id)))
        self.input_ids = baseline.expand_video_placeholder(ids, config.frames)[0]  # (S,) with every video token
        # Timestamps of the first vision-tower call and the first language-model call of a generate().
        self._events: dict[str, float] = {}
        inner = baseline.model.model
        self._hooks = [
            inner.vision_tower.register_forward_pre_hook(self._stamp("vision_start")),
            inner.language_model.register_forward_pre_hook(self._stamp("llm_start")),
        ]

    def _stamp(self, name: str):
        def hook(module, args):
            if name not in self._events:
                self._sync()  # on CUDA, work queued before this point belongs to the previous part
                self._events[name] = time.perf_counter()

        return hook

    def _pixels(self) -> torch.Tensor:
        from holitom.video import read_video

        clip = read_video(self.video, self.config.frames)
        return self.preprocessor(clip.frames).contiguous()  # (F, 3, H, W) float32, as Pipeline.load_video

    def run(self) -> Sample:
        self._events.clear()
        self._sync()
        start = time.perf_counter()
        pixels = self._pixels()
        decode_video = (time.perf_counter() - start) * 1e3
        gen = self.baseline.generate(self.input_ids, pixels, self.config.decode_tokens, eos_token_ids=None)
        if "vision_start" not in self._events or "llm_start" not in self._events:
            raise ConfigError("the transformers baseline ran without calling its vision tower and language model; cannot split its TTFT.")
        # generate's clock starts before its input preparation; everything up to
        # the first language-model call is vision (tower, projector, pooling,
        # newline, splice), the rest up to the first token is LLM prefill.
        vision = (self._events["llm_start"] - self._events["vision_start"]) * 1e3
        prefill = max(gen.ttft_s * 1e3 - vision, 0.0)
        parts = {"decode_video": decode_video, "vision": vision, "merge": 0.0, "prefill": prefill}
        parts["ttft"] = sum(parts.values())
        frames = int(pixels.shape[0])
        n_video = self.baseline.num_video_tokens(frames)
        tokens = {
            "visual_in": frames * self.baseline.config.tokens_per_frame,
            "after_outer": n_video,
            "after_inner": n_video,
            "prompt": int(self.input_ids.shape[0]),
        }
        return Sample(timings_ms=parts, tokens=tokens, decode_tokens_per_s=float(gen.decode_tokens_per_s), generated=len(gen.tokens))

    def count_flops(self) -> FlopSample:
        """LLM prefill FLOPs: the whole forward minus transformers' own video-feature path (both counted)."""
        from holitom.flops import count_matmul_flops, decoder_matmul_flops

        pixels = self._pixels()
        with torch.no_grad():
            whole = count_matmul_flops(self.baseline.prefill, self.input_ids, pixels)
            # Positional: the argument is pixel_values_videos in transformers 5.25, pixel_values in 5.17.
            video = count_matmul_flops(
                self.baseline.model.model.get_video_features,
                pixels[None].to(self.baseline.device, self.baseline.model.dtype),
            )
        t = self.baseline.config.text
        seq = int(self.input_ids.shape[0])
        closed = decoder_matmul_flops(t.num_layers, seq, t.hidden_size, t.intermediate_size, t.num_heads, t.num_kv_heads)
        closed += 2 * t.hidden_size * t.vocab_size  # lm_head on the last position (logits_to_keep=1)
        return FlopSample(counted=whole.total - video.total, closed_form=closed, by_part={"language_model+lm_head": whole.total - video.total}, counted_on=TRANSFORMERS, vision=video.total)

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


def _unique_param_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())  # parameters() skips tied duplicates


class BenchSession:
    """Loads each backend's model once (lazily) and builds the subjects of the rows.

    ``export_dir``: the onnxruntime export folder to use (the runner exports
    the checkpoint once, before timing); required for onnxruntime rows.
    """

    def __init__(self, config: BenchConfig, checkpoint: Path, video: Path, export_dir: str | Path | None = None):
        self.config = config
        self.checkpoint = Path(checkpoint)
        self.video = Path(video)
        self.export_dir = None if export_dir is None else Path(export_dir)
        self.device = torch.device(config.device)
        self._torch: tuple | None = None  # (model, tokenizer, preprocessor)
        self._ort_shared: dict[str, Any] = {}
        self._baseline = None
        self._subjects: list = []
        self._torch_flop_pipelines: dict[tuple[str, bool], PipelineSubject] = {}

    # ---- shared resources ----------------------------------------------------------------

    def _torch_parts(self):
        if self._torch is None:
            from holitom.models.loading import TORCH_DTYPES, load_llava
            from holitom.models.checkpoint import load_tokenizer
            from holitom.video.preprocess import VideoPreprocessor

            model = load_llava(self.checkpoint, dtype=TORCH_DTYPES[self.config.dtype], device=self.device)
            self._torch = (model, load_tokenizer(self.checkpoint), VideoPreprocessor.from_pretrained(self.checkpoint))
        return self._torch

    def _runtime_config(self, row: RowSpec, backend: str):
        from holitom.runtime import RuntimeConfig

        return RuntimeConfig(
            backend=backend,
            preset=row.preset,
            inner_merge=row.inner_merge,
            device=self.config.device,
            dtype=self.config.dtype,
            num_frames=self.config.frames,
        )

    def _torch_pipeline(self, row: RowSpec):
        from holitom.runtime.backends.torch.loader import build_torch_stages
        from holitom.runtime.pipeline import Pipeline

        model, tokenizer, preprocessor = self._torch_parts()
        rc = self._runtime_config(row, "torch")
        stages = build_torch_stages(
            model, tokenizer, preprocessor, rc.merge_config(), rc.preset, self.device, rc.check_inputs, cuda_graph=self.config.cuda_graph
        )
        return Pipeline(stages)

    def _ort_pipeline(self, row: RowSpec):
        from holitom.runtime.pipeline import Pipeline
        from holitom.runtime.registry import get_backend
        from holitom.sources import ModelSource

        folder = self._export_of(row)
        stages = get_backend("onnxruntime")(ModelSource("export", folder), self._runtime_config(row, "onnxruntime"))
        for name in _SHARED_STAGES:
            # One InferenceSession per graph and export folder for the whole session, not one per preset.
            stages.runners[name] = self._ort_shared.setdefault((folder, name), stages.runners[name])
        return Pipeline(stages)

    def _export_of(self, row: RowSpec) -> Path:
        """The export folder an onnxruntime row runs: its own (``--export``) or the model's float32 one."""
        if row.export is not None:
            return Path(row.export)
        if self.export_dir is None:
            raise ConfigError("onnxruntime rows need an export folder; the benchmark runner exports the checkpoint first.")
        return self.export_dir

    def _baseline_model(self):
        if self._baseline is None:
            from holitom.models.baseline import TransformersBaseline
            from holitom.models.loading import TORCH_DTYPES

            self._baseline = TransformersBaseline.from_pretrained(self.checkpoint, dtype=TORCH_DTYPES[self.config.dtype], device=self.device)
        return self._baseline

    # ---- subjects ------------------------------------------------------------------------

    def subject(self, row: RowSpec):
        """The activated subject of ``row`` (its model is loaded on first use)."""
        if row.backend == TRANSFORMERS:
            _, tokenizer, preprocessor = self._tokenizer_and_preprocessor()
            subject = TransformersSubject(row, self._baseline_model(), tokenizer, preprocessor, self.config, self.video)
        elif row.backend == "torch":
            subject = PipelineSubject(row, self._torch_pipeline(row).activate(), self.config, self.video)
        elif row.backend == "onnxruntime":
            subject = PipelineSubject(row, self._ort_pipeline(row).activate(), self.config, self.video)
        else:
            raise ConfigError(f"unknown backend '{row.backend}' in row '{row.id}'.")
        self._subjects.append(subject)
        return subject

    def _tokenizer_and_preprocessor(self):
        from holitom.models.checkpoint import load_tokenizer
        from holitom.video.preprocess import VideoPreprocessor

        if self._torch is not None:
            return self._torch
        return None, load_tokenizer(self.checkpoint), VideoPreprocessor.from_pretrained(self.checkpoint)

    def count_flops(self, row: RowSpec, subject) -> FlopSample:
        """Counted prefill FLOPs of ``row``; onnxruntime rows are counted on the torch model with the same merge."""
        if row.backend == TRANSFORMERS or row.backend == "torch":
            return subject.count_flops()
        key = (row.preset, row.inner_merge)
        if key not in self._torch_flop_pipelines:
            torch_row = RowSpec("torch", row.method, row.ratio, row.preset, row.inner_merge)
            self._torch_flop_pipelines[key] = PipelineSubject(torch_row, self._torch_pipeline(torch_row).activate(), self.config, self.video)
        counted = self._torch_flop_pipelines[key].count_flops()
        return FlopSample(counted.counted, counted.closed_form, counted.by_part, counted_on="torch (same merge; the onnxruntime graphs are exported from it)", vision=counted.vision)

    def param_bytes(self, row: RowSpec) -> int:
        """Bytes of the weights ``row`` runs with (its model's unique parameters; an export's graph files)."""
        if row.backend == TRANSFORMERS:
            return _unique_param_bytes(self._baseline_model().model)
        if row.backend == "torch":
            return _unique_param_bytes(self._torch_parts()[0])
        from holitom.export.manifest import read_manifest

        manifest = read_manifest(self._export_of(row))
        entries = [entry.to_dict() for entry in manifest.graphs.values()]
        entries.append(manifest.outer_merge[row.preset]["graph"])
        merge = self._runtime_config(row, "onnxruntime").merge_config()
        inner = getattr(merge, "inner", None)
        if inner is not None:
            from holitom.export.manifest import inner_merge_key

            entries.append(manifest.inner_merge[inner_merge_key(inner.ratio, inner.mode)]["graph"])
        # Graph files are almost all initializers (weights); each session holds its own copy.
        return sum(sum(e["sizes"].values()) for e in entries)

    def close(self) -> None:
        for subject in [*self._subjects, *self._torch_flop_pipelines.values()]:
            subject.close()
        self._subjects = []
        self._torch_flop_pipelines = {}
        self._ort_shared = {}
        self._torch = None
        self._baseline = None

    def __enter__(self) -> "BenchSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["BenchSession", "FlopSample", "PipelineSubject", "Sample", "TIMING_PARTS", "TransformersSubject"]
