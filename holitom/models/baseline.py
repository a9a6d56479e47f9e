"""The PyTorch baseline: transformers' own LlavaOnevisionForConditionalGeneration with all video tokens.

Benchmarks report HoliTom's speed-up against this, and parity tests compare our model
code's greedy tokens with it. transformers is imported lazily, only here.

LLaVA-OneVision runs fully inside transformers (``pixel_values_videos`` path:
bilinear pooling, one newline). transformers has no LLaVA-Video path (2x2 average
pooling, a newline per grid row), so for that variant the baseline runs
transformers' own vision tower and projector, pools and lays out the tokens with
two tensor ops here, and hands them to transformers through ``generate``'s
supported ``mm_encoder_outputs`` argument; the decoder is transformers' throughout.
No transformers class is patched.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F

from holitom.errors import CheckpointError, InputError, MissingDependencyError
from holitom.models.config import LlavaConfig
from holitom.models.loading import SUPPORTED_DTYPES, read_state_dict


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - transformers is a declared dependency
        raise MissingDependencyError("transformers", "the transformers baseline") from exc
    return transformers


@dataclass(frozen=True)
class BaselinePrefill:
    """First-token logits ``(1, V)`` (float32) and the wall time of vision + prefill in seconds."""

    logits: torch.Tensor
    seconds: float


@dataclass(frozen=True)
class BaselineGeneration:
    """Greedy tokens and timings of one ``generate`` call.

    Attributes:
        tokens: generated ids (the prompt excluded; an emitted EOS is included).
        ttft_s: time to the first generated token (vision + prefill + first argmax).
        decode_s: time from the first to the last generated token.
        total_s: whole ``generate`` call.
        token_times_s: per-token timestamps relative to the call start.
    """

    tokens: list[int]
    ttft_s: float
    decode_s: float
    total_s: float
    token_times_s: list[float] = field(default_factory=list)

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens after the first one divided by ``decode_s`` (0 when fewer than two tokens)."""
        return (len(self.tokens) - 1) / self.decode_s if len(self.tokens) > 1 and self.decode_s > 0 else 0.0


