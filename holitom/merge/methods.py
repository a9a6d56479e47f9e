"""One interface over every token-reduction method the runtime can run, dispatched by config type.

A preset's config is either a HoliTom :class:`~holitom.merge.config.MergeConfig`
or a competing method's :class:`~holitom.merge.baselines.BaselineConfig`.
:func:`reduction_for` maps the config's TYPE to a :class:`Reduction` adapter
(a registry, STYLE.md rule 4), so runtime code never branches on method names:

- ``outer(features, attention, grid, layout, newline)``: the visual tokens entering the LLM;
- ``inner_layer(num_layers)``: K, or None when the method has no inner step;
- ``inner(hidden, scores, visual_span)``: the sequence after layer K-1;
- ``without_inner()``: the same method minus its inner step.

Competing presets (registered here, all at the paper's ratios r = 0.10..0.25)
keep the same visual-token budget as HoliTom's outer merge, round(r * F * P):

- ``pool-rXX``: uniform spatial pooling per frame (the grid shrinks; ~equal budget,
  see :func:`holitom.merge.baselines.uniform_pool_grid`);
- ``topk-rXX``: per-frame attention top-k, VisionZip's dominant tokens;
- ``evs-rXX``: EVS-style temporal pruning (frame 0 kept, then least-changed tokens dropped);
- ``fastv-rXX``: FastV, every token for layers < K, then the round(r * L_v) most-attended
  tokens for layers >= K, dropped without merging (K = HoliTom's 18/28 depth).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from holitom.errors import ConfigError
from holitom.limits import PAPER_RETAIN_PERCENTS
from holitom.merge.baselines import ATTENTION_BASELINES, BaselineConfig, apply_fastv, apply_reduction, plan_fastv
from holitom.merge.config import PAPER_INNER_LAYER_FRAC, MergeConfig, register_preset, register_preset_type
from holitom.merge.inner import apply_inner_merge, plan_inner_merge
from holitom.merge.layout import get_layout, place_tokens
from holitom.merge.outer import outer_merge


class Reduction:
    """Adapter base: what the runtime asks of a reduction method."""

    def __init__(self, config: Any):
        self.config = config

    def outer(self, features, attention, grid, layout, newline) -> torch.Tensor:  # (N, D)
        raise NotImplementedError

    def inner_layer(self, num_layers: int) -> int | None:
        raise NotImplementedError

    def inner(self, hidden, scores, visual_span) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def without_inner(self) -> Any:
        raise NotImplementedError

    @property
    def needs_vision_attention(self) -> bool:
        """Whether ``outer`` reads the vision attention (False: the vision stage may skip it)."""
        raise NotImplementedError


_METHODS: dict[type, type[Reduction]] = {}


def register_method(config_type: type):
    """Class decorator: ``config_type`` configs are run by the decorated :class:`Reduction`."""

    def wrap(cls: type[Reduction]) -> type[Reduction]:
        _METHODS[config_type] = cls
        register_preset_type(config_type)
        return cls

    return wrap


def reduction_for(config: Any) -> Reduction:
    try:
        return _METHODS[type(config)](config)
    except KeyError:
        raise ConfigError(
            f"no reduction method is registered for {type(config).__name__}; known config types: "
            f"{sorted(t.__name__ for t in _METHODS)}."
        ) from None


@register_method(MergeConfig)
class HoliTomReduction(Reduction):
    def outer(self, features, attention, grid, layout, newline):
        return outer_merge(features, attention, self.config, grid, layout, newline).tokens

    def inner_layer(self, num_layers):
        return None if self.config.inner is None else self.config.inner.resolve_layer(num_layers)

    def inner(self, hidden, scores, visual_span):
        start, end = visual_span
        plan = plan_inner_merge(scores, hidden[start:end], self.config.inner.ratio)
        return apply_inner_merge(hidden, visual_span, plan, self.config.inner.mode)

    def without_inner(self):
        return self.config.replace(inner=None)

    @property
    def needs_vision_attention(self):
        return self.config.outer_enabled  # stage II ranks dynamic tokens by attention


@register_method(BaselineConfig)
class BaselineReduction(Reduction):
    def outer(self, features, attention, grid, layout, newline):
        plan = self.config.plan(features, attention, grid)
        tokens = apply_reduction(features, plan)  # (N, D), frame then position order
        return place_tokens(get_layout(layout), tokens, plan.frame_index, plan.position_index, features.shape[0], grid, newline)

    def inner_layer(self, num_layers):
        return self.config.fastv_layer(num_layers)

    def inner(self, hidden, scores, visual_span):
        return apply_fastv(hidden, visual_span, plan_fastv(scores, self.config.fastv_ratio))

    def without_inner(self):
        return dataclasses.replace(self.config, fastv_layer_frac=None)

    @property
    def needs_vision_attention(self):
        return self.config.method in ATTENTION_BASELINES


@dataclass(frozen=True)
class _Competitor:
    prefix: str
    method: str
    fastv: bool = False


COMPETITORS = (
    _Competitor("pool", "uniform_pool"),
    _Competitor("topk", "attention_topk"),
    _Competitor("evs", "evs"),
    _Competitor("fastv", "attention_topk", fastv=True),
)


def _register_competitors() -> None:
    for c in COMPETITORS:
        for percent in PAPER_RETAIN_PERCENTS:
            r = percent / 100
            if c.fastv:  # identity outer step (r = 1), FastV keeps round(r * L_v) at K
                config = BaselineConfig(c.method, 1.0, fastv_layer_frac=PAPER_INNER_LAYER_FRAC, fastv_ratio=1.0 - r)
            else:
                config = BaselineConfig(c.method, r)
            register_preset(f"{c.prefix}-r{percent}", config)


_register_competitors()

__all__ = ["COMPETITORS", "BaselineReduction", "HoliTomReduction", "Reduction", "reduction_for", "register_method"]
