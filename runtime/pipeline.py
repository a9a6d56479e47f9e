"""The stage pipeline: video -> vision -> outer merge -> embed -> decoder head ->
inner merge -> decoder tail -> decode loop, on any backend.

The pipeline is backend-agnostic: it only splices the merged visual tokens into
the prompt embeddings, tracks RoPE positions and the two KV groups (layers < K
hold the full prompt, layers >= K the merged one), and selects tokens. Every
model computation goes through a :class:`~holitom.runtime.base.Runner`; the
little arithmetic of its own goes through the stage set's array type
(:mod:`holitom.runtime.arrays`), so on onnxruntime it runs without torch.
"""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from holitom import contracts as C
from holitom.errors import InputError
from holitom.runtime.generation import GenerationConfig, TokenSelector
from holitom.runtime.stages import StageSet

VideoInput = str | Path | np.ndarray  # or a torch.Tensor of frames


class ContextLimitWarning(UserWarning):
    """Fewer tokens than ``max_new_tokens`` fit in the model's context after the prompt; generation stops there."""


@dataclass
class TokenCounts:
    visual_in: int  # frames x tokens per frame, before any merge (newlines not counted)
    after_outer: int  # visual tokens entering the LLM (newlines included)
    after_inner: int  # visual tokens after the inner merge (== after_outer without it)
    prompt: int  # full prompt length entering the decoder head


@dataclass
class RunResult:
    answer: str
    token_ids: list[int]
    tokens: TokenCounts
    timings_ms: dict[str, float]
    decode_tokens_per_s: float | None
    backend: str
    preset: str
    num_frames: int
    stop_reason: str  # "stop_token" | "max_new_tokens" | "context_length"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EncodedVideo:
    """A video after decoding, sampling and the vision stage (:meth:`Pipeline.encode_video`).

    Pipelines of one backend and one model differ only in their merging, so one
    encoding serves them all (``holitom eval`` runs every method on it).

    Attributes:
        num_frames: frames sampled.
        vision: the vision stage's outputs (``features``, ``attention``).
        timings_ms: ``decode_video`` and ``vision`` times of the encoding.
    """

    num_frames: int
    vision: dict
    timings_ms: dict[str, float]


class _Timer:
    """Wall-clock sections; ``sync`` is called before each reading so device work is counted."""

    def __init__(self, sync: Callable[[], None]):
        self.ms: dict[str, float] = {}
        self._sync = sync

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1e3


