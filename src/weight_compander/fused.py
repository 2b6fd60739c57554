"""A fused forward/backward for the tanh compander.

Autograd through ``s*L*tanh(g*v/(s*L))`` allocates a temporary for every operator, forward
and backward, and reduces the hyperparameter gradients elementwise; on a weight-heavy model (an
MLP with 1.8 M weights and little compute per weight) that doubled the training step. Two
things make it cheap:

* ``tanh(u) = 2*sigmoid(2u) - 1``: on CPU ``torch.sigmoid`` is ~8x faster than ``torch.tanh``
  (AVX-512 here: 0.28 vs 2.3 ms per million floats). Values agree to float32 round-off
  (absolute error ~6e-8 * s*L), and ``f(0) = 0`` stays exact.
* The backward uses the analytic derivative with ``p = sigmoid(2u)`` saved from the forward,
  ``dw/dv = g * (1 - t^2) = 4g * p(1 - p)``, and the two hyperparameter gradients share two
  dot products per tensor (or per output channel):

      dLoss/dg = <dLoss/dv, v> / g
      dLoss/dL = (<dLoss/dw, w> - <dLoss/dv, v>) / L

Saving ``w`` costs no memory: the layer that uses the weight keeps it for its own backward.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _inner(a: Tensor, b: Tensor, like: Tensor) -> Tensor:
    """Sum of a * b over everything (like is a scalar) or per output channel (dim 0)."""
    if like.dim() == 0:
        return torch.dot(a.reshape(-1), b.reshape(-1))
    rows = a.shape[0]
    return torch.bmm(a.reshape(rows, 1, -1), b.reshape(rows, -1, 1)).view(like.shape)


class _FusedTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v: Tensor, scale: Tensor, gain: Tensor, limit: Tensor) -> Tensor:
        bound = scale * limit
        p = torch.mul(v, 2 * gain / bound).sigmoid_()
        w = torch.mul(p, 2 * bound).sub_(bound)  # s*L*(2p - 1) = s*L*tanh(u); 3x faster than addcmul
        ctx.save_for_backward(v, p, w, gain, limit)
        return w

    @staticmethod
    def backward(ctx, grad_w: Tensor):
        v, p, w, gain, limit = ctx.saved_tensors
        # dw/dv = 4g * p(1 - p); three light passes (an addcmul that broadcasts a 0-dim input
        # would be one pass, but a 3x slower one)
        grad_v = torch.addcmul(p, p, p, value=-1.0).mul_(grad_w).mul_(4 * gain)
        grad_gain = grad_limit = None
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            grad_v_dot_v = _inner(grad_v, v, gain)
            if ctx.needs_input_grad[2]:
                grad_gain = grad_v_dot_v / gain
            if ctx.needs_input_grad[3]:
                # dw/dL = s*t - g*v*(1 - t^2)/L = (w - v * dw/dv) / L, elementwise, whatever the
                # shapes of s and L
                grad_limit = (_inner(grad_w, w, limit) - grad_v_dot_v) / limit
        return grad_v, None, grad_gain, grad_limit


def fused_tanh(v: Tensor, scale: Tensor, gain: Tensor, limit: Tensor) -> Tensor:
    """``s * L * tanh(g * v / (s * L))`` with an analytic backward (same values as autograd)."""
    return _FusedTanh.apply(v, scale, gain, limit)
