"""Weight perturbations of a trained model's effective weights: pruning, quantization, noise.

They measure redundancy: a network that spreads its decision over more weights should lose
less when weights are removed, rounded or disturbed. Every function works on a *baked* model
(`bake`: weight compander's ``wc.remove`` and every other parametrization, e.g. the peers'
weight_norm / weight standardization, written back as plain weights), so all variants are
perturbed by the same code, on the weights the network computes with.

Touched tensors: the ``weight`` of every ``nn.Linear`` and ``nn.Conv*`` / ``nn.ConvTranspose*``
(`weight_modules`). Biases and normalization parameters (BatchNorm weight, bias and running
statistics) are left alone; BatchNorm statistics are not re-estimated after a perturbation.

Fair rules: how a perturbation picks its scale decides who wins (a distribution with a hard
ceiling loses less to max-abs rounding; one with many near-zero weights loses less to global
pruning), so each comes with two rules, reported side by side:

- pruning (``torch.nn.utils.prune``, L1 = magnitude, unstructured): ``global`` (one threshold
  over all touched tensors: small-scale layers lose most) and ``layer`` (the same share of
  every tensor); either can keep the first and last layer dense (``dense_ends``).
- quantization, symmetric, per output channel, to ``2^b − 1`` levels
  ``{−(2^(b−1)−1), …, 2^(b−1)−1} · scale`` with torch's own fake-quant
  (``torch.fake_quantize_per_channel_affine``): ``maxabs`` (scale from each channel's largest
  |w|) and ``mse`` (each channel's clipping range, a fraction of its max |w|, that gives the
  least squared quantization error: calibration-free PTQ's usual choice; found on a grid of 20
  fractions, then 20 finer ones around the best, a resolution of 0.25 % of max |w|).
- Gaussian noise with σ a fraction of each tensor's own std (relative by construction).
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize, prune

import weight_compander as wc
from weight_compander.harness.errors import PerturbationError

__all__ = [
    "MAX_BITS", "PRUNE_SCOPES", "QUANT_RULES", "add_noise", "bake", "prune_model",
    "quantize_model", "quantize_tensor", "weight_modules",
]

PRUNE_SCOPES = ("global", "layer")
QUANT_RULES = ("maxabs", "mse")
MAX_BITS = 16
MSE_GRID = (20, 20)  # clipping search: 20 fractions of max |w| (0.05 .. 1), then 20 around the best
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)




def bake(model: nn.Module) -> nn.Module:
    """Write every parametrization's value back as a plain Parameter (in place; outputs unchanged).

    Weight compander goes through ``wc.remove(model, bake=True)``; what is left (the peers'
    weight_norm or weight standardization) through ``remove_parametrizations(...,
    leave_parametrized=True)``, the same operation torch offers for its own.
    """
    if wc.weights(model):
        wc.remove(model, bake=True)
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return model


def weight_modules(model: nn.Module, *, dense_ends: bool = False) -> list[tuple[str, nn.Module]]:
    """(name, module) of every Linear / Conv layer, in model order; the tensors perturbed.

    `dense_ends`: leave out the first and the last of them (the input and classifier layers,
    commonly kept dense when pruning).
    """
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, *_CONVS, *_TRANSPOSED))]
    if parametrize.is_parametrized(model) or any(parametrize.is_parametrized(m) for _, m in found):
        raise PerturbationError("the model still has parametrizations; call perturb.bake(model) first")
    return found[1:-1] if dense_ends else found


def prune_model(model: nn.Module, sparsity: float, *, scope: str = "global",
                dense_ends: bool = False) -> nn.Module:
    """Magnitude-prune the weights to `sparsity` (in place, masks made permanent).

    ``global``: the ``round(sparsity · N)`` smallest |w| over all touched tensors together;
    ``layer``: ``round(sparsity · n)`` of each tensor.
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, int | float) or not 0 < sparsity < 1:
        raise PerturbationError(f"sparsity: must be a fraction in (0, 1), got {sparsity!r}")
    if scope not in PRUNE_SCOPES:
        raise PerturbationError(f"pruning scope {scope!r} is not one of {', '.join(PRUNE_SCOPES)}")
    modules = [m for _, m in weight_modules(model, dense_ends=dense_ends)]
    if not modules:
        raise PerturbationError("no Linear/Conv weights to prune (dense_ends keeps the only layers)")
    if scope == "global":
        prune.global_unstructured([(m, "weight") for m in modules], prune.L1Unstructured, amount=sparsity)
    else:
        for m in modules:
            prune.l1_unstructured(m, "weight", amount=sparsity)
    for m in modules:
        prune.remove(m, "weight")
    return model


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= MAX_BITS:
        raise PerturbationError(f"bits: must be an integer in 2..{MAX_BITS}, got {bits!r}")


