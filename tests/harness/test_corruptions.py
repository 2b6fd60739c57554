"""Input corruptions: deterministic, a real change at every severity, shape and range kept."""

from __future__ import annotations

import pytest
import torch

from weight_compander.harness.errors import CorruptionError
from weight_compander.harness.ingredients import corruptions
from weight_compander.harness.ingredients.corruptions import CORRUPTIONS, corrupt

WITHOUT_RANDOMNESS = {"gaussian_blur", "scale", "brightness", "contrast"}


def images() -> torch.Tensor:
    """Grey 28x28 images in [0, 1] with structure (a bright blob off-centre) and exact 0 / 1."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 28, 28, generator=g) * 0.3
    x[:, :, 6:16, 9:20] = 1.0
    x[:, :, :2] = 0.0
    return x


def signals() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(6, 1, 40, generator=g).cumsum(-1)


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_every_corruption_is_deterministic_changes_the_input_and_keeps_shape_and_range(name):
    x = images() if CORRUPTIONS[name].ndim == 2 else signals()
    lo, hi = (0.0, 1.0) if x.dim() == 4 else (float(x.min()), float(x.max()))
    previous = None
    for severity in (1, 2, 3):
        out = corrupt(x, name, severity)
        assert out.shape == x.shape and out.dtype == torch.float32
        assert out.min() >= lo and out.max() <= hi
        assert (out - x).abs().max() > 1e-3, f"{name} severity {severity} left the input as it was"
        assert torch.equal(out, corrupt(x.clone(), name, severity)), "not deterministic"
        if previous is not None:
            assert not torch.equal(out, previous), "two severities gave the same output"
        previous = out
    if name not in WITHOUT_RANDOMNESS:
        assert not torch.equal(corrupt(x, name, 2, seed=1), corrupt(x, name, 2)), "seed unused"


def test_corrupting_in_pixel_space_round_trips_the_normalization():
    x = images()
    mean, std, top = (72.9,), (90.0,), 255.0
    normalized = (x * top - mean[0]) / std[0]
    pixels = corruptions.to_pixels(normalized, mean, std, top)
    assert torch.allclose(pixels, x, atol=1e-5)
    assert torch.allclose(corruptions.from_pixels(pixels, mean, std, top), normalized, atol=1e-5)
    assert corruptions.pixel_max("digits") == 16.0 and corruptions.pixel_max("mnist1d") is None


def test_bad_names_severities_and_shapes_are_errors_naming_the_value():
    with pytest.raises(CorruptionError, match=r"unknown corruption 'fog'.*gaussian_noise.*shift"):
        corrupt(images(), "fog", 1)
    with pytest.raises(CorruptionError, match=r"severity of rotate: must be an int in 1\.\.3, got 4"):
        corrupt(images(), "rotate", 4)
    with pytest.raises(CorruptionError, match=r"'shift' takes signals .*\(6, 1, 28, 28\)"):
        corrupt(images(), "shift", 1)
