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

    ``bound`` names the hyperparameter that bounds ``|phi|`` (bounded kinds only), and
    ``bound_factor`` what it is multiplied by (``|phi| < bound_factor * hyper[bound]``: 1 for tanh's
    limit, pi/2 for arctan's ``a``): weights at or beyond it cannot be inverted, and the overflow
    policy of ``compand`` decides what happens.
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
    bound_factor: float = 1.0

    def __post_init__(self) -> None:
        if self.bound is not None and self.bound not in self.hyperparameters:
            raise ValueError(
                f"kind {self.name!r}: bound {self.bound!r} is not one of its hyperparameters "
                f"{sorted(self.hyperparameters)}."
            )
        if not (math.isfinite(self.bound_factor) and self.bound_factor > 0):
            raise ValueError(
                f"kind {self.name!r}: bound_factor must be a positive number; got {self.bound_factor}."
            )

    def bound_value(self, hyper: Mapping[str, Tensor]) -> Tensor:
        """The bound on ``|phi|`` (unit scale) for these hyperparameter values (bounded kinds only)."""
        return self.bound_factor * hyper[self.bound]

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
            edge = (1.0 - defaults.OVERFLOW_MARGIN) * self.bound_value(hyper)
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
    bound_factor: float = 1.0,
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
        bound_factor: ``|phi| < bound_factor * bound`` (e.g. ``math.pi / 2`` for ``a * arctan``).
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
    kind = Kind(name, forward, inverse, specs, bound=bound, fused=fused, bound_factor=bound_factor)
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
    # sign(x) * (even in x) is exactly odd for x != 0; at x = +-0 the line through it (x * slope)
    # takes over, so f(-0) = -0 and autograd's slope there is the true one (abs has slope 0 at 0,
    # which would freeze a weight that is exactly 0). No copysign: ONNX has no such operator.
    curve = crossover * torch.log1p(mu * x.abs() / crossover) * torch.sign(x) / torch.log1p(mu)
    return torch.where(x == 0, x * (mu / torch.log1p(mu)), curve)


def _mulaw_inverse(y: Tensor, mu: Tensor, crossover: Tensor) -> Tensor:
    return crossover * torch.expm1(y.abs() * torch.log1p(mu) / crossover).copysign(y) / mu


# torch's atan, asinh, erf and their inverses are odd to the last bit on their own (tests check
# it), so the formulas are written plainly: a copysign(|x|) form would also be odd, but its
# autograd slope at exactly v = 0 is 0 (abs has gradient 0 there), and a zero weight never moves.


def _a_phi_of_v_over_b(
    phi: Callable[[Tensor], Tensor], phi_inverse: Callable[[Tensor], Tensor]
) -> tuple[Callable[..., Tensor], Callable[..., Tensor]]:
    """``a * phi(x / b)`` and its inverse ``b * phi^-1(y / a)``: the paper's family."""

    def forward(x: Tensor, a: Tensor, b: Tensor) -> Tensor:
        return a * phi(x / b)

    def inverse(y: Tensor, a: Tensor, b: Tensor) -> Tensor:
        return b * phi_inverse(y / a)

    return forward, inverse


def _linear(x: Tensor, slope: Tensor) -> Tensor:
    return slope * x


def _linear_inverse(y: Tensor, slope: Tensor) -> Tensor:
    return y / slope


def _powerprop(x: Tensor, alpha: Tensor) -> Tensor:
    # v * |v|^(alpha - 1) as sign(v) * |v|^alpha (no 0 * inf at v = 0); +-0 stay +-0 with slope 0
    # there, the true one for alpha > 1. No copysign: ONNX has no such operator.
    return torch.where(x == 0, x * 0, x.abs().pow(alpha) * torch.sign(x))


def _powerprop_inverse(y: Tensor, alpha: Tensor) -> Tensor:
    return y.abs().pow(1.0 / alpha).copysign(y)  # only used eagerly (right_inverse), never exported


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
    _register_paper_kinds()


def _register_paper_kinds() -> None:
    """The paper's function family (its Table VII), its same-slope linear control and its peer.

    The paper uses them in absolute units (``scale=1.0``): ``w = a * arctan(v / b)`` with one
    ``(a, b)`` for the whole network.
    """
    from .fused import fused_odd  # CPU float32: one C kernel pass each way; else the formula

    ab = {"a": Hyperparameter(defaults.PAPER_A), "b": Hyperparameter(defaults.PAPER_B)}
    for name, phi, phi_inverse, bound, factor in [
        ("arctan", torch.atan, torch.tan, "a", math.pi / 2),
        ("asinh", torch.asinh, torch.sinh, None, 1.0),
        ("erf", torch.erf, torch.erfinv, "a", 1.0),
    ]:
        forward, inverse = _a_phi_of_v_over_b(phi, phi_inverse)
        fused = fused_odd(name, forward)
        register_kind(name, forward, inverse, ab, bound=bound, bound_factor=factor, fused=fused)
    register_kind("linear", _linear, _linear_inverse, {"slope": Hyperparameter(defaults.LINEAR_SLOPE)})
    register_kind(
        "powerprop",
        _powerprop,
        _powerprop_inverse,
        {"alpha": Hyperparameter(defaults.POWERPROP_ALPHA, lower=1.0)},
        fused=fused_odd("powerprop", _powerprop),
    )


_register_builtins()