class _TokenClock:
    """A transformers streamer that only timestamps each ``put`` (the first put is the prompt)."""

    def __init__(self) -> None:
        self.start = 0.0
        self.times: list[float] = []
        self._seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        # generate hands tokens over with .cpu(), which already waited for the device.
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        self.times.append(time.perf_counter() - self.start)

    def end(self) -> None:
        pass


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TransformersBaseline:
    """transformers' LlavaOnevisionForConditionalGeneration behind a small prefill / greedy-generate API.

    Inputs follow transformers' convention: ``input_ids`` hold the video placeholder
    already expanded to :meth:`num_video_tokens` copies (see
    :meth:`expand_video_placeholder`), and ``pixel_values_videos`` are ``(F, 3, H, W)``
    or ``(1, F, 3, H, W)``.
    """

    def __init__(self, hf_model: Any, config: LlavaConfig):
        """Wrap an already loaded model (the wrapper takes it over).

        The model's generation defaults (from the checkpoint's ``generation_config.json``)
        are replaced by transformers' bare defaults, so :meth:`generate` depends only on
        its arguments (greedy, EOS exactly as given).
        """
        self.model = hf_model
        self.config = config
        self.model.generation_config = _import_transformers().GenerationConfig()

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        variant: str | None = None,
        attn_implementation: str = "sdpa",
    ) -> TransformersBaseline:
        """Load the checkpoint with transformers (safetensors only, never pickle)."""
        if dtype not in SUPPORTED_DTYPES:
            raise InputError(f"dtype {dtype} is not supported; use one of {[str(d) for d in SUPPORTED_DTYPES]}.")
        # Our own config parser first: it rejects architectures the rest of the toolkit cannot compare with.
        config = LlavaConfig.from_pretrained(directory, variant=variant)
        root = Path(directory)
        if not any(root.glob("*.safetensors")):
            # Let our reader produce the precise error (pickle-only, empty folder, ...).
            read_state_dict(root)
        transformers = _import_transformers()
        try:
            model = transformers.LlavaOnevisionForConditionalGeneration.from_pretrained(
                str(root), dtype=dtype, use_safetensors=True, attn_implementation=attn_implementation
            )
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"transformers could not load {root}: {exc}") from exc
        model.to(device).eval()
        model.requires_grad_(False)
        return cls(model, config)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def num_video_tokens(self, num_frames: int) -> int:
        """Placeholder copies transformers expects for ``num_frames`` frames (features plus newlines)."""
        return self.config.num_video_tokens(num_frames)

    def expand_video_placeholder(self, input_ids: torch.Tensor, num_frames: int) -> torch.Tensor:
        """``(S,)`` prompt with one video placeholder -> ``(1, S - 1 + N)`` as transformers' processor expands it."""
        vid = self.config.video_token_id
        if input_ids.dim() != 1:
            raise InputError(f"input_ids must be (S,), got {tuple(input_ids.shape)}.")
        where = (input_ids == vid).nonzero().flatten().tolist()
        if len(where) != 1:
            raise InputError(f"input_ids must contain exactly one video placeholder (token {vid}), found {len(where)}.")
        start = where[0]
        n = self.num_video_tokens(num_frames)
        filler = torch.full((n,), vid, dtype=input_ids.dtype, device=input_ids.device)
        return torch.cat((input_ids[:start], filler, input_ids[start + 1 :]))[None]

    def _inputs(self, input_ids: torch.Tensor, pixel_values_videos: torch.Tensor) -> dict[str, Any]:
        vc = self.config.vision
        pixels = pixel_values_videos[None] if pixel_values_videos.dim() == 4 else pixel_values_videos
        if pixels.dim() != 5 or pixels.shape[0] != 1 or tuple(pixels.shape[2:]) != (vc.num_channels, vc.image_size, vc.image_size):
            raise InputError(
                f"pixel_values_videos must be (F, {vc.num_channels}, {vc.image_size}, {vc.image_size}) or with a "
                f"leading 1, got {tuple(pixel_values_videos.shape)}."
            )
        ids = input_ids[None] if input_ids.dim() == 1 else input_ids
        if ids.dim() != 2 or ids.shape[0] != 1:
            raise InputError(f"input_ids must be (S,) or (1, S), got {tuple(input_ids.shape)}.")
        frames = pixels.shape[1]
        n_video = int((ids == self.config.video_token_id).sum())
        expected = self.num_video_tokens(frames)
        if n_video != expected:
            raise InputError(
                f"input_ids hold {n_video} video placeholder tokens but {frames} frames need {expected}; expand the "
                "single placeholder with expand_video_placeholder()."
            )
        ids = ids.to(self.device)
        pixels = pixels.to(self.device, self.model.dtype)
        inputs: dict[str, Any] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if self.config.layout == "onevision":  # transformers lays out OneVision videos itself
            inputs["pixel_values_videos"] = pixels
        else:
            inputs["mm_encoder_outputs"] = {"video": self._llava_video_tokens(pixels[0])}
        return inputs

    def _llava_video_tokens(self, pixels: torch.Tensor) -> Any:
        """transformers' vision tower + projector, then 2x2 average pooling and a newline per grid row."""
        transformers = _import_transformers()
        inner = self.model.model
        out = inner.vision_tower(pixels, output_hidden_states=True)
        hidden = out.hidden_states[self.config.vision_feature_layer]  # (F, N, Dv)
        feats = inner.multi_modal_projector(hidden)  # (F, N, D)
        frames, _, d = feats.shape
        g = self.config.vision.patch_grid
        grid = feats.reshape(frames, g, g, d).permute(0, 3, 1, 2).contiguous()  # (F, D, g, g)
        rows = F.avg_pool2d(grid, kernel_size=2, stride=2).permute(0, 2, 3, 1)  # (F, h, w, D)
        newline = inner.image_newline.to(rows.dtype).expand(frames, rows.shape[1], 1, d)  # (F, h, 1, D)
        tokens = torch.cat((rows, newline), dim=2).reshape(1, -1, d)  # (1, F*h*(w+1), D)
        return transformers.modeling_outputs.BaseModelOutputWithPooling(pooler_output=tokens)

    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor, pixel_values_videos: torch.Tensor) -> BaselinePrefill:
        """Vision + prefill with all video tokens; returns the first-token logits and the time taken."""
        _sync(self.device)
        start = time.perf_counter()
        inputs = self._inputs(input_ids, pixel_values_videos)
        out = self.model(**inputs, use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1].float()  # (1, V)
        _sync(self.device)
        return BaselinePrefill(logits=logits, seconds=time.perf_counter() - start)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        pixel_values_videos: torch.Tensor,
        max_new_tokens: int,
        eos_token_ids: Iterable[int] | None = None,
    ) -> BaselineGeneration:
        """Greedy decoding with transformers' ``generate``; stops at ``max_new_tokens`` or an EOS in ``eos_token_ids``.

        The checkpoint's ``generation_config.json`` is not consulted: sampling is off
        and EOS is exactly ``eos_token_ids`` (None: never stop early), as in
        the tests' greedy loop over our model (tests/models/greedy.py).
        """
        if max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
        transformers = _import_transformers()
        eos = list(eos_token_ids or [])
        gen_config = transformers.GenerationConfig(
            do_sample=False,
            max_new_tokens=max_new_tokens,
            # None stays None: __init__ cleared the checkpoint's generation defaults.
            eos_token_id=eos or None,
            pad_token_id=eos[0] if eos else None,
        )
        clock = _TokenClock()
        _sync(self.device)
        clock.start = time.perf_counter()
        inputs = self._inputs(input_ids, pixel_values_videos)
        prompt_len = inputs["input_ids"].shape[1]
        out = self.model.generate(**inputs, generation_config=gen_config, streamer=clock)
        _sync(self.device)
        total = time.perf_counter() - clock.start
        tokens = out[0, prompt_len:].tolist()
        times = clock.times
        ttft = times[0] if times else total
        decode = times[-1] - times[0] if len(times) > 1 else 0.0
        return BaselineGeneration(tokens=tokens, ttft_s=ttft, decode_s=decode, total_s=total, token_times_s=list(times))


__all__ = ["TransformersBaseline", "BaselinePrefill", "BaselineGeneration"]
