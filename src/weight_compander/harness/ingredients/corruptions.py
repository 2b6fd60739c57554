"""Input corruptions: distribution shift at test time, the same for every variant.

Images get the families of MNIST-C (Mu & Gilmer 2019, "MNIST-C: A Robustness Benchmark for
Computer Vision"): noise (Gaussian, shot, impulse), blur (Gaussian, motion), geometric
(rotate, shear, scale, translate), brightness and contrast, each at 3 severities of
increasing strength (the parameters are in `CORRUPTIONS`; the spatial ones are given for
28-pixel images and scaled with the image size). MNIST-1D signals get its own families:
shift, scale (stretch or squeeze in time) and noise.

Everything happens in pixel space: `to_pixels` undoes the normalization (images to [0, 1]),
`corrupt` changes the data and clamps to the valid range ([0, 1] for images; for signals,
which have no natural range, the clean signals' own min..max), `from_pixels` normalizes again
with the run's statistics. Every random draw comes from a generator seeded by the corruption's
name and severity, so a corrupted test set is identical for every run and variant.

Library: kornia (Apache-2.0, maintained, batched, differentiable image ops on torch tensors of
any size, 28x28 single-channel included). Blur is ``kornia.filters.gaussian_blur2d`` /
``motion_blur`` (one angle per image), the geometric family one affine matrix per image from
``kornia.geometry.transform.get_affine_matrix2d`` applied by ``warp_affine`` (about the image
centre), brightness and contrast ``kornia.enhance.adjust_brightness`` /
``adjust_contrast_with_mean_subtraction``. Noise is drawn with a seeded ``torch.Generator``:
kornia's random-noise augmentations draw from the global RNG, which would make the corrupted
set depend on what ran before. MNIST-1D is 1-D, which kornia's image ops do not cover: shift
is a gather and time scaling torch's ``grid_sample`` on an (N, C, 1, L) view.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from weight_compander.harness.errors import CorruptionError
from weight_compander.harness.ingredients.data import DATASETS

__all__ = [
    "CORRUPTIONS", "Corruption", "corrupt", "corruption_names", "from_pixels",
    "pixel_max", "to_pixels",
]

REFERENCE_SIZE = 28  # spatial parameters are given for 28-pixel images


@dataclass(frozen=True)
class Corruption:
    """One corruption: its data dimension, parameter per severity (1, 2, 3) and function."""

    name: str
    ndim: int  # 2: images (N, C, H, W); 1: signals (N, C, L)
    levels: tuple[float, ...]
    unit: str  # what a level means, for the docs and the report
    fn: Callable[[Tensor, float, torch.Generator], Tensor]


def _signs(n: int, gen: torch.Generator) -> Tensor:
    return torch.randint(0, 2, (n,), generator=gen).float() * 2 - 1


def _spatial(x: Tensor, value: float) -> float:
    return value * x.shape[-1] / REFERENCE_SIZE


def _affine(x: Tensor, *, angle: Tensor | None = None, shear: Tensor | None = None,
            scale: Tensor | None = None, shift: Tensor | None = None) -> Tensor:
    """One affine warp per image about its centre (kornia), zero (black) outside."""
    from kornia.geometry.transform import get_affine_matrix2d, warp_affine

    n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    zeros = torch.zeros(n)
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2]).expand(n, 2)
    matrix = get_affine_matrix2d(
        shift if shift is not None else torch.zeros(n, 2), centre,
        (scale if scale is not None else torch.ones(n)).unsqueeze(1).expand(n, 2),
        angle if angle is not None else zeros, sx=shear if shear is not None else zeros, sy=zeros,
    )
    return warp_affine(x, matrix[:, :2], (h, w), align_corners=True)


# --------------------------------------------------------------------------- images, in [0, 1]


def _gaussian_noise(x: Tensor, sigma: float, gen: torch.Generator) -> Tensor:
    return x + sigma * torch.randn(x.shape, generator=gen)


def _shot_noise(x: Tensor, photons: float, gen: torch.Generator) -> Tensor:
    return torch.poisson(x.clamp(0, 1) * photons, generator=gen) / photons


def _impulse_noise(x: Tensor, amount: float, gen: torch.Generator) -> Tensor:
    u = torch.rand(x.shape, generator=gen)  # below amount/2: black; above 1 - amount/2: white
    return torch.where(u < amount / 2, 0.0, torch.where(u > 1 - amount / 2, 1.0, x))


def _gaussian_blur(x: Tensor, sigma: float, gen: torch.Generator) -> Tensor:
    from kornia.filters import gaussian_blur2d

    s = _spatial(x, sigma)
    k = 2 * math.ceil(3 * s) + 1
    return gaussian_blur2d(x, (k, k), (s, s), border_type="constant")


def _motion_blur(x: Tensor, length: float, gen: torch.Generator) -> Tensor:
    from kornia.filters import motion_blur

    k = max(3, 2 * round((_spatial(x, length) - 1) / 2) + 1)  # odd, as kornia needs
    angle = torch.rand(len(x), generator=gen) * 180
    return motion_blur(x, k, angle, torch.zeros(len(x)), border_type="constant")


def _rotate(x: Tensor, degrees: float, gen: torch.Generator) -> Tensor:
    return _affine(x, angle=degrees * _signs(len(x), gen))


def _shear(x: Tensor, factor: float, gen: torch.Generator) -> Tensor:
    return _affine(x, shear=math.atan(factor) * _signs(len(x), gen))  # kornia: shear angle (rad)


def _scale(x: Tensor, factor: float, gen: torch.Generator) -> Tensor:
    return _affine(x, scale=torch.full((len(x),), factor))


def _translate(x: Tensor, pixels: float, gen: torch.Generator) -> Tensor:
    direction = torch.rand(len(x), generator=gen) * 2 * math.pi
    step = _spatial(x, pixels) * torch.stack([direction.cos(), direction.sin()], 1)
    return _affine(x, shift=step)


def _brightness(x: Tensor, offset: float, gen: torch.Generator) -> Tensor:
    from kornia.enhance import adjust_brightness

    return adjust_brightness(x, offset)


def _contrast(x: Tensor, factor: float, gen: torch.Generator) -> Tensor:
    from kornia.enhance import adjust_contrast_with_mean_subtraction

    return adjust_contrast_with_mean_subtraction(x, factor)


# --------------------------------------------------------------------------- signals


def _shift1d(x: Tensor, samples: float, gen: torch.Generator) -> Tensor:
    n, length = len(x), x.shape[-1]
    offset = (samples * _signs(n, gen)).long()  # the edge value fills what comes in
    idx = (torch.arange(length).expand(n, length) - offset[:, None]).clamp(0, length - 1)
    return x.gather(-1, idx.unsqueeze(1).expand_as(x))


def _scale1d(x: Tensor, factor: float, gen: torch.Generator) -> Tensor:
    n, length = len(x), x.shape[-1]
    s = torch.where(_signs(n, gen) > 0, factor, 1 / factor)  # stretch or squeeze, about the centre
    pos = torch.linspace(-1, 1, length).expand(n, length) / s[:, None]
    grid = torch.stack([pos, torch.zeros_like(pos)], -1).unsqueeze(1)  # (N, 1, L, 2)
    out = F.grid_sample(x.unsqueeze(2), grid, align_corners=True, padding_mode="border")
    return out.squeeze(2)


def _noise1d(x: Tensor, fraction: float, gen: torch.Generator) -> Tensor:
    return x + fraction * x.std() * torch.randn(x.shape, generator=gen)


CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in (
    Corruption("gaussian_noise", 2, (0.15, 0.25, 0.35), "noise std (pixel range 1)", _gaussian_noise),
    Corruption("shot_noise", 2, (12.0, 5.0, 2.5), "photons at full intensity", _shot_noise),
    Corruption("impulse_noise", 2, (0.03, 0.08, 0.15), "share of pixels set black/white",
               _impulse_noise),
    Corruption("gaussian_blur", 2, (0.7, 1.0, 1.4), "blur std, px at 28 px", _gaussian_blur),
    Corruption("motion_blur", 2, (3.0, 5.0, 7.0), "kernel length, px at 28 px (random angle)",
               _motion_blur),
    Corruption("rotate", 2, (15.0, 30.0, 45.0), "degrees (random sign)", _rotate),
    Corruption("shear", 2, (0.2, 0.4, 0.6), "horizontal shear factor (random sign)", _shear),
    Corruption("scale", 2, (0.8, 0.65, 0.5), "zoom factor (smaller: zoomed out)", _scale),
    Corruption("translate", 2, (2.0, 3.0, 4.0), "px at 28 px (random direction)", _translate),
    Corruption("brightness", 2, (0.1, 0.2, 0.3), "added to every pixel (range 1)", _brightness),
    Corruption("contrast", 2, (0.7, 0.5, 0.3), "contrast factor about the image mean", _contrast),
    Corruption("shift", 1, (2.0, 4.0, 6.0), "samples (random sign)", _shift1d),
    Corruption("time_scale", 1, (1.1, 1.2, 1.35), "stretch or squeeze factor", _scale1d),
    Corruption("noise", 1, (0.25, 0.5, 1.0), "noise std / the signals' std", _noise1d),
)}  # fmt: skip


def corruption_names(ndim: int | None = None) -> list[str]:
    """Corruptions for images (`ndim` 2), signals (1) or all (None), in table order."""
    return [c.name for c in CORRUPTIONS.values() if ndim in (None, c.ndim)]


def get(name: str) -> Corruption:
    """The corruption called `name`; an unknown name is an error listing the valid ones."""
    if name not in CORRUPTIONS:
        raise CorruptionError(
            f"unknown corruption {name!r}; images: {', '.join(corruption_names(2))}; "
            f"MNIST-1D signals: {', '.join(corruption_names(1))}"
        )
    return CORRUPTIONS[name]


def corrupt(x: Tensor, name: str, severity: int, *, seed: int = 0) -> Tensor:
    """Corrupt a batch in pixel space; same shape, clamped to the valid range, deterministic.

    Args:
        x: images ``(N, C, H, W)`` in [0, 1], or signals ``(N, C, L)`` in their own units.
        name: a key of `CORRUPTIONS` that fits the data (see `corruption_names`).
        severity: 1 (mild) .. 3 (strong).
        seed: mixed with name and severity into the generator's seed.

    Raises:
        CorruptionError: unknown name, severity out of range, or images/signals mismatch.
    """
    c = get(name)
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= len(c.levels):
        raise CorruptionError(f"severity of {name}: must be an int in 1..{len(c.levels)}, got {severity!r}")
    if x.dim() != c.ndim + 2:
        what = "images (N, C, H, W)" if c.ndim == 2 else "signals (N, C, L)"
        raise CorruptionError(f"corruption {name!r} takes {what}, got a tensor of shape {tuple(x.shape)}")
    digest = hashlib.sha256(f"{name}:{severity}:{seed}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    lo, hi = (0.0, 1.0) if c.ndim == 2 else (float(x.min()), float(x.max()))
    return c.fn(x.float(), c.levels[severity - 1], gen).clamp(lo, hi)


def pixel_max(dataset: str) -> float | None:
    """The largest raw pixel value of a data set's images (255, digits 16); None for signals."""
    return DATASETS[dataset].pixel_max


def to_pixels(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...], top: float | None) -> Tensor:
    """Undo the normalization: raw units, then divided by `top` (images land in [0, 1])."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    raw = x * torch.tensor(std).view(shape) + torch.tensor(mean).view(shape)
    return raw / top if top else raw


def from_pixels(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...], top: float | None) -> Tensor:
    """Inverse of `to_pixels`: normalize again with the run's statistics."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    raw = x * top if top else x
    return (raw - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)
