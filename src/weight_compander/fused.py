"""A fused forward/backward for the tanh compander.

Autograd through ``s*L*tanh(g*v/(s*L))`` allocates a temporary for every operator, forward
and backward, and reduces the hyperparameter gradients elementwise; on a weight-heavy model (an
MLP with 1.8 M weights and little compute per weight) that doubled the training step. Two
things make it cheap:

* ``tanh(u) = 2*sigmoid(2u) - 1``: on CPU ``torch.sigmoid`` is ~8x faster than ``torch.tanh``
  (AVX-512 here: 0.28 vs 2.3 ms per million floats). Values agree to float32 round-off
  (absolute error ~6e-8 * s*L), and ``f(0) = 0`` stays exact.
* The backward uses the analytic derivative with ``p = sigmoid(2u)`` saved from the forward,
  ``dw/dv = g * (1 - t^2) = 4g * p(1 - p)``, and each hyperparameter gradient is one dot
  product per tensor (or per output channel):

      dLoss/dg = <dLoss/dv, v> / g
      dLoss/dL = s * <dLoss/dw, t> - <dLoss/dv, v> / L,   <dLoss/dw, t> = 2<dLoss/dw, p> - sum(dLoss/dw)
"""

from __future__ import annotations

import torch
from torch import Tensor


def _inner(a: Tensor, b: Tensor | None, like: Tensor) -> Tensor:
    """Sum of a * b (or of a, if b is None) over everything, or per output channel (dim 0)."""
    if like.dim() == 0:
        return a.sum() if b is None else torch.dot(a.reshape(-1), b.reshape(-1))
    rows = a.shape[0]
    if b is None:
        return a.reshape(rows, -1).sum(1).view(like.shape)
    return torch.bmm(a.reshape(rows, 1, -1), b.reshape(rows, -1, 1)).view(like.shape)


class _FusedTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v: Tensor, scale: Tensor, gain: Tensor, limit: Tensor) -> Tensor:
        bound = scale * limit
        p = torch.mul(v, 2 * gain / bound).sigmoid_()
        ctx.save_for_backward(v, p, scale, gain, limit)
        return torch.addcmul(-bound, p, 2 * bound)  # s*L*(2p - 1) = s*L*tanh(u)

    @staticmethod
    def backward(ctx, grad_w: Tensor):
        v, p, scale, gain, limit = ctx.saved_tensors
        grad_v = torch.addcmul(p, p, p, value=-1.0).mul_(grad_w).mul_(4 * gain)
        grad_gain = grad_limit = None
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            grad_v_dot_v = _inner(grad_v, v, gain)
            if ctx.needs_input_grad[2]:
                grad_gain = grad_v_dot_v / gain
            if ctx.needs_input_grad[3]:
                # s may be per output channel while L is per tensor: weight each channel by its s.
                finest = scale if scale.dim() > limit.dim() else limit
                grad_w_dot_t = scale * (2 * _inner(grad_w, p, finest) - _inner(grad_w, None, finest))
                if grad_w_dot_t.dim() > limit.dim():
                    grad_w_dot_t = grad_w_dot_t.sum()
                grad_limit = grad_w_dot_t - grad_v_dot_v / limit
        return grad_v, None, grad_gain, grad_limit


def fused_tanh(v: Tensor, scale: Tensor, gain: Tensor, limit: Tensor) -> Tensor:
    """``s * L * tanh(g * v / (s * L))`` with an analytic backward (same values as autograd)."""
    return _FusedTanh.apply(v, scale, gain, limit)
