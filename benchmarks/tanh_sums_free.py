"""The learnable tanh with its hyperparameter gradients for free: the floor of any learnable step.

Forward and dLoss/dv are the C kernel's fixed-hyperparameter passes; the gain and limit get zero
gradients, computed from nothing. What remains over ``wc fixed`` is what every learnable
implementation pays however its sums are computed: the hyperparameters as autograd inputs (their
gradient tensors, the accumulation into ``.grad``) and as optimizer entries (momentum and weight
decay on two more tensors per weight). ``benchmarks/overhead.py --floor`` times it beside the real
learnable step. Wrong on purpose (the hyperparameters never move): not part of the library.
"""

from __future__ import annotations

import torch
from torch import Tensor

from weight_compander import cpu_kernel

KERNEL = cpu_kernel.load()


class _SumsFree(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v: Tensor, scale: Tensor, gain: Tensor, limit: Tensor) -> Tensor:
        s, g, L = scale.item(), gain.item(), limit.item()  # the values the library passes (as a ctypes array)
        ctx.params = torch.tensor([[s, g, L, g / (s * L)]], dtype=torch.float64)
        ctx.save_for_backward(v, gain, limit)
        return KERNEL.forward(v, ctx.params)

    @staticmethod
    def backward(ctx, grad_w: Tensor):
        v, gain, limit = ctx.saved_tensors
        grad_v = KERNEL.backward(grad_w.contiguous(), v, ctx.params)
        return grad_v, None, torch.zeros_like(gain), torch.zeros_like(limit)


def sums_free_tanh(v: Tensor, scale: Tensor, gain: Tensor, limit: Tensor) -> Tensor:
    """``s L tanh(g v / (s L))`` forward; dLoss/dv exact, zero gain and limit gradients."""
    if KERNEL is None:
        raise RuntimeError("--floor times the C kernel; it is not in use here (see wc.kernel_status())")
    return _SumsFree.apply(v, scale, gain, limit)
