"""How much of a model's weight matrices is companded, and the largest tensors that are not.

A model whose layers are of a type nobody registered (GPT-2's ``Conv1D`` was one) looks companded
and is not: ``apply`` returns only the tensors it found. Coverage makes that visible: the share of
all weight-matrix parameters (tensors with ``dim() >= 2``, tied ones counted once) that are
companded, and the largest tensors left out, so a missing layer type is one look away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn
from torch.nn.utils import parametrize

from .defaults import COVERAGE_WARNING, UNREGISTERED_WARNING
from .layer_types import layer_spec
from .parametrization import Compander, SharedCompander
from .selection import join_name, user_modules

__all__ = ["Applied", "Coverage", "coverage"]


@dataclass(frozen=True)
class Coverage:
    """``companded`` of ``total`` weight-matrix parameters are companded; ``left_out`` lists the
    largest other weight matrices as (name, shape, module type), largest first."""

    companded: int
    total: int
    left_out: tuple[tuple[str, tuple[int, ...], str], ...]
    unregistered: int = 0  # left-out parameters in modules of no registered layer type

    @property
    def suspicious(self) -> bool:
        """Less than half companded, or a tenth or more in layers the registry does not know
        (a layer type missing from it, such as XLNet's 3-D attention weights)."""
        return self.share < COVERAGE_WARNING or self.unregistered >= UNREGISTERED_WARNING * self.total

    @property
    def share(self) -> float:
        return self.companded / self.total if self.total else 1.0

    def __str__(self) -> str:
        text = (
            f"companded {self.share:.1%} of the weight-matrix parameters "
            f"({self.companded:,} of {self.total:,})"
        )
        if self.left_out:
            shown = ", ".join(f"{n} {'x'.join(map(str, s))} ({t})" for n, s, t in self.left_out)
            text += f"; largest left out: {shown}"
        return text


class Applied(list):
    """What ``apply`` returns: the companded tensor names (a plain list of them), plus ``coverage``."""

    coverage: Coverage


def coverage(model: nn.Module, top: int = 5) -> Coverage:
    """Share of the model's weight-matrix parameters that are companded, and the largest left out.

    Args:
        model: any model, companded or not.
        top: how many left-out tensors to name.

    Example::

        >>> print(wc.apply(model).coverage)
        companded 99.4% of the weight-matrix parameters (85,056,000 of 85,842,432); largest left
        out: transformer.wpe.weight 1024x768 (Embedding)
    """
    seen: dict[int, tuple[str, tuple[int, ...], str, bool]] = {}
    unknown: set[int] = set()  # ids of tensors held by modules of no registered layer type
    for module_name, module in user_modules(model):
        kind = parametrize.type_before_parametrizations(module).__name__
        if layer_spec(module) is None:
            unknown.update(id(p) for p in module._parameters.values() if p is not None)
        for name, p in module._parameters.items():
            if p is not None and p.dim() >= 2 and id(p) not in seen:
                seen[id(p)] = (join_name(module_name, name), tuple(p.shape), kind, False)
        if parametrize.is_parametrized(module):
            for name, plist in module.parametrizations.items():
                raw = max(plist._parameters.values(), key=lambda t: t.numel())  # weight_norm: v, not g
                companded = any(isinstance(q, Compander | SharedCompander) for q in plist)
                if raw.dim() >= 2 and (id(raw) not in seen or companded):
                    seen[id(raw)] = (join_name(module_name, name), tuple(raw.shape), kind, companded)
    total = sum(math.prod(s) for _, s, _, _ in seen.values())
    done = sum(math.prod(s) for _, s, _, c in seen.values() if c)
    rest = sorted((e for e in seen.values() if not e[3]), key=lambda e: -math.prod(e[1]))
    strange = sum(math.prod(s) for key, (_, s, _, c) in seen.items() if not c and key in unknown)
    return Coverage(done, total, tuple((n, s, k) for n, s, k, _ in rest[:top]), strange)
