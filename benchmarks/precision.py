"""Precision of the tanh compander in float32 against float64: the figures of issue 12.

    python benchmarks/precision.py

For the C kernel (CPU float32), the torch path, and the sigmoid-based path the library used before
issue 12 (benchmarks/tanh_before_issue12.py): whether f(-v) == -f(v) bit for bit, the
largest relative error of w over |v| from 1e-30·s to 1e3·s, of dw/dv where |u| <= 20 (beyond,
float32's rounding of u itself is amplified 2|u|-fold), and of both hyperparameter gradients
on a 1024x1024 weight with a random upstream gradient (s 0.05, gain 1.5, limit 3), against
float64 autograd.
"""

from __future__ import annotations

import torch

import weight_compander as wc
from tanh_before_issue12 import sigmoid_tanh
from weight_compander.fused import fused_tanh, fused_tanh_torch

S, GAIN, LIMIT = 0.05, 1.5, 3.0


def relative(a: torch.Tensor, reference: torch.Tensor) -> float:
    return ((a.double() - reference).abs() / reference.abs()).max().item()


def measure(function) -> dict[str, float | bool]:
    s, g, L = torch.tensor(S), torch.tensor(GAIN), torch.tensor(LIMIT)
    s64 = s.item()  # the float32 scale the layer holds, exactly, as the float64 reference's
    magnitudes = torch.logspace(-30, 3, 400_001, dtype=torch.float64) * S
    v = torch.cat([magnitudes, -magnitudes]).float().requires_grad_()
    w = function(v, s, g, L)
    w.backward(torch.ones_like(w))
    u = v.detach().double() * GAIN / (s64 * LIMIT)
    half = len(magnitudes)
    odd = torch.equal(w[:half].detach().view(torch.int32), (-w[half:]).detach().view(torch.int32))
    near = u.abs() <= 20
    slope = GAIN / torch.cosh(u) ** 2

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1024, 1024, generator=gen) * S
    grad_w = torch.randn(x.shape, generator=gen)
    g32, L32 = g.clone().requires_grad_(), L.clone().requires_grad_()
    function(x, s, g32, L32).backward(grad_w)
    g64, L64 = g.double().requires_grad_(), L.double().requires_grad_()
    (s64 * L64 * torch.tanh(g64 * x.double() / (s64 * L64))).backward(grad_w.double())
    return {
        "odd to the last bit": odd,
        "w, max relative error": relative(w.detach(), s64 * LIMIT * torch.tanh(u)),
        "dw/dv (|u| <= 20), max relative error": relative(v.grad[near], slope[near]),
        "dLoss/dgain, relative error": relative(g32.grad, g64.grad),
        "dLoss/dlimit, relative error": relative(L32.grad, L64.grad),
    }


def main() -> int:
    status = wc.kernel_status()
    print(f"C kernel: {'in use' if status.startswith('in use') else status}")
    paths = {"C kernel": fused_tanh, "torch path": fused_tanh_torch, "before #12": sigmoid_tanh}
    for name, function in paths.items():
        for key, value in measure(function).items():
            shown = value if isinstance(value, bool) else f"{value:.1e}"
            print(f"{name:<10} {key:<40} {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
