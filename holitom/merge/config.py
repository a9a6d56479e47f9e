"""Typed, validated merge configuration and the registry of published presets.

:class:`MergeConfig` holds every HoliTom hyperparameter (DESIGN.md section 2);
:class:`InnerMergeConfig` holds the stage-III ones. Both are frozen dataclasses
validated in ``__post_init__``, so an invalid value fails where it is written,
with a :class:`~holitom.errors.ConfigError` that names the field, the value and
the allowed range. Presets (:func:`get_preset`) carry the paper's settings; CLI
flags and manifests only fill these objects in (:meth:`MergeConfig.from_dict`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from holitom.errors import ConfigError
from holitom.limits import PAPER_RETAIN_PERCENTS, check_int

InnerMode = Literal["sequential", "mean"]
INNER_MODES: tuple[str, ...] = ("sequential", "mean")

# The paper merges inside the LLM at layer 18 of Qwen2-7B's 28 layers; other
# depths scale this fraction (InnerMergeConfig.resolve_layer).
PAPER_INNER_LAYER_FRAC = 18 / 28


def _check_real(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{owner}.{name} must be a real number, got {value!r} ({type(value).__name__}).")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{owner}.{name} must be finite, got {value!r}.")
    return value


def _check_int(owner: str, name: str, value: Any) -> int:
    return check_int(value, f"{owner}.{name}")


@dataclass(frozen=True)
class InnerMergeConfig:
    """Stage III (inner-LLM merge) settings.

    Attributes:
        layer: decoder layer K (0-based) at whose input the merge happens, i.e.
            after layers ``0..K-1`` ran; must lie in ``1..L-1``. ``None`` derives
            it from ``layer_frac``.
        layer_frac: K as a fraction of the decoder depth, used when ``layer`` is
            None; the paper's 18/28 by default. In ``(0, 1)``.
        ratio: R, the share of visual tokens merged away, in ``[0, 1)``.
        mode: ``"sequential"`` (the official running pairwise average, default)
            or ``"mean"`` (uniform mean of a kept token and its members).
    """

    layer: int | None = None
    layer_frac: float = PAPER_INNER_LAYER_FRAC
    ratio: float = 0.5
    mode: InnerMode = "sequential"

    def __post_init__(self) -> None:
        owner = "InnerMergeConfig"
        if self.layer is not None:
            layer = _check_int(owner, "layer", self.layer)
            if layer < 1:
                raise ConfigError(
                    f"{owner}.layer must be >= 1 (the merge needs layer K-1's attention), got {layer}; "
                    "use None to derive it from layer_frac."
                )
        frac = _check_real(owner, "layer_frac", self.layer_frac)
        if not 0.0 < frac < 1.0:
            raise ConfigError(f"{owner}.layer_frac must lie in (0, 1), got {frac!r}.")
        ratio = _check_real(owner, "ratio", self.ratio)
        if not 0.0 <= ratio < 1.0:
            raise ConfigError(f"{owner}.ratio (R) must lie in [0, 1), got {ratio!r}; R = 0.5 merges half the visual tokens.")
        if self.mode not in INNER_MODES:
            raise ConfigError(f"{owner}.mode must be one of {list(INNER_MODES)}, got {self.mode!r}.")
        # Normalise ints given for float fields so equality and to_dict are stable.
        object.__setattr__(self, "layer_frac", frac)
        object.__setattr__(self, "ratio", ratio)

    def resolve_layer(self, num_layers: int) -> int:
        """The merge layer K for a decoder of ``num_layers`` layers.

        An explicit ``layer`` wins and must lie in ``1..num_layers-1``;
        otherwise ``round(layer_frac * num_layers)`` (Python round, half to even)
        clamped to that range, e.g. 18 for 28 layers and 15 for 24 layers.
        """
        num_layers = _check_int("resolve_layer", "num_layers", num_layers)
        if num_layers < 2:
            raise ConfigError(f"the inner merge needs a decoder of at least 2 layers, got num_layers={num_layers}.")
        if self.layer is not None:
            if not 1 <= self.layer <= num_layers - 1:
                raise ConfigError(
                    f"InnerMergeConfig.layer={self.layer} is outside 1..{num_layers - 1} for a {num_layers}-layer "
                    "decoder; pick a layer in that range or set layer=None to scale layer_frac."
                )
            return self.layer
        return min(max(round(self.layer_frac * num_layers), 1), num_layers - 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict; :meth:`from_dict` round-trips it."""
        return {"layer": self.layer, "layer_frac": self.layer_frac, "ratio": self.ratio, "mode": self.mode}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "InnerMergeConfig":
        return cls(**known_fields(cls, data))


