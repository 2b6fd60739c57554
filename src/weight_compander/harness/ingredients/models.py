"""Model zoo of the harness: a name → constructor registry (timm-style ``@register_model``).

Every weight lives in a plain ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d``, so weight
compander and the peer reparameterizations find them, and every model keeps PyTorch's default
(Kaiming-uniform) init: the library's defaults assume it (weights within √3·std of zero).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch.nn as nn
from torch import Tensor

__all__ = ["MODELS", "ModelConstructor", "build_model", "register_model"]

ModelConstructor = Callable[[int, tuple[int, ...], int, float], nn.Module]
"""``(in_channels, input_size, num_classes, dropout) -> nn.Module``."""

MODELS: dict[str, ModelConstructor] = {}
MIN_IMAGE_SIZE = 8  # two 2x poolings / strides must leave at least 2x2


def register_model(name: str) -> Callable[[ModelConstructor], ModelConstructor]:
    """Add a constructor to :data:`MODELS` under ``name`` (a decorator).

    Example::

        @register_model("tiny")
        def tiny(in_channels, input_size, num_classes, dropout):
            n_in = in_channels * math.prod(input_size)
            return nn.Sequential(nn.Flatten(), nn.Linear(n_in, num_classes))
    """

    def add(fn: ModelConstructor) -> ModelConstructor:
        if name in MODELS:
            raise ValueError(f"a model named {name!r} is already registered")
        MODELS[name] = fn
        return fn

    return add


def build_model(
    name: str,
    *,
    in_channels: int,
    input_size: int | Sequence[int],
    num_classes: int,
    dropout: float = 0.0,
) -> nn.Module:
    """Build a registered model for data of the given shape.

    Args:
        name: one of :data:`MODELS` (``mlp``, ``cnn``, ``resnet20``, ``resnet18``, ``wrn16-4``, ``cnn1d``).
        in_channels: channels of the input (1 for grey images and signals, 3 for colour).
        input_size: spatial shape of one example, ``(H, W)`` or ``(L,)`` (as in
            :attr:`Dataset.input_size <weight_compander.harness.data.Dataset>`); an int means
            a square image for the 2-D models and ``mlp``, the length for ``cnn1d``.
        num_classes: outputs of the classifier.
        dropout: dropout probability (``mlp``/``cnn``/``cnn1d``/``resnet20``: before the
            classifier layers; ``wrn16-4``: between the two convolutions of every block, as
            in the WRN paper).

    Returns:
        The model, freshly initialised (seed torch first for reproducible init).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if isinstance(input_size, int):
        size: tuple[int, ...] = (input_size,) if name == "cnn1d" else (input_size, input_size)
    else:
        size = tuple(int(s) for s in input_size)
    if not size or any(s < 1 for s in size):
        raise ValueError(f"input_size must be positive sizes, got {input_size!r}")
    return MODELS[name](in_channels, size, num_classes, float(dropout))


def _require_2d(name: str, size: tuple[int, ...]) -> tuple[int, int]:
    if len(size) != 2:
        raise ValueError(f"{name} needs 2-D images, got input_size {size}; for 1-D signals use cnn1d or mlp")
    if min(size) < MIN_IMAGE_SIZE:
        raise ValueError(f"{name} needs images of at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}")
    return size[0], size[1]


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    # No conv bias: the BatchNorm after it has one.
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


def _head(n_in: int, num_classes: int, dropout: float) -> list[nn.Module]:
    """The conv nets' classifier: dropout, a 128-unit hidden Linear, dropout, the output Linear."""
    return [
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(n_in, 128),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(128, num_classes),
    ]


# --------------------------------------------------------------------------- mlp, cnn


@register_model("mlp")
def mlp(in_channels: int, input_size: tuple[int, ...], num_classes: int, dropout: float):
    """Two hidden layers (512, 256) with ReLU and dropout."""
    n_in = in_channels * math.prod(input_size)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(n_in, 512),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(512, 256),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(256, num_classes),
    )


