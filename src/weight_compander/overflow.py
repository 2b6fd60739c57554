"""Bounded kinds: what to do with weights at or beyond the bound, and how to say what was done.

Values beyond ``(1 - OVERFLOW_MARGIN) * bound`` invert to huge raw values with almost no gradient
(saturated, dead weights), so ``compand`` applies a policy: ``"expand"`` raises the bound to cover
them, ``"clip"`` clips them, ``"error"`` refuses. ``apply`` reports all its tensors in one warning:
transformers' normal(0, 0.02) init puts ~4.5 % of every weight beyond 2 s, and one line per tensor
would bury the output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from . import defaults
from .functions import Kind

__all__ = ["POLICIES", "Overflow", "fit_bound", "message"]

POLICIES = ("expand", "clip", "error")


@dataclass
class Overflow:
    """Values of one tensor at or beyond the bound of a bounded kind, and what the policy did."""

    where: str
    touched: int
    numel: int
    kind: str
    bound: str
    before: float  # the bound asked for, in units of s
    raised: float | None  # the bound it was raised to (overflow="expand"); None: clipped
    factor: float = 1.0  # |phi| < factor * bound (pi/2 for arctan's a)


def fit_bound(
    w: Tensor, s: Tensor, bound: Tensor, shape: tuple[int, ...], policy: str, where: str, spec: Kind
) -> tuple[Tensor, Overflow | None]:
    """Apply the policy to ``w`` (scale ``s``); the bound to use, and what was touched.

    ``shape`` is ``()`` for one bound per tensor, else the per-channel shape of the bound.
    """
    ratio = (w.double() / s.double()).abs()
    others = tuple(d for d, n in enumerate(shape) if n == 1)  # per channel: reduce all but its axis
    peak = ratio.amax(dim=others, keepdim=True) if shape else ratio.max()
    usable = 1.0 - defaults.OVERFLOW_MARGIN
    factor = spec.bound_factor  # |phi| < factor * bound (pi/2 for arctan's a)
    touched = int((ratio > usable * factor * bound).sum())
    if not touched:
        return bound, None
    note = Overflow(where, touched, w.numel(), spec.name, spec.bound, bound.max().item(), None, factor)
    if policy == "error":
        raise ValueError(
            f"{_what([note])}; pass a larger {spec.bound}=, overflow='expand' to raise it, "
            "or overflow='clip' to clip those values."
        )
    if policy == "expand":
        raised = torch.maximum(bound.expand(peak.shape), peak * (1 + 1e-6) / (usable * factor))
        note.raised = raised.max().item()
        return raised, note
    return bound, note


def _what(notes: list[Overflow], tensors: int = 1) -> str:
    first = notes[0]
    touched, numel = sum(n.touched for n in notes), sum(n.numel for n in notes)
    if len(notes) == 1:
        what = f"{touched} of {numel} values of {first.where}"
    else:
        worst = sorted(notes, key=lambda n: -n.touched / n.numel)[:3]
        what = (
            f"{touched} of {numel} values ({touched / numel:.1%}) in {len(notes)} of {tensors} tensors "
            f"(most: {', '.join(f'{n.where} {n.touched / n.numel:.1%}' for n in worst)})"
        )
    if first.factor == 1.0:
        return f"{what} lie at or beyond the {first.kind} {first.bound} ({first.before:g}·s)"
    return (f"{what} lie at or beyond the {first.kind} bound {first.factor:.4g}·{first.bound} "
            f"({first.bound} = {first.before:g}·s)")


def message(notes: list[Overflow], tensors: int = 1) -> str:
    """The warning for one tensor, or one for all the ``tensors`` of an ``apply`` call."""
    first, text = notes[0], _what(notes, tensors)
    raised = [n.raised for n in notes if n.raised is not None]
    if raised:
        to = f"{max(raised):.4g}·s" if len(notes) == 1 else f"at most {max(raised):.4g}·s"
        return (
            f"{text}; {first.bound} raised to {to} so they invert exactly "
            "(overflow='clip' would clip them instead)."
        )
    usable = 1.0 - defaults.OVERFLOW_MARGIN
    return (
        f"{text}; clipped to {usable * first.factor:.4g}·{first.bound}·s, so outputs change slightly "
        "(overflow='expand' would keep them)."
    )
