"""The tanh compander's fused path as it was before issue 12, kept to time against in one run.

It computed ``tanh(u) = 2*sigmoid(2u) - 1`` (fast, but not exactly odd and 3 % off at
``|v| = 1e-6*s``) and ``dLoss/dL = (<dLoss/dw, w> - <dLoss/dv, v>) / L`` (1e-4 off for gain 1,
limit 10). Copied from ``src/weight_compander/fused.py`` at commit 55e2913; used by
``benchmarks/overhead.py --before-issue-12``. Not part of the library.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _inner(a: Tensor, b: Tensor, like: Tensor) -> Tensor:
    if like.dim() == 0:
        return torch.dot(a.reshape(-1), b.reshape(-1))
    rows = a.shape[0]
    return torch.bmm(a.reshape(rows, 1, -1), b.reshape(rows, -1, 1)).view(like.shape)


class _SigmoidTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v: Tensor, scale: Tensor, gain: Tensor, limit: Tensor) -> Tensor:
        bound = scale * limit
        p = torch.mul(v, 2 * gain / bound).sigmoid_()
        w = torch.mul(p, 2 * bound).sub_(bound)
        ctx.save_for_backward(v, p, w, gain, limit)
        return w

    @staticmethod
    def backward(ctx, grad_w: Tensor):
        v, p, w, gain, limit = ctx.saved_tensors
        grad_v = torch.addcmul(p, p, p, value=-1.0).mul_(grad_w).mul_(4 * gain)
        grad_gain = grad_limit = None
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            grad_v_dot_v = _inner(grad_v, v, gain)
            if ctx.needs_input_grad[2]:
                grad_gain = grad_v_dot_v / gain
            if ctx.needs_input_grad[3]:
                grad_limit = (_inner(grad_w, w, limit) - grad_v_dot_v) / limit
        return grad_v, None, grad_gain, grad_limit


def sigmoid_tanh(v: Tensor, scale: Tensor, gain: Tensor, limit: Tensor) -> Tensor:
    """``s * L * tanh(g * v / (s * L))`` the way the library computed it before issue 12."""
    return _SigmoidTanh.apply(v, scale, gain, limit)
