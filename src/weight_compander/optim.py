"""The learnable hyperparameters and optimizer groups that keep weight decay off them."""

from __future__ import annotations

import math
from collections.abc import Iterator

from torch import nn

from .selection import companded_entries

__all__ = ["hyperparameters", "named_hyperparameters", "param_groups"]


def named_hyperparameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """(name, Parameter) of every learnable compander hyperparameter, e.g. ``("fc.weight.raw_gain", p)``."""
    for entry in companded_entries(model):
        if not entry.shared:
            for name, p in entry.compander.named_parameters():
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

    Returns:
        a list of groups named ``"decay"``, ``"no_decay"`` and ``"wc_hyper"``; empty ones are
        left out. Pass it to any ``torch.optim`` optimizer.

    Example::

        >>> opt = torch.optim.AdamW(wc.param_groups(model, weight_decay=0.05), lr=1e-3)
    """
    _check_rate("weight_decay", weight_decay, False)
    _check_rate("hyper_lr", hyper_lr, True)
    _check_rate("hyper_weight_decay", hyper_weight_decay, False)
    hyper_ids = {id(p) for p in hyperparameters(model)}
    decay, no_decay, hyper = [], [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in hyper_ids:
            if with_hyperparameters:
                hyper.append(p)
        elif p.dim() >= 2:
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [
        {"name": "decay", "params": decay, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
        {"name": "wc_hyper", "params": hyper, "weight_decay": hyper_weight_decay}
        | ({} if hyper_lr is None else {"lr": hyper_lr}),
    ]
    return [g for g in groups if g["params"]]