@register_model("cnn")
def cnn(in_channels: int, input_size: tuple[int, ...], num_classes: int, dropout: float):
    """Small conv net: 3 conv+BN+ReLU blocks (32, 64, 64 channels, two 2x max-pools), FC 128.

    Why this shape: ~90% on Fashion-MNIST in a few epochs, fast on two CPU cores. Pooling
    right after the conv (before BN and ReLU, as airbench does) runs BN and ReLU on 4x fewer
    values, and max-pooling is the slowest op here on CPU. The 128-unit hidden layer gives
    weight compander a large Linear weight besides the convolutions.
    """
    h, w = _require_2d("cnn", input_size)

    def pooled(c_in: int, c_out: int) -> list[nn.Module]:
        conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        return [conv, nn.MaxPool2d(2), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *pooled(in_channels, 32),
        *pooled(32, 64),
        *_conv_bn(64, 64),
        *_head(64 * (h // 4) * (w // 4), num_classes, dropout),
    )


@register_model("cnn-nonorm")
def cnn_nonorm(in_channels: int, input_size: tuple[int, ...], num_classes: int, dropout: float):
    """`cnn` without normalization layers: conv (with bias) + ReLU, He-initialized.

    Why: a conv weight followed by BatchNorm can be rescaled without changing the function,
    so in `cnn` weight compander's magnitude bound only changes training dynamics. Here the
    scale of every weight reaches the output, the regime the method is designed for. He
    (fan-in) init replaces PyTorch's default so the signal keeps its scale through five
    layers without a normalization to restore it.
    """
    h, w = _require_2d("cnn-nonorm", input_size)

    def conv(c_in: int, c_out: int, pool: bool) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), *([nn.MaxPool2d(2)] if pool else []),
                nn.ReLU(inplace=True)]

    model = nn.Sequential(
        *conv(in_channels, 32, pool=True),
        *conv(32, 64, pool=True),
        *conv(64, 64, pool=False),
        *_head(64 * (h // 4) * (w // 4), num_classes, dropout),
    )
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return model


# --------------------------------------------------------------------------- resnet20


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016); 1x1 conv + BN shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet: a 3x3 stem, three stages of basic blocks, global pool, classifier."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        blocks: int,
        widths: Sequence[int],
        dropout: float,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(in_channels, widths[0]))
        layers: list[nn.Module] = []
        c_in = widths[0]
        for i, c_out in enumerate(widths):
            for j in range(blocks):
                layers.append(BasicBlock(c_in, c_out, stride=2 if i > 0 and j == 0 else 1))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.layers(self.stem(x))).flatten(1)
        return self.fc(self.dropout(x))


@register_model("resnet20")
def resnet20(in_channels: int, input_size: tuple[int, ...], num_classes: int, dropout: float):
    """ResNet-20 (3 stages x 3 basic blocks, 16/32/64 channels, ~0.27M parameters)."""
    _require_2d("resnet20", input_size)
    return ResNet(in_channels, num_classes, blocks=3, widths=(16, 32, 64), dropout=dropout)


@register_model("resnet18")
def resnet18(in_channels: int, input_size: tuple[int, ...], num_classes: int, dropout: float):
    """CIFAR ResNet-18, the paper's main model (3x3 stem, 4 stages x 2 basic blocks,
    64/128/256/512 channels, ~11.2M parameters; the common CIFAR adaptation of He et al. 2016)."""
    _require_2d("resnet18", input_size)
    return ResNet(in_channels, num_classes, blocks=2, widths=(64, 128, 256, 512), dropout=dropout)


# --------------------------------------------------------------------------- wide resnet


class WideBlock(nn.Module):
    """Pre-activation wide block (Zagoruyko & Komodakis 2016): BN-ReLU-conv, dropout inside."""

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        o = self.relu(self.bn1(x))
        # The projection sees the pre-activated input, as in the reference WRN code.
        shortcut = x if self.shortcut is None else self.shortcut(o)
        o = self.conv1(o)
        o = self.conv2(self.dropout(self.relu(self.bn2(o))))
        return o + shortcut


class WideResNet(nn.Module):
    """WRN-d-k: depth d = 6n + 4, widths 16k, 32k, 64k."""

    def __init__(self, in_channels: int, num_classes: int, depth: int, width: int, dropout: float) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = (16 * width, 32 * width, 64 * width)
        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        c_in = 16
        for i, c_out in enumerate(widths):
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                layers.append(WideBlock(c_in, c_out, stride, dropout))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(c_in)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn(self.layers(self.stem(x))))
        return self.fc(self.pool(x).flatten(1))


@register_model("wrn16-4")
def wrn16_4(in_channels: int, input_size: tuple[int, ...], num_classes: int, dropout: float):
    """Wide ResNet 16-4 (2 blocks per stage, 64/128/256 channels, ~2.7M parameters)."""
    _require_2d("wrn16-4", input_size)
    return WideResNet(in_channels, num_classes, depth=16, width=4, dropout=dropout)


# --------------------------------------------------------------------------- 1-D


@register_model("cnn1d")
def cnn1d(in_channels: int, input_size: tuple[int, ...], num_classes: int, dropout: float):
    """1-D conv net for MNIST-1D (length 40): 3 conv+BN+ReLU layers, two stride-2 downsamples.

    Flattens instead of pooling globally: where a feature sits in the signal matters.
    """
    if len(input_size) != 1:
        raise ValueError(f"cnn1d needs 1-D signals (input_size (L,)), got {input_size}")
    length = input_size[0]
    if length < 4:
        raise ValueError(f"cnn1d needs signals of length >= 4, got {length}")
    out_len = (length - 1) // 2 + 1  # after one stride-2 conv with kernel 3, padding 1
    out_len = (out_len - 1) // 2 + 1

    def block(c_in: int, c_out: int, k: int, stride: int) -> list[nn.Module]:
        conv = nn.Conv1d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False)
        return [conv, nn.BatchNorm1d(c_out), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *block(in_channels, 32, 5, 1),
        *block(32, 64, 3, 2),
        *block(64, 64, 3, 2),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(64 * out_len, num_classes),
    )
