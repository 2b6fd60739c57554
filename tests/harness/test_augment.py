"""Batched augmentation: shapes, determinism, and that crops/flips/shifts do what they say."""

from __future__ import annotations

import pytest
import torch

from weight_compander.harness.ingredients.augment import POLICIES, augment_batch, crop_padding


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def translate(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Reference: shift a (C, H, W) image by (dy, dx) with zero fill, one example at a time."""
    out = torch.zeros_like(img)
    h, w = img.shape[-2:]
    src = img[..., max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
    out[..., max(0, dy) : max(0, dy) + src.shape[-2], max(0, dx) : max(0, dx) + src.shape[-1]] = src
    return out


def find_shift(out: torch.Tensor, img: torch.Tensor, pad: int) -> tuple[int, int] | None:
    for dy in range(-pad, pad + 1):
        for dx in range(-pad, pad + 1):
            if torch.equal(out, translate(img, dy, dx)):
                return dy, dx
    return None


def images(n: int = 32, c: int = 1, size: int = 28) -> torch.Tensor:
    # Strictly positive, all distinct: a shifted image can only match one shift.
    return torch.rand(n, c, size, size, generator=gen(123)) + 1.0


@pytest.mark.parametrize(
    ("policy", "shape"),
    [
        ("crop-flip", (8, 1, 28, 28)),
        ("crop-flip", (8, 3, 32, 32)),
        ("crop", (8, 1, 8, 8)),
        ("shift1d", (8, 1, 40)),
        ("none", (8, 1, 40)),
    ],
)
def test_shape_dtype_and_determinism(policy, shape):
    x = torch.randn(shape, generator=gen(5))
    a, b = augment_batch(x, policy, gen(1)), augment_batch(x, policy, gen(1))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    if policy != "none":
        assert not torch.equal(a, augment_batch(x, policy, gen(2)))
        assert not torch.equal(a, x)


def test_none_is_identity():
    x = torch.randn(4, 1, 8, 8)
    assert augment_batch(x, "none", gen()) is x


def test_input_not_modified():
    x = images(8)
    before = x.clone()
    augment_batch(x, "crop-flip", gen())
    assert torch.equal(x, before)


@pytest.mark.parametrize(("size", "pad"), [(8, 1), (28, 2)])
def test_crop_is_a_zero_filled_shift_within_padding(size, pad):
    x = images(48, size=size)
    out = augment_batch(x, "crop", gen(3))
    shifts = [find_shift(out[i], x[i], pad) for i in range(len(x))]
    assert all(s is not None for s in shifts), "every output must be a shift of its input"
    # Content actually moves, in both axes and both directions, and not all the same way.
    assert sum(s != (0, 0) for s in shifts) > len(x) // 2
    assert {s[0] for s in shifts} == set(range(-pad, pad + 1))
    assert {s[1] for s in shifts} == set(range(-pad, pad + 1))


def test_crop_padding_sizes():
    assert (crop_padding(8), crop_padding(28), crop_padding(32)) == (1, 2, 4)
    x = images(64, c=3, size=32)
    out = augment_batch(x, "crop", gen(4))
    assert all(find_shift(out[i], x[i], 4) is not None for i in range(0, 64, 8))
    # A 4-pixel shift leaves a zero border at least 3 px wide somewhere in the batch.
    assert (out[:, :, :3, :] == 0).all(dim=(1, 2, 3)).any()


def test_flip_flips_some_and_not_others():
    x = images(64)
    out = augment_batch(x, "crop-flip", gen(6), pad=0)
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(64)]
    kept = [torch.equal(out[i], x[i]) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 16 < sum(flipped) < 48


def test_crop_flip_combines_both():
    x = images(32)
    out = augment_batch(x, "crop-flip", gen(7))
    for i in range(32):
        assert find_shift(out[i], x[i], 2) is not None or find_shift(out[i].flip(-1), x[i], 2) is not None


def test_crop_never_flips():
    x = images(32)
    out = augment_batch(x, "crop", gen(8), pad=0)
    assert torch.equal(out, x)


def test_shift1d_shifts_signals_with_zero_fill():
    x = torch.rand(64, 1, 40, generator=gen(9)) + 1.0
    out = augment_batch(x, "shift1d", gen(10))
    seen = set()
    for i in range(64):
        matches = [s for s in range(-3, 4) if torch.equal(out[i], translate(x[i][None], 0, s)[0])]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == set(range(-3, 4))


def test_bad_policy_or_layout():
    with pytest.raises(ValueError, match=r"unknown augmentation policy 'rotate'.*crop-flip"):
        augment_batch(torch.zeros(2, 1, 8, 8), "rotate", gen())
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        augment_batch(torch.zeros(2, 1, 40), "crop", gen())
    with pytest.raises(ValueError, match=r"\(N, C, L\)"):
        augment_batch(torch.zeros(2, 1, 8, 8), "shift1d", gen())
    assert set(POLICIES) == {"crop-flip", "crop", "shift1d", "none"}
