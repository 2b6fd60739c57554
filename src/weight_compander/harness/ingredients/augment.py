"""Batched data augmentation: whole-batch tensor ops, one ``torch.Generator`` for determinism.

A per-sample Python loop costs more than the small models here take to train, so every policy
draws all random numbers for the batch at once and moves pixels with ``gather``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["POLICIES", "SHIFT1D_MAX", "augment_batch", "crop_padding"]

POLICIES = ("crop-flip", "crop", "shift1d", "none")
SHIFT1D_MAX = 3  # samples; MNIST-1D signals are 40 long and already randomly translated


def crop_padding(size: int) -> int:
    """Zero padding of the random crop for ``size``-pixel images (the usual choices).

    1 px up to 16 px (scikit-learn digits, 8x8), 2 px up to 28 px (MNIST, Fashion-MNIST),
    4 px above (CIFAR, 32x32): roughly one eighth of the image either way.
    """
    if size <= 16:
        return 1
    if size <= 28:
        return 2
    return 4


def augment_batch(x: Tensor, policy: str, generator: torch.Generator, *, pad: int | None = None) -> Tensor:
    """Augment a whole batch with one random draw per example.

    Policies:
        ``"crop-flip"``: random crop from the zero-padded image (a shift of up to ``pad``
        pixels each way) plus a horizontal flip of a random half; images ``(N, C, H, W)``.
        ``"crop"``: the crop only (digits, where a mirrored digit is another or none).
        ``"shift1d"``: shift 1-D signals ``(N, C, L)`` by up to ``pad`` samples (default
        :data:`SHIFT1D_MAX`), filling with zeros (the training mean after normalisation).
        ``"none"``: returns ``x`` itself.

    Args:
        x: the batch, already normalised (zero padding then means "average input").
        policy: one of :data:`POLICIES`.
        generator: source of all randomness, so the same seed gives the same batch.
        pad: maximal shift; default :func:`crop_padding` of the image size, or
            :data:`SHIFT1D_MAX` for 1-D signals.

    Returns:
        A new tensor of the same shape (``x`` itself for ``"none"``).
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown augmentation policy {policy!r}; valid: {', '.join(POLICIES)}")
    if policy == "none":
        return x
    spatial = 1 if policy == "shift1d" else 2
    if x.dim() != 2 + spatial:
        layout = "(N, C, L)" if spatial == 1 else "(N, C, H, W)"
        raise ValueError(f"policy {policy!r} expects a batch of shape {layout}, got {tuple(x.shape)}")
    if pad is None:
        pad = SHIFT1D_MAX if spatial == 1 else crop_padding(max(x.shape[-2:]))
    out = _random_translate(x, pad, generator, spatial) if pad > 0 else x.clone()
    if policy == "crop-flip":
        flip = torch.rand(x.shape[0], generator=generator, device=generator.device) < 0.5
        out = torch.where(flip.to(x.device).view(-1, 1, 1, 1), out.flip(-1), out)
    return out


def _random_translate(x: Tensor, pad: int, generator: torch.Generator, spatial: int) -> Tensor:
    """Crop each example at a random offset from the zero-padded batch.

    Why gather: one index tensor per spatial axis moves every example by its own offset in a
    single vectorised op; padding + gather along H, then along W, is an exact random crop.
    """
    n = x.shape[0]
    out = F.pad(x, [pad, pad] * spatial)
    for axis in range(x.dim() - spatial, x.dim()):
        size = x.shape[axis]
        start = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=generator.device)
        idx = start.to(x.device)[:, None] + torch.arange(size, device=x.device)  # (n, size)
        view = [n] + [1] * (x.dim() - 1)
        view[axis] = size
        shape = list(out.shape)
        shape[axis] = size
        out = out.gather(axis, idx.view(view).expand(shape))
    return out
