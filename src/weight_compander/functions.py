"""The compander family: a name -> kind table of odd, increasing functions and their inverses.

Every kind is defined on the unit scale: ``phi(x, **hyper)`` with ``x = v / s``, so the
network computes ``w = s * phi(v / s)`` and all hyperparameters are in units of ``s``. That is
what lets one setting fit layers whose weight scales differ by 20x.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from . import defaults
from .fused import channel_axis

__all__ = ["Hyperparameter", "Kind", "get_kind", "kinds", "register_kind"]


@dataclass(frozen=True)
class Hyperparameter:
    """A positive hyperparameter: its default and the lower bound it must stay above.

    A learnable one is stored unconstrained as ``raw = log(value - lower)``, so no optimizer
    step can make it invalid. ``closed=True`` also admits ``value == lower`` when fixed
    (a gain of exactly 1 turns the push away from zero off).
    """

    default: float
    lower: float = 0.0
    closed: bool = False

    def check(self, kind: str, name: str, value: float, learnable: bool) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{kind} {name} must be a number; got {value!r} ({type(value).__name__}).")
        value = float(value)
        allowed_equal = self.closed and not learnable
        if not math.isfinite(value) or value < self.lower or (value == self.lower and not allowed_equal):
            relation = ">=" if allowed_equal else ">"
            hint = (
                f" A learnable {name} starts strictly above {self.lower:g}; fix it instead"
                f" (learnable=False) to use {self.lower:g}."
                if self.closed and learnable and value == self.lower
                else ""
            )
            raise ValueError(
                f"{kind} {name} must be finite and {relation} {self.lower:g}; got {value}.{hint}"
            )
        return value


@dataclass(frozen=True)
class Kind:
    """One compander: ``forward(x, **hyper)`` and its exact ``inverse(y, **hyper)`` on unit scale.

    ``bound`` names the hyperparameter that bounds ``|phi|`` (bounded kinds only): weights at or
    beyond it cannot be inverted, and the overflow policy of ``compand`` decides what happens.
    ``fused`` is an optional fast path ``fused(v, s, **hyper) -> w`` with the same values; ``s`` and
    the hyperparameters it gets are one value each or one per index of dim 0 of ``v`` (``compand``
    moves channels on another axis there, and takes the formula if they vary along several).
    """

    name: str
    forward: Callable[..., Tensor]
    inverse: Callable[..., Tensor]
    hyperparameters: Mapping[str, Hyperparameter] = field(default_factory=dict)
    bound: str | None = None
    fused: Callable[..., Tensor] | None = None

    def __post_init__(self) -> None:
        if self.bound is not None and self.bound not in self.hyperparameters:
            raise ValueError(
                f"kind {self.name!r}: bound {self.bound!r} is not one of its hyperparameters "
                f"{sorted(self.hyperparameters)}."
            )

    def compand(self, v: Tensor, scale: Tensor, hyper: Mapping[str, Tensor]) -> Tensor:
        axis = channel_axis(v, scale, *hyper.values()) if self.fused is not None else None
        if axis is None:
            return scale * self.forward(v / scale, **hyper)
        if axis == 0:
            return self.fused(v, scale, **hyper)
        # Channels on another axis (ConvTranspose, transformers' Conv1D): a fused function reduces
        # per-channel gradients over dim 0, so it gets the channels there.
        first = {k: h.movedim(axis, 0) if h.dim() else h for k, h in hyper.items()}
        s = scale.movedim(axis, 0) if scale.dim() else scale
        return self.fused(v.movedim(axis, 0).contiguous(), s, **first).movedim(0, axis)

    def expand(self, w: Tensor, scale: Tensor, hyper: Mapping[str, Tensor]) -> Tensor:
        y = w / scale
        if self.bound is not None:  # the inverse diverges at the bound: clip just inside it
            edge = (1.0 - defaults.OVERFLOW_MARGIN) * hyper[self.bound]
            y = torch.maximum(torch.minimum(y, edge), -edge)
        return scale * self.inverse(y, **hyper)


_KINDS: dict[str, Kind] = {}


def register_kind(
    name: str,
    forward: Callable[..., Tensor],
    inverse: Callable[..., Tensor],
    hyperparameters: Mapping[str, float | Hyperparameter] | None = None,
    *,
    bound: str | None = None,
    fused: Callable[..., Tensor] | None = None,
    replace: bool = False,
) -> Kind:
    """Add a compander kind, usable by name in ``compand``/``apply`` from then on.

    Args:
        name: the name users pass as ``kind=``.
        forward: ``phi(x, **hyper)``, odd and strictly increasing, on unit scale (x = v / s).
        inverse: the exact inverse ``phi^-1(y, **hyper)`` (used so companding leaves outputs
            unchanged).
        hyperparameters: name -> default value (a positive number) or a ``Hyperparameter``.
        bound: the hyperparameter that bounds ``|phi|``, for bounded kinds.
        fused: optional fast path ``fused(v, s, **hyper) -> w`` computing the same values as
            ``s * forward(v / s)`` (e.g. with an analytic backward, which should then also give
            second derivatives: ``fused.py`` shows how). ``s`` and the hyperparameters it gets
            are one value each or one per index of dim 0 of ``v``.
        replace: allow replacing an existing kind of that name.

    Example::

        >>> import torch, weight_compander as wc
        >>> wc.register_kind("cubic-root", lambda x, a: torch.sign(x) * (a * x.abs()) ** (1 / 3),
        ...                  lambda y, a: torch.sign(y) * y.abs() ** 3 / a, {"a": 1.0})
        Kind(name='cubic-root', ...)
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a kind needs a non-empty string name; got {name!r}.")
    if name in _KINDS and not replace:
        raise ValueError(f"kind {name!r} is already registered; pass replace=True to replace it.")
    if not callable(forward) or not callable(inverse):
        raise TypeError(f"kind {name!r} needs callable forward and inverse functions.")
    specs = {}
    for hyper_name, spec in (hyperparameters or {}).items():
        if not isinstance(spec, Hyperparameter):
            spec = Hyperparameter(Hyperparameter(1.0).check(name, hyper_name, spec, False))
        specs[hyper_name] = spec
    kind = Kind(name, forward, inverse, specs, bound=bound, fused=fused)
    _KINDS[name] = kind
    return kind


