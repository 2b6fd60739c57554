"""KURE, the quantization peer: a loss term that pulls every weight tensor toward a uniform shape.

Shkolnik et al., "Robust Quantization: One Model to Rule Them All" (NeurIPS 2020) add

    λ · mean over layers of (kurtosis(w) − 1.8)²

to the training loss, where kurtosis(w) = mean(((w − mean w) / std w)⁴) is taken over each
weight tensor's values and 1.8 is the kurtosis of a uniform distribution. A flat (uniform)
weight distribution has no outliers that stretch a quantization grid, so such weights survive
low-bit rounding; that is exactly what weight compander claims as a side effect, so KURE is
the published method to compare it with (``kure = λ`` in a run's config).

The layers are the Linear/Conv weight tensors (dim >= 2) a compander would take by default;
with a reparameterization (WC, weight_norm, ...) the penalty acts on the *effective* weight
``module.weight``, the one the network computes with. The same tensors' kurtosis is logged per
epoch (``kurtosis`` in metrics.jsonl) for every run, so the report can compare variants.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

__all__ = ["LAYERS", "UNIFORM_KURTOSIS", "kurtoses", "kurtosis", "penalty", "penalty_of", "weights"]

UNIFORM_KURTOSIS = 1.8  # the kurtosis of any uniform distribution: KURE's target
LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TINY = 1e-12  # a constant tensor has std 0: its standardized values are 0, not NaN


def kurtosis(w: Tensor) -> Tensor:
    """mean(z⁴) of the standardized values z = (w − mean) / std (population std), a 0-dim tensor.

    Differentiable; 1.8 for uniform values, 3 for Gaussian ones, larger for heavy tails.
    """
    w = w.flatten()
    centred = w - w.mean()
    std = centred.pow(2).mean().sqrt().clamp_min(_TINY)
    return (centred / std).pow(4).mean()


def weights(model: nn.Module) -> dict[str, Tensor]:
    """name -> effective weight of every Linear/Conv layer (its ``weight``, dim >= 2)."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LAYERS) and module.weight.dim() >= 2:
            out[f"{name}.weight" if name else "weight"] = module.weight
    return out


def penalty_of(tensors: Iterable[Tensor], target: float = UNIFORM_KURTOSIS) -> Tensor:
    """Mean over `tensors` of (kurtosis − target)²; the KURE term without its λ."""
    terms = [(kurtosis(w) - target).pow(2) for w in tensors]
    if not terms:
        raise ValueError("KURE needs at least one Linear/Conv weight tensor; this model has none")
    return torch.stack(terms).mean()


def penalty(model: nn.Module, target: float = UNIFORM_KURTOSIS) -> Tensor:
    """KURE's term for `model` (without λ): differentiable in the model's parameters."""
    return penalty_of(weights(model).values(), target)


@torch.no_grad()
def kurtoses(model: nn.Module) -> dict[str, float]:
    """name -> kurtosis of each Linear/Conv layer's effective weight (for metrics.jsonl)."""
    with parametrize.cached():  # each reparameterized weight computed once
        return {name: float(kurtosis(w)) for name, w in weights(model).items()}