@dataclass(frozen=True)
class MergeConfig:
    """All HoliTom hyperparameters (DESIGN.md section 2).

    Attributes:
        retain_ratio: r in ``(0, 1]``, the share of the ``F * P`` video tokens the
            outer merge aims to keep. ``None`` disables the outer merge
            (vanilla: every token, in order, with the layout's newlines).
        tau: cosine threshold in ``[-1, 1]``; a position is static over a window
            when consecutive frames' similarity is ``> tau`` throughout.
        beta: weight of a cluster's centre in its merged token, in ``[0, 1]``.
        contextual_frac: D_frac in ``[0, 1]``, the share of each frame's dynamic
            budget given to density-clustered contextual tokens (0 = pure
            attention top-k).
        k_nn: neighbours for the DPC density, ``>= 1`` (capped by the cluster
            count, as DESIGN.md says).
        max_window: longest temporal window in frames (``>= 1``), ``None`` =
            unbounded.
        inner: stage III settings, or ``None`` for no inner merge.
    """

    retain_ratio: float | None = None
    tau: float = 0.8
    beta: float = 0.6
    contextual_frac: float = 0.0
    k_nn: int = 7
    max_window: int | None = None
    inner: InnerMergeConfig | None = None

    def __post_init__(self) -> None:
        owner = "MergeConfig"
        if self.retain_ratio is not None:
            r = _check_real(owner, "retain_ratio", self.retain_ratio)
            if not 0.0 < r <= 1.0:
                raise ConfigError(
                    f"{owner}.retain_ratio (r) must lie in (0, 1], got {r!r}; use None for no outer merge."
                )
            object.__setattr__(self, "retain_ratio", r)
        tau = _check_real(owner, "tau", self.tau)
        if not -1.0 <= tau <= 1.0:
            raise ConfigError(f"{owner}.tau must lie in [-1, 1] (it is a cosine similarity), got {tau!r}.")
        beta = _check_real(owner, "beta", self.beta)
        if not 0.0 <= beta <= 1.0:
            raise ConfigError(f"{owner}.beta must lie in [0, 1], got {beta!r}.")
        frac = _check_real(owner, "contextual_frac", self.contextual_frac)
        if not 0.0 <= frac <= 1.0:
            raise ConfigError(f"{owner}.contextual_frac (D_frac) must lie in [0, 1], got {frac!r}.")
        k_nn = _check_int(owner, "k_nn", self.k_nn)
        if k_nn < 1:
            raise ConfigError(f"{owner}.k_nn must be >= 1, got {k_nn}.")
        if self.max_window is not None:
            w = _check_int(owner, "max_window", self.max_window)
            if w < 1:
                raise ConfigError(f"{owner}.max_window must be >= 1 frame or None (unbounded), got {w}.")
        if self.inner is not None and not isinstance(self.inner, InnerMergeConfig):
            raise ConfigError(
                f"{owner}.inner must be an InnerMergeConfig or None, got {type(self.inner).__name__}; "
                "build it with InnerMergeConfig(...) or MergeConfig.from_dict."
            )
        object.__setattr__(self, "tau", tau)
        object.__setattr__(self, "beta", beta)
        object.__setattr__(self, "contextual_frac", frac)

    @property
    def outer_enabled(self) -> bool:
        """Whether stages I+II run (False = vanilla token sequence)."""
        return self.retain_ratio is not None

    @property
    def inner_enabled(self) -> bool:
        """Whether stage III runs."""
        return self.inner is not None

    def replace(self, **changes: Any) -> "MergeConfig":
        """A copy with ``changes`` applied (validated again)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(
                f"MergeConfig has no field(s) {sorted(unknown)}; known fields: {[f.name for f in dataclasses.fields(self)]}."
            )
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (used in the export manifest); :meth:`from_dict` round-trips it."""
        return {
            "retain_ratio": self.retain_ratio,
            "tau": self.tau,
            "beta": self.beta,
            "contextual_frac": self.contextual_frac,
            "k_nn": self.k_nn,
            "max_window": self.max_window,
            "inner": None if self.inner is None else self.inner.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MergeConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ConfigError."""
        fields = known_fields(cls, data)
        inner = fields.get("inner")
        if isinstance(inner, dict):
            fields["inner"] = InnerMergeConfig.from_dict(inner)
        return cls(**fields)


def known_fields(cls: type, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}.")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{cls.__name__}.from_dict got unknown key(s) {unknown}; known keys: {names}.")
    return dict(data)


# --------------------------------------------------------------------------- presets

_PRESETS: dict[str, Any] = {}
# Config types a preset may hold: HoliTom's MergeConfig, plus the competing methods'
# configs that holitom.merge.methods registers together with their reduction adapter.
_PRESET_TYPES: list[type] = [MergeConfig]


def register_preset_type(config_type: type) -> None:
    """Allow presets of ``config_type`` (it must have a reduction in :mod:`holitom.merge.methods`)."""
    if config_type not in _PRESET_TYPES:
        _PRESET_TYPES.append(config_type)


def register_preset(name: str, config: Any, *, overwrite: bool = False) -> None:
    """Register ``config`` under ``name``; re-registering a name needs ``overwrite=True``."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a preset name must be a non-empty string, got {name!r}.")
    if type(config) not in _PRESET_TYPES:
        allowed = ", ".join(t.__name__ for t in _PRESET_TYPES)
        raise ConfigError(f"preset '{name}' must be one of {allowed}, got {type(config).__name__}.")
    if name in _PRESETS and not overwrite:
        raise ConfigError(f"preset '{name}' is already registered; pass overwrite=True to replace it.")
    _PRESETS[name] = config


