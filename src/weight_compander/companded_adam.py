"""AdamW with Powerpropagation's modification for companded tensors.

Adam normalizes each coordinate's step by its own gradient history, so under ``w = f(v)`` it
undoes most of what ``f'(v)`` does to the step: the reparameterization all but vanishes.
Powerpropagation (Schwarz et al., NeurIPS 2021) and the weight compander paper (Cakaj et al.
2023) therefore compute Adam's update from ``dL/dw`` and multiply it by ``dw/dv``:

    g_w = (dL/dv) / f'(v)                       (f is elementwise: dL/dv = dL/dw * f'(v))
    m, s = Adam moments of g_w;  u = m_hat / (sqrt(s_hat) + eps)
    v <- v - lr * (u * f'(v) + weight_decay * v)   (decoupled decay, as AdamW)

Tensors that are not companded (biases, norms, hyperparameters) take the plain AdamW step.
Where ``f'(v)`` is 0 (a saturated tanh in float32, Powerprop's ``v = 0``) ``dL/dv`` is 0 too
and the coordinate gets no moment update from this step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from .parametrization import Compander
from .selection import companded_entries

__all__ = ["CompandedAdamW"]


class CompandedAdamW(torch.optim.Optimizer):
    """AdamW whose moments follow ``dL/dw``; a companded tensor's update is multiplied by ``dw/dv``.

    Args:
        params: parameters or groups, e.g. ``wc.param_groups(model, weight_decay=0.01)``.
        model: the companded model, to find each raw tensor's compander.
        lr, betas, eps, weight_decay: as ``torch.optim.AdamW`` (decoupled decay on ``v``).

    Example::

        >>> opt = wc.CompandedAdamW(wc.param_groups(model, weight_decay=0.01), model, lr=1e-3)
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        model: nn.Module,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        if not lr > 0 or not eps > 0 or not weight_decay >= 0:
            raise ValueError(
                f"lr and eps must be > 0 and weight_decay >= 0; got {lr}, {eps}, {weight_decay}."
            )
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must lie in [0, 1); got {betas}.")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self._companders = _companders_by_raw(model)
        if not self._companders:
            raise ValueError("nothing in this model is companded; use torch.optim.AdamW.")

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                slope = _slope(self._companders[id(p)], p) if id(p) in self._companders else None
                grad = p.grad if slope is None else _weight_gradient(p.grad, slope)
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                p.mul_(1 - group["lr"] * group["weight_decay"])
                state["exp_avg"].lerp_(grad, 1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (state["exp_avg_sq"] / (1 - beta2**t)).sqrt_().add_(group["eps"])
                update = state["exp_avg"] / (1 - beta1**t) / denom
                if slope is not None:
                    update.mul_(slope)
                p.add_(update, alpha=-group["lr"])
        return loss


def _companders_by_raw(model: nn.Module) -> dict[int, Compander]:
    found = {}
    for entry in companded_entries(model):
        if entry.shared:
            continue
        plist = entry.parametrizations
        if len(plist) != 1:
            raise ValueError(
                f"{entry.name} has another parametrization stacked with its compander; "
                "CompandedAdamW needs the compander alone on each tensor."
            )
        found[id(plist.original)] = entry.compander
    return found


def _slope(compander: Compander, v: Tensor) -> Tensor:
    """``f'(v)`` elementwise (the compander is elementwise, so one vector-Jacobian product)."""
    with torch.enable_grad():
        raw = v.detach().requires_grad_(True)
        (slope,) = torch.autograd.grad(compander(raw), raw, torch.ones_like(raw))
    return slope


def _weight_gradient(grad_v: Tensor, slope: Tensor) -> Tensor:
    return torch.where(slope > 0, grad_v / torch.where(slope > 0, slope, 1), 0)
