"""Next-token selection for the decode loop: greedy or seeded sampling."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from holitom.errors import ConfigError


@dataclass(frozen=True)
class GenerationConfig:
    """How the decode loop picks tokens and when it stops.

    ``stop_token_ids`` of ``None`` means the tokenizer's end-of-sequence and
    end-of-turn tokens.
    """

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    stop_token_ids: tuple[int, ...] | None = None

    def __post_init__(self):
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens={self.max_new_tokens!r} must be an integer >= 1.")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError(f"temperature={self.temperature!r} must be a finite number > 0.")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ConfigError(f"top_k={self.top_k!r} must be an integer >= 0 (0 disables top-k).")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p={self.top_p!r} must be in (0, 1] (1 disables nucleus sampling).")
        from holitom.limits import MAX_SEED, MIN_SEED, check_int

        check_int(self.seed, "seed", MIN_SEED, MAX_SEED)


class TokenSelector:
    """Picks the next token from last-position logits; owns the seeded RNG for sampling."""

    def __init__(self, config: GenerationConfig):
        self.config = config
        self._generator = torch.Generator().manual_seed(config.seed)

    def __call__(self, logits: torch.Tensor) -> int:
        logits = logits.reshape(-1).float().cpu()  # (V,)
        if not self.config.do_sample:
            # argmax returns the first maximum: ties go to the lowest token id.
            return int(torch.argmax(logits))
        logits = logits / self.config.temperature
        if self.config.top_k:
            k = min(self.config.top_k, logits.numel())
            kth = torch.topk(logits, k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.config.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True)  # (V,)
            cumulative = sorted_logits.softmax(-1).cumsum(-1)
            # Drop a token when the mass before it already reaches top_p; the top token always stays.
            drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= self.config.top_p
            logits = logits.masked_fill(torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted), float("-inf"))
        probs = logits.softmax(-1)
        return int(torch.multinomial(probs, 1, generator=self._generator))