def get_preset(name: str) -> Any:
    """The config registered as ``name`` (a MergeConfig for HoliTom presets); ConfigError listing the known names otherwise."""
    try:
        return _PRESETS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown merge preset {name!r}; known presets: {preset_names()}.") from None


def preset_names() -> list[str]:
    """Registered preset names, in registration order."""
    return list(_PRESETS)


def _register_published() -> None:
    register_preset("none", MergeConfig())
    # Paper settings (DESIGN.md section 2): tau 0.65 at r = 0.10, 0.80 otherwise;
    # beta 0.6, D_frac 0, k_nn 7, unbounded windows; inner merge at 18/28 depth, R = 0.5.
    for percent in PAPER_RETAIN_PERCENTS:
        tau = 0.65 if percent == 10 else 0.80
        outer = MergeConfig(retain_ratio=percent / 100, tau=tau, beta=0.6, contextual_frac=0.0, k_nn=7)
        register_preset(f"r{percent}", outer.replace(inner=InnerMergeConfig()))
        register_preset(f"r{percent}-outer", outer)


_register_published()

__all__ = [
    "INNER_MODES",
    "PAPER_INNER_LAYER_FRAC",
    "InnerMergeConfig",
    "MergeConfig",
    "get_preset",
    "preset_names",
    "register_preset",
    "register_preset_type",
]