def get_kind(kind: str | Kind) -> Kind:
    """Look a kind up by name (a ``Kind`` passes through)."""
    if isinstance(kind, Kind):
        return kind
    if isinstance(kind, str) and kind in _KINDS:
        return _KINDS[kind]
    raise ValueError(f"unknown compander kind {kind!r}; valid kinds: {', '.join(kinds())}.")


def kinds() -> tuple[str, ...]:
    """The names of all registered kinds."""
    return tuple(_KINDS)


# --- built-in kinds -------------------------------------------------------------------------


def _tanh(x: Tensor, gain: Tensor, limit: Tensor) -> Tensor:
    # exactly odd as it stands: x*g, /L and torch.tanh each are (tests check it)
    return limit * torch.tanh(gain * x / limit)


def _tanh_inverse(y: Tensor, gain: Tensor, limit: Tensor) -> Tensor:
    return limit / gain * torch.atanh(y / limit)  # exactly odd, like _tanh (tests check it)


def _mulaw(x: Tensor, mu: Tensor, crossover: Tensor) -> Tensor:
    # copysign rather than sign(x) * ...: f(-0) = -0, so the function is odd to the last bit
    return crossover * torch.log1p(mu * x.abs() / crossover).copysign(x) / torch.log1p(mu)


def _mulaw_inverse(y: Tensor, mu: Tensor, crossover: Tensor) -> Tensor:
    return crossover * torch.expm1(y.abs() * torch.log1p(mu) / crossover).copysign(y) / mu


def _identity(x: Tensor) -> Tensor:
    return x


def _identity_fused(v: Tensor, scale: Tensor) -> Tensor:
    return v  # exactly v: s * (v / s) could differ in the last bit


def _register_builtins() -> None:
    from .fused import fused_tanh  # the analytic fast path of the same function

    register_kind(
        "tanh",
        _tanh,
        _tanh_inverse,
        {
            "gain": Hyperparameter(defaults.TANH_GAIN, lower=1.0, closed=True),
            "limit": Hyperparameter(defaults.TANH_LIMIT),
        },
        bound="limit",
        fused=fused_tanh,
    )
    register_kind(
        "mulaw",
        _mulaw,
        _mulaw_inverse,
        {"mu": Hyperparameter(defaults.MULAW_MU), "crossover": Hyperparameter(defaults.MULAW_CROSSOVER)},
    )
    register_kind("identity", _identity, _identity, fused=_identity_fused)


_register_builtins()
