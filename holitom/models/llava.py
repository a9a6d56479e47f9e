"""LlavaModel: SigLIP + projector + 2x2 pooling + Qwen2, with the entry points HoliTom's pipeline needs.

Stages (DESIGN.md section 2/3)::

    encode_video  (F,3,H,W) -> features (F,P,D), attention (F,P)      vision + projector + pooling
    [outer merge, by holitom.merge, inserts newlines]
    splice_video  input_ids with one placeholder + video tokens -> inputs_embeds, visual_span
    decoder_head  layers 0..K-1 on the full prompt -> hidden entering K, KV, last-token attention row
    [inner merge, by holitom.merge, drops tokens; kept ones keep their position ids]
    decoder_tail  layers K..L-1 on the kept tokens -> last logits, KV
    decode_step   one token through all L layers with per-layer-group cache lengths

``prefill`` runs all layers without a split (vanilla runs and parity tests).

The decoder methods keep tensor-value-dependent Python control flow out of the graph
(only shapes and Python ints decide branches), never write into their inputs, and
keep KV as ``(B, Hkv, S, hd)`` so an ONNX exporter can wrap them with a fixed K.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from holitom.errors import InputError
from holitom.merge.attention import last_token_attention
from holitom.models.config import LlavaConfig
from holitom.models.export_attention import SharedKVBuffer
from holitom.models.kv_cache import FixedKVCache, StaticKVCache
from holitom.models.ops import rope_cos_sin
from holitom.models.pooling import pool_tokens
from holitom.models.qwen2 import KV, Decoder
from holitom.models.vision import Projector, VisionTower


@dataclass(frozen=True)
class VideoFeatures:
    """Output of :meth:`LlavaModel.encode_video`.

    Attributes:
        features: ``(F, P, D)`` projected and pooled, in the model dtype, no newlines.
        attention: ``(F, P)`` float32, HoliTom's a[t, p] (attention received, pooled like the
            features); None when :meth:`LlavaModel.encode_video` was asked for no scores.
        grid: ``(h, w)`` pooled grid, ``P = h * w``.
    """

    features: torch.Tensor
    attention: torch.Tensor | None
    grid: tuple[int, int]


@dataclass(frozen=True)
class HeadOutput:
    """Output of :meth:`LlavaModel.decoder_head`.

    Attributes:
        hidden: ``(1, S, D)`` hidden states entering layer K.
        present: K ``(key, value)`` pairs, each ``(1, Hkv, S, hd)``.
        attn_row: ``(L_v,)`` float32, the last token's attention over the visual span at
            layer K-1, averaged over heads.
    """

    hidden: torch.Tensor
    present: list[KV]
    attn_row: torch.Tensor


@dataclass(frozen=True)
class TailOutput:
    """Output of :meth:`LlavaModel.decoder_tail`: ``logits (1, V)`` of the last position, L-K ``(key, value)`` pairs."""

    logits: torch.Tensor
    present: list[KV]


class LlavaModel(nn.Module):
    """LLaVA-OneVision / LLaVA-Video with export-friendly, split-able execution.

    Attributes:
        config: the :class:`LlavaConfig`.
        vision: SigLIP tower holding only the layers up to the selected feature layer.
        projector: two-layer MLP to the decoder width.
        embed_tokens: ``(V, D)`` token embedding.
        decoder: Qwen2 layers + final norm.
        lm_head: ``D -> V`` (shares its weight with ``embed_tokens`` when tied).
        image_newline: ``(D,)`` newline embedding the merge library inserts.
    """

    def __init__(self, config: LlavaConfig):
        super().__init__()
        self.config = config
        self.vision = VisionTower(config.vision, config.num_vision_layers_used)
        self.projector = Projector(config)
        self.embed_tokens = nn.Embedding(config.text.vocab_size, config.text.hidden_size)
        self.decoder = Decoder(config.text)
        self.lm_head = nn.Linear(config.text.hidden_size, config.text.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.image_newline = nn.Parameter(torch.zeros(config.text.hidden_size))

    # ---- descriptive properties ------------------------------------------------------

    @property
    def layout(self) -> str:
        """``"onevision"`` (one newline after the video) or ``"llava_video"`` (newline per grid row)."""
        return self.config.layout

    @property
    def grid(self) -> tuple[int, int]:
        """``(h, w)`` of the pooled grid (14x14 OneVision, 13x13 LLaVA-Video at 384 px)."""
        return self.config.pooled_grid

    @property
    def tokens_per_frame(self) -> int:
        return self.config.tokens_per_frame

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    # ---- vision ----------------------------------------------------------------------

    def encode_video(self, pixel_values: torch.Tensor, with_attention: bool = True) -> VideoFeatures:
        """Vision tower + projector + 2x2 pooling of features and attention (no newline).

        Args:
            pixel_values: ``(F, 3, H, W)`` frames preprocessed for SigLIP, ``H = W = image_size``.
            with_attention: False skips the last layer's key scores (for methods that read none).
        """
        vc = self.config.vision
        expected = (vc.num_channels, vc.image_size, vc.image_size)
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != expected or pixel_values.shape[0] == 0:
            raise InputError(
                f"pixel_values must be (F, {expected[0]}, {expected[1]}, {expected[2]}) with F >= 1, got "
                f"{tuple(pixel_values.shape)}; resize frames to the vision tower's image_size first."
            )
        if not pixel_values.is_floating_point():
            raise InputError(f"pixel_values must be a float tensor (normalised frames), got {pixel_values.dtype}.")
        hidden, scores = self.vision(pixel_values, with_scores=with_attention)  # (F, N, Dv), (F, N) or None
        features = self.projector(hidden)  # (F, N, D)
        pooled = pool_tokens(features, vc.patch_grid, self.config.pooling)  # (F, P, D)
        attention = None if scores is None else self.pooled_attention(scores)  # (F, P)
        return VideoFeatures(features=pooled, attention=attention, grid=self.grid)

    def pooled_attention(self, scores: torch.Tensor) -> torch.Tensor:
        """The tower's key scores ``(F, N)`` pooled onto the token grid like the features: ``(F, P)``."""
        return pool_tokens(scores[..., None], self.config.vision.patch_grid, self.config.pooling)[..., 0]

    def unmerged_video_tokens(self, features: torch.Tensor) -> torch.Tensor:
        """All video tokens with this variant's newlines: ``(F, P, D) -> (N, D)`` (vanilla path, no merge)."""
        from holitom.merge.layout import get_layout, place_tokens

        rows, cols = self.grid
        if features.dim() != 3 or features.shape[1] != rows * cols:
            raise InputError(f"features must be (F, {rows * cols}, D) for grid {self.grid}, got {tuple(features.shape)}.")
        frames, positions, dim = features.shape
        device = features.device
        frame_index = torch.arange(frames, device=device).repeat_interleave(positions)  # (F*P,) frame-major order
        position_index = torch.arange(positions, device=device).repeat(frames)  # (F*P,)
        tokens = features.reshape(frames * positions, dim)
        return place_tokens(get_layout(self.config.layout), tokens, frame_index, position_index, frames, self.grid, self.image_newline)

    # ---- text embedding --------------------------------------------------------------

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``input_ids (B, S)`` -> ``(B, S, D)``."""
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.int32, torch.int64):
            raise InputError(f"input_ids must be a (B, S) integer tensor, got {tuple(input_ids.shape)} {input_ids.dtype}.")
        return self.embed_tokens(input_ids)

    def splice_video(self, input_ids: torch.Tensor, video_embeds: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Replace the single video placeholder by the video tokens.

        Args:
            input_ids: ``(S,)`` prompt with exactly one ``video_token_id``.
            video_embeds: ``(N, D)`` video tokens (merged or not, newlines included).
        Returns:
            ``inputs_embeds (1, S - 1 + N, D)`` and ``visual_span (start, end)``, the
            half-open range the video tokens occupy.
        """
        cfg = self.config
        if input_ids.dim() != 1:
            raise InputError(f"input_ids must be (S,), got {tuple(input_ids.shape)}.")
        if video_embeds.dim() != 2 or video_embeds.shape[1] != cfg.hidden_size or video_embeds.shape[0] == 0:
            raise InputError(f"video_embeds must be (N, {cfg.hidden_size}) with N >= 1, got {tuple(video_embeds.shape)}.")
        # Host syncs (two, once per prompt): the placeholder position decides the output shape.
        where = (input_ids == cfg.video_token_id).nonzero().flatten().tolist()
        if len(where) != 1:
            raise InputError(
                f"input_ids must contain exactly one video placeholder (token {cfg.video_token_id}), found "
                f"{len(where)}; pass the prompt before transformers' placeholder expansion."
            )
        if bool((input_ids == cfg.image_token_id).any()):
            raise InputError(f"input_ids contain image placeholders (token {cfg.image_token_id}); only video is supported.")
        start = where[0]
        text = self.embed(input_ids.to(self.device)[None])  # (1, S, D)
        video = video_embeds.to(device=text.device, dtype=text.dtype)[None]  # (1, N, D)
        embeds = torch.cat((text[:, :start], video, text[:, start + 1 :]), dim=1)  # (1, S - 1 + N, D)
        return embeds, (start, start + video_embeds.shape[0])

    # ---- decoder ---------------------------------------------------------------------

    def _check_seq(self, embeds: torch.Tensor, position_ids: torch.Tensor, name: str) -> None:
        d = self.config.hidden_size
        if embeds.dim() != 3 or embeds.shape[0] != 1 or embeds.shape[2] != d or embeds.shape[1] == 0:
            raise InputError(f"{name} must be (1, S, {d}) with S >= 1, got {tuple(embeds.shape)}.")
        if embeds.dtype != self.dtype:
            raise InputError(f"{name} has dtype {embeds.dtype} but the model runs in {self.dtype}; cast it first.")
        if tuple(position_ids.shape) != tuple(embeds.shape[:2]) or position_ids.dtype not in (torch.int32, torch.int64):
            raise InputError(
                f"position_ids must be an integer tensor of shape {tuple(embeds.shape[:2])} matching {name}, got "
                f"{tuple(position_ids.shape)} {position_ids.dtype}."
            )

    def _check_split(self, k: int) -> None:
        if not isinstance(k, int) or not 1 <= k <= self.num_layers:
            raise InputError(f"split layer K must be an int in 1..{self.num_layers}, got {k!r}.")

    def _rope(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.config.text
        return rope_cos_sin(position_ids, t.head_dim, t.rope_theta, self.dtype)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.decoder.norm(hidden))

    def decoder_head(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        K: int,
        visual_span: tuple[int, int] | None,
    ) -> HeadOutput:
        """Layers ``0..K-1`` on the full prompt.

        Args:
            inputs_embeds: ``(1, S, D)``.
            position_ids: ``(1, S)``.
            K: split layer, ``1 <= K <= L``.
            visual_span: ``(start, end)`` of the video tokens; ``None`` (or ``(0, S)``)
                returns the row over all ``S`` keys, for exporters that slice at run time.
        """
        self._check_seq(inputs_embeds, position_ids, "inputs_embeds")
        self._check_split(K)
        s = inputs_embeds.shape[1]
        # No int() here: under torch.export S may be symbolic, and int() would specialise it.
        span = (0, s) if visual_span is None else tuple(visual_span)
        if len(span) != 2 or not 0 <= span[0] < span[1] <= s:
            raise InputError(f"visual_span must satisfy 0 <= start < end <= S={s}, got {visual_span}.")
        cos, sin = self._rope(position_ids)  # (1, S, hd)
        x = inputs_embeds
        present: list[KV] = []
        q = None
        for layer in self.decoder.layers[:K]:
            x, kv, q = layer(x, cos, sin)
            present.append(kv)
        # Only the last token's query row is needed (DESIGN.md Stage III step 1).
        attn_row = last_token_attention(q[0, :, -1], present[-1][0][0], span)  # (L_v,)
        return HeadOutput(hidden=x, present=present, attn_row=attn_row)

    def decoder_tail(self, hidden: torch.Tensor, position_ids: torch.Tensor, K: int) -> TailOutput:
        """Layers ``K..L-1`` on the (possibly merged) sequence, with the kept tokens' original positions.

        Args:
            hidden: ``(1, S', D)`` hidden states entering layer K.
            position_ids: ``(1, S')`` original RoPE positions (gaps allowed, increasing).
        Returns:
            logits ``(1, V)`` of the last position and the L-K ``(key, value)`` pairs.
        """
        self._check_seq(hidden, position_ids, "hidden")
        self._check_split(K)
        cos, sin = self._rope(position_ids)  # (1, S', hd)
        x = hidden
        present: list[KV] = []
        for layer in self.decoder.layers[K:]:
            x, kv, _ = layer(x, cos, sin)
            present.append(kv)
        return TailOutput(logits=self._logits(x[:, -1]), present=present)  # (1, V)

    def decode_step(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        past: list[KV] | StaticKVCache | FixedKVCache | list[SharedKVBuffer],
    ) -> tuple[torch.Tensor, list[KV]]:
        """One new token through all layers.

        Args:
            inputs_embeds: ``(1, 1, D)``.
            position_ids: ``(1, 1)``, e.g. the full (unmerged) prompt length for the first step.
            past: L ``(key, value)`` pairs ``(1, Hkv, S_i, hd)`` (``S_i`` may differ per
                layer), or a :class:`StaticKVCache` that the step writes in place (eager only),
                or a :class:`FixedKVCache` (written in place at its device lengths, which the
                step advances; a CUDA graph can capture this form, see
                :mod:`holitom.runtime.backends.torch.cuda_graph`), or L :class:`SharedKVBuffer` (the onnxruntime decode graph's buffers, see
                :func:`holitom.models.export_attention.shared_buffer_decode_attention`).
        Returns:
            logits ``(1, V)`` and the L updated pairs ``(1, Hkv, S_i + 1, hd)`` (views into
            the static cache's buffers when one was given; a fixed cache's whole buffers
            ``(1, Hkv, capacity, hd)``, whose filled part its lengths say).
        """
        self._check_seq(inputs_embeds, position_ids, "inputs_embeds")
        if inputs_embeds.shape[1] != 1:
            raise InputError(f"decode_step takes one token, got inputs_embeds {tuple(inputs_embeds.shape)}.")
        if isinstance(past, StaticKVCache):
            self._check_past(past.filled())
            layer_pasts = past.layers
        elif isinstance(past, FixedKVCache):
            self._check_past(list(zip(past.keys, past.values)))  # shapes only: no host sync
            layer_pasts = past.layers()
        elif past and isinstance(past[0], SharedKVBuffer):  # the onnxruntime decode graph's buffers (export only)
            self._check_past([(p.key, p.value) for p in past])
            layer_pasts = past
        else:
            self._check_past(past)
            layer_pasts = past
        cos, sin = self._rope(position_ids)  # (1, 1, hd)
        x = inputs_embeds
        present: list[KV] = []
        for layer, kv_past in zip(self.decoder.layers, layer_pasts):
            x, kv, _ = layer(x, cos, sin, kv_past)
            present.append(kv)
        if isinstance(past, FixedKVCache):
            past.lengths.add_(1)  # on the device: the host mirror is the caller's (FixedKVCache.advance_host)
        return self._logits(x[:, -1]), present  # (1, V)

    def _check_past(self, past: list[KV]) -> None:
        t = self.config.text
        if len(past) != t.num_layers:
            raise InputError(f"past must hold one (key, value) pair per layer ({t.num_layers}), got {len(past)}.")
        for i, (k, v) in enumerate(past):
            if k.dim() != 4 or k.shape[0] != 1 or k.shape[1] != t.num_kv_heads or k.shape[3] != t.head_dim or k.shape != v.shape:
                raise InputError(
                    f"past[{i}] must be two (1, {t.num_kv_heads}, S, {t.head_dim}) tensors, got key "
                    f"{tuple(k.shape)} and value {tuple(v.shape)}."
                )

    def prefill(self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, list[KV]]:
        """All layers on the whole prompt, no merge: ``logits (1, S, V)`` and L ``(key, value)`` pairs."""
        self._check_seq(inputs_embeds, position_ids, "inputs_embeds")
        cos, sin = self._rope(position_ids)  # (1, S, hd)
        x = inputs_embeds
        present: list[KV] = []
        for layer in self.decoder.layers:
            x, kv, _ = layer(x, cos, sin)
            present.append(kv)
        return self._logits(x), present  # (1, S, V)


__all__ = ["LlavaModel", "VideoFeatures", "HeadOutput", "TailOutput"]
