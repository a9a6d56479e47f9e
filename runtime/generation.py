"""Next-token selection for the decode loop: greedy or seeded sampling, in numpy.

One selector for every backend: the pipeline hands it the last position's
logits on the host (one (V,) vector per token, already what a sampler reads).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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
        self._rng = np.random.default_rng(config.seed)

    def __call__(self, logits: np.ndarray) -> int:
        logits = np.asarray(logits, dtype=np.float64).reshape(-1)  # (V,)
        if not self.config.do_sample:
            # argmax returns the first maximum: ties go to the lowest token id.
            return int(np.argmax(logits))
        logits = logits / self.config.temperature
        if self.config.top_k:
            k = min(self.config.top_k, logits.size)
            kth = np.partition(logits, logits.size - k)[logits.size - k]
            logits = np.where(logits < kth, -np.inf, logits)
        probs = _softmax(logits)  # (V,)
        if self.config.top_p < 1.0:
            order = np.argsort(-probs, kind="stable")  # (V,) most likely first, ties by token id
            mass_before = np.cumsum(probs[order]) - probs[order]
            # Drop a token when the mass before it already reaches top_p; the top token always stays.
            drop = np.zeros(probs.size, dtype=bool)
            drop[order] = mass_before >= self.config.top_p
            probs = _softmax(np.where(drop, -np.inf, logits))
        # Inverse CDF of one uniform draw: the first token whose cumulative mass passes it.
        cumulative = np.cumsum(probs)
        return int(min(np.searchsorted(cumulative, self._rng.random() * cumulative[-1], side="right"), probs.size - 1))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())  # -inf -> 0
    return shifted / shifted.sum()