class Pipeline:
    """Chains the stages of one :class:`StageSet`. Use as a context manager or call ``activate()``."""

    def __init__(self, stages: StageSet):
        self.stages = stages

    def activate(self) -> "Pipeline":
        self.stages.activate()
        return self

    def deactivate(self) -> None:
        self.stages.deactivate()

    def __enter__(self) -> "Pipeline":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    # -- stages ---------------------------------------------------------------------------------

    def _run(self, stage: str, **feed) -> dict:
        return self.stages.runners[stage].infer(feed)

    def load_video(self, video: VideoInput, num_frames: int):
        """Decode and sample a file, or take frames already in memory; returns pixel_values (F, 3, H, W)."""
        from holitom.video import clip_from_frames, read_video

        if isinstance(video, (str, Path)):
            clip = read_video(video, num_frames)
        else:
            clip = clip_from_frames(video, num_frames)
        return self.stages.preprocessor(clip.frames)  # (F, 3, H, W) float32, contiguous (numpy or torch, per preprocessor)

    def encode_prompt(self, prompt: str, chat_template: bool = True) -> list[int]:
        """Token ids with exactly one video placeholder (see :mod:`holitom.prompting`)."""
        from holitom.prompting import build_video_prompt, encode_prompt

        tokenizer = self.stages.tokenizer
        text = build_video_prompt(tokenizer, prompt) if chat_template else prompt
        return list(encode_prompt(tokenizer, text, video_token_id=self.stages.video_token_id))

    @property
    def vision_output_names(self) -> tuple[str, ...]:
        """What this pipeline's vision stage returns (no ``attention`` for methods that read no vision scores)."""
        return tuple(self.stages.runners[C.VISION].spec.output_names)

    def encode_video(self, video: VideoInput, num_frames: int) -> EncodedVideo:
        """Decode, sample and preprocess ``video`` and run the vision stage on it."""
        timer = _Timer(self.stages.synchronize)
        with timer.section("decode_video"):
            pixel_values = self.load_video(video, num_frames)  # (F, 3, H, W)
        with timer.section("vision"):
            vision = self._run(C.VISION, pixel_values=self.stages.to_device(pixel_values))
        return EncodedVideo(num_frames=int(pixel_values.shape[0]), vision=vision, timings_ms=dict(timer.ms))

    # -- the whole run --------------------------------------------------------------------------

    def run(
        self,
        video: VideoInput | EncodedVideo,
        prompt: str,
        num_frames: int = 32,
        generation: GenerationConfig | None = None,
        chat_template: bool = True,
        on_text: Callable[[str], None] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> RunResult:
        """Answer ``prompt`` about ``video``.

        ``video`` may be an :class:`EncodedVideo` from a pipeline of the same backend
        and model (its decode and vision times are reported again). ``on_text``
        receives the answer incrementally (streaming); ``progress`` is called with
        the number of tokens generated so far.
        """
        generation = generation or GenerationConfig()
        stages = self.stages
        xp = stages.arrays
        timer = _Timer(stages.synchronize)
        prompt_ids = self.encode_prompt(prompt, chat_template)  # checks the placeholder before any heavy work
        limit = stages.context_length
        if len(prompt_ids) >= limit:
            raise InputError(
                f"the prompt is {len(prompt_ids)} tokens long, but the model's context holds {limit} positions for the "
                "prompt, the video's tokens and the answer together; shorten the prompt."
            )

        encoded = video if isinstance(video, EncodedVideo) else self.encode_video(video, num_frames)
        timer.ms.update(encoded.timings_ms)
        vision = encoded.vision
        with timer.section("merge"):
            # Only what the outer merge declares: a method without vision scores gets none.
            merge_inputs = stages.runners[C.OUTER_MERGE].spec.input_names
            merged = self._run(C.OUTER_MERGE, **{name: vision[name] for name in merge_inputs})
        visual_tokens = merged["merged_tokens"]  # (N, D)

        seq_len = len(prompt_ids) - 1 + int(visual_tokens.shape[0])  # the placeholder becomes the visual tokens
        if seq_len > limit:
            raise InputError(
                f"the prompt ({len(prompt_ids) - 1} text tokens) and the video ({visual_tokens.shape[0]} tokens after "
                f"merging {encoded.num_frames} frames) need {seq_len} positions, but the model's context holds {limit}; "
                "use fewer --frames, a preset that keeps fewer tokens, or a shorter prompt."
            )
        # The first token comes from the prefill; each further one takes the next position.
        max_tokens = min(generation.max_new_tokens, limit - seq_len + 1)
        if max_tokens < generation.max_new_tokens:
            warnings.warn(
                f"max_new_tokens={generation.max_new_tokens} does not fit: the prompt takes {seq_len} of the model's {limit} "
                f"positions, so at most {max_tokens} tokens are generated.",
                ContextLimitWarning,
                stacklevel=2,
            )
        with timer.section("prefill"):
            inputs_embeds, visual_span = self._splice(prompt_ids, visual_tokens)  # (1, S, D)
            position_ids = xp.int64(np.arange(seq_len)[None])  # (1, S)
            span = xp.int64(visual_span)
            head = self._run(C.DECODER_HEAD, inputs_embeds=inputs_embeds, position_ids=position_ids)
        hidden, tail_positions = head["hidden_states"], position_ids
        if stages.inner_merge_enabled:
            with timer.section("merge"):
                inner = self._run(
                    C.INNER_MERGE,
                    hidden_states=hidden,
                    attn_row=xp.contiguous(head["attn_row"][visual_span[0] : visual_span[1]]),  # (L_v,)
                    position_ids=tail_positions,
                    visual_span=span,
                )
            hidden, tail_positions = inner["merged_hidden_states"], inner["merged_position_ids"]
        with timer.section("prefill"):
            tail = self._run(C.DECODER_TAIL, hidden_states=hidden, position_ids=tail_positions)

        L, K = stages.dims.num_layers, stages.dims.inner_layer
        past = {}
        for i in range(L):
            src = head if i < K else tail
            past[C.past_key_name(i)] = src[C.present_key_name(i)]
            past[C.past_value_name(i)] = src[C.present_value_name(i)]

        selector = TokenSelector(generation)
        stop_ids = set(generation.stop_token_ids if generation.stop_token_ids is not None else stages.stop_token_ids)
        token = selector(xp.to_host(tail["logits"]))
        ttft_ms = sum(timer.ms.values())
        generated = [token]
        streamer = _TextStreamer(stages.tokenizer, on_text)
        streamer.push(generated)
        if progress:
            progress(1)

        stop_reason = "stop_token" if token in stop_ids else ("max_new_tokens" if max_tokens == generation.max_new_tokens else "context_length")
        decode_steps = 0
        decode_start = time.perf_counter()
        # Decoding continues at position = full prompt length (DESIGN.md Stage III step 4).
        next_position = seq_len
        while stop_reason != "stop_token" and len(generated) < max_tokens:
            ids = xp.int64([[token]])
            step_embeds = self._run(C.EMBED, input_ids=ids)["inputs_embeds"]  # (1, 1, D)
            out = self._run(
                C.DECODE_STEP,
                inputs_embeds=step_embeds,
                position_ids=xp.int64([[next_position]]),
                **past,
            )
            for i in range(L):
                past[C.past_key_name(i)] = out[C.present_key_name(i)]
                past[C.past_value_name(i)] = out[C.present_value_name(i)]
            token = selector(xp.to_host(out["logits"]))
            generated.append(token)
            next_position += 1
            decode_steps += 1
            streamer.push(generated)
            if progress:
                progress(len(generated))
            if token in stop_ids:
                stop_reason = "stop_token"
        stages.synchronize()
        decode_s = time.perf_counter() - decode_start

        timings = dict(timer.ms)
        timings["ttft"] = ttft_ms
        timings["decode"] = decode_s * 1e3
        answer_ids = [t for t in generated if t not in stop_ids]
        visual_in = encoded.num_frames * stages.dims.tokens_per_frame
        after_inner = int(tail_positions.shape[1]) - (seq_len - visual_tokens.shape[0])
        return RunResult(
            answer=stages.tokenizer.decode(answer_ids, skip_special_tokens=True).strip(),
            token_ids=generated,
            tokens=TokenCounts(
                visual_in=visual_in,
                after_outer=int(visual_tokens.shape[0]),
                after_inner=after_inner,
                prompt=int(seq_len),
            ),
            timings_ms={k: round(v, 3) for k, v in timings.items()},
            decode_tokens_per_s=(decode_steps / decode_s) if decode_steps else None,
            backend=stages.backend,
            preset=stages.preset,
            num_frames=encoded.num_frames,
            stop_reason=stop_reason,
        )

    def _splice(self, prompt_ids: list[int], visual_tokens) -> tuple[object, tuple[int, int]]:
        """Embed the text around the single placeholder and insert the visual tokens there."""
        where = [i for i, t in enumerate(prompt_ids) if t == self.stages.video_token_id]
        if len(where) != 1:
            raise InputError(f"the prompt has {len(where)} video placeholders; it needs exactly one.")
        at = where[0]
        text_ids = prompt_ids[:at] + prompt_ids[at + 1 :]
        xp = self.stages.arrays
        ids = xp.int64([text_ids])  # (1, S0)
        text = self._run(C.EMBED, input_ids=ids)["inputs_embeds"]  # (1, S0, D)
        visual = xp.like(visual_tokens, text)[None]  # (1, N, D)
        embeds = xp.concat([text[:, :at], visual, text[:, at:]], axis=1)  # (1, S0 + N, D)
        return embeds, (at, at + visual_tokens.shape[0])


@dataclass
class _TextStreamer:
    """Emits only the newly decoded text after each token (decodes the whole answer: simple and exact)."""

    tokenizer: object
    callback: Callable[[str], None] | None
    _sent: str = field(default="")

    def push(self, ids: list[int]) -> None:
        if self.callback is None:
            return
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        # Hold back a trailing replacement char: a multi-byte character may be incomplete.
        if text.endswith("\ufffd"):
            return
        if text.startswith(self._sent) and len(text) > len(self._sent):
            self.callback(text[len(self._sent) :])
            self._sent = text