def quantize_tensor(w: Tensor, bits: int, *, rule: str = "maxabs", axis: int = 0) -> Tensor:
    """Symmetric per-channel fake quantization of `w` along `axis` (see the module docstring)."""
    _check_bits(bits)
    if rule not in QUANT_RULES:
        raise PerturbationError(f"quantization rule {rule!r} is not one of {', '.join(QUANT_RULES)}")
    top = 2 ** (bits - 1) - 1
    x = w.detach().float().movedim(axis, 0)
    flat = x.reshape(len(x), -1)
    peak = flat.abs().amax(1).clamp_min(torch.finfo(torch.float32).tiny)  # all-zero channels stay 0
    zero = torch.zeros(len(x), dtype=torch.int32)

    clip = peak
    if rule == "mse":
        clip = peak * _mse_fraction(flat, peak, top)
    q = torch.fake_quantize_per_channel_affine(flat, clip / top, zero, 0, -top, top)
    return q.reshape(x.shape).movedim(0, axis).to(w.dtype)


def _mse_fraction(flat: Tensor, peak: Tensor, top: int) -> Tensor:
    """Per channel, the fraction of max |w| whose clipping range gives the least squared error.

    The search rounds by hand (``round(w / scale)``, 30x faster here than calling the fake-quant
    op 40 times; the same round-half-to-even), the result goes through the fake-quant op.
    """
    coarse, fine = MSE_GRID
    best, error = torch.ones(len(flat)), torch.full((len(flat),), float("inf"))
    candidates = [torch.full((len(flat),), k / coarse) for k in range(1, coarse + 1)]
    for stage in (0, 1):
        if stage:  # refine around each channel's best coarse fraction
            step = 2 / coarse / fine
            candidates = [(best + (k - fine / 2) * step).clamp(1e-3, 1) for k in range(fine + 1)]
        for f in candidates:
            scale = (peak * f / top)[:, None]
            err = (flat / scale).round_().clamp_(-top, top).mul_(scale).sub_(flat).square_().sum(1)
            better = err < error
            error, best = torch.where(better, err, error), torch.where(better, f, best)
    return best


def quantize_model(model: nn.Module, bits: int, *, rule: str = "maxabs") -> nn.Module:
    """Quantize every touched weight per output channel to `bits` (in place)."""
    _check_bits(bits)
    with torch.no_grad():
        for _, m in weight_modules(model):
            axis = 1 if isinstance(m, _TRANSPOSED) else 0  # ConvTranspose stores (in, out, ...)
            m.weight.copy_(quantize_tensor(m.weight, bits, rule=rule, axis=axis))
    return model


def add_noise(model: nn.Module, sigma: float, *, seed: int = 0) -> nn.Module:
    """Add Gaussian noise of std ``sigma · std(w)`` to every touched weight (in place).

    The draw depends on `seed`, `sigma` and the tensor's name only, so every variant of a
    comparison gets the same standard-normal noise pattern.
    """
    if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not sigma > 0:
        raise PerturbationError(f"noise sigma: must be a fraction > 0 of each tensor's std, got {sigma!r}")
    with torch.no_grad():
        for name, m in weight_modules(model):
            digest = hashlib.sha256(f"{seed}:{sigma}:{name}".encode()).digest()
            gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
            noise = torch.randn(m.weight.shape, generator=gen, dtype=torch.float32)
            m.weight.add_((sigma * m.weight.float().std() * noise).to(m.weight.dtype))
    return model
