"""The learnable hyperparameters, optimizer groups that keep weight decay off them, and the
paper's decay on the effective weight."""

from __future__ import annotations

import math
from collections.abc import Iterator

from torch import Tensor, nn

from .selection import companded_entries

__all__ = [
    "DECAY_PLACES", "effective_weight_decay", "hyperparameters", "named_hyperparameters", "param_groups",
]

DECAY_PLACES = ("raw", "effective")


def named_hyperparameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """(name, Parameter) of every learnable compander hyperparameter, e.g. ``("fc.weight.raw_gain", p)``."""
    seen: set[int] = set()  # hyperparameters shared across tensors (share_hyperparameters) once
    for entry in companded_entries(model):
        if not entry.shared:
            for name, p in entry.compander.named_parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield f"{entry.name}.{name}", p


def hyperparameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """The learnable compander hyperparameters (stored unconstrained, e.g. ``log(limit)``)."""
    for _, p in named_hyperparameters(model):
        yield p


def _check_rate(name: str, value: float | None, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}.")


def param_groups(
    model: nn.Module,
    weight_decay: float,
    hyper_lr: float | None = None,
    hyper_weight_decay: float = 0.0,
    with_hyperparameters: bool = True,
    decay: str = "raw",
) -> list[dict]:
    """Optimizer parameter groups: decay on weights, none on biases, norms and hyperparameters.

    Weight decay on the compander hyperparameters would shrink ``log(limit)`` and ``log(gain-1)``
    toward 0 -- a pull toward limit 1 and gain 2 that nobody asked for -- and on biases and norm
    scales it is the usual mistake (nanoGPT's rule: decay only tensors with ``dim() >= 2``).

    Args:
        model: the model (companded or not).
        weight_decay: decay of weight tensors (``dim() >= 2``, raw ``v`` of companded ones).
        hyper_lr: learning rate of the hyperparameters; ``None`` uses the optimizer's.
        hyper_weight_decay: decay of the hyperparameters. Default: 0.
        with_hyperparameters: ``False`` leaves the hyperparameters out (they then learn on
            validation batches with ``wc.hyper_step`` and an optimizer of their own).
        decay: ``"raw"`` decays the raw ``v`` of companded tensors (the optimizer's own weight
            decay); ``"effective"`` is the paper's placement for fixed hyperparameters, the
            penalty ``weight_decay/2 * ||w||^2`` on the effective weight ``w = f(v)``: companded
            raw tensors then go to a group ``"decay_effective"`` with the optimizer's decay
            off, and the training loss must add ``wc.effective_weight_decay(model,
            weight_decay)`` (the group records the value under ``"effective_weight_decay"``).
            Weights that are not companded keep the optimizer's decay either way.

    Returns:
        a list of groups named ``"decay"``, ``"no_decay"``, ``"decay_effective"`` and
        ``"wc_hyper"``; empty ones are left out. Pass it to any ``torch.optim`` optimizer.

    Example::

        >>> opt = torch.optim.AdamW(wc.param_groups(model, weight_decay=0.05), lr=1e-3)
    """
    _check_rate("weight_decay", weight_decay, False)
    _check_rate("hyper_lr", hyper_lr, True)
    _check_rate("hyper_weight_decay", hyper_weight_decay, False)
    if decay not in DECAY_PLACES:
        raise ValueError(f"decay must be one of {', '.join(DECAY_PLACES)}; got {decay!r}.")
    hyper_ids = {id(p) for p in hyperparameters(model)}
    raw_ids = {id(v) for v in _raw_tensors(model)} if decay == "effective" else set()
    decayed, no_decay, effective, hyper = [], [], [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in hyper_ids:
            if with_hyperparameters:
                hyper.append(p)
        elif id(p) in raw_ids:
            effective.append(p)
        elif p.dim() >= 2:
            decayed.append(p)
        else:
            no_decay.append(p)
    groups = [
        {"name": "decay", "params": decayed, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
        {"name": "decay_effective", "params": effective, "weight_decay": 0.0,
         "effective_weight_decay": weight_decay},
        {"name": "wc_hyper", "params": hyper, "weight_decay": hyper_weight_decay}
        | ({} if hyper_lr is None else {"lr": hyper_lr}),
    ]
    return [g for g in groups if g["params"]]


def _raw_tensors(model: nn.Module) -> Iterator[Tensor]:
    """The raw ``v`` of every companded tensor (a tied tensor once)."""
    for entry in companded_entries(model):
        if not entry.shared:
            raw = getattr(entry.parametrizations, "original", None)  # None: stacked (weight_norm)
            if raw is not None:
                yield raw


def effective_weight_decay(model: nn.Module, weight_decay: float) -> Tensor:
    """The paper's decay on the effective weight: ``weight_decay / 2 * sum ||w||^2`` over companded tensors.

    Add it to the training loss, with ``wc.param_groups(model, weight_decay, decay="effective")``
    keeping the optimizer's own decay off the raw tensors. For ``kind="identity"`` this is
    exactly SGD's weight decay; for a compander it decays what the network computes with, "so
    that the regularization is comparable with the baseline" (Cakaj et al. 2023), instead of
    ``v`` (whose decay pulls ``w`` toward zero at a rate set by ``f'(v)``). Inside
    ``torch.nn.utils.parametrize.cached()`` the weights the forward pass computed are reused.

    Example::

        >>> groups = wc.param_groups(model, weight_decay=1e-4, decay="effective")
        >>> opt = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
        >>> with torch.nn.utils.parametrize.cached():
        ...     loss = F.cross_entropy(model(x), y) + wc.effective_weight_decay(model, 1e-4)
    """
    _check_rate("weight_decay", weight_decay, False)
    total: Tensor | None = None
    for entry in companded_entries(model):
        if entry.shared:
            continue
        w = getattr(entry.module, entry.tensor_name)
        term = w.pow(2).sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("nothing in this model is companded; use the optimizer's weight_decay instead.")
    return total * (weight_decay / 2)
