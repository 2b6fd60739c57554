"""Fixtures of the library tests."""

import os

import pytest
import torch
from torch import nn

from support import small_cnn

# Tests build every model from a config: nothing may reach the Hugging Face Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def cnn() -> nn.Module:
    torch.manual_seed(0)
    return small_cnn()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(6, 1, 12, 12, generator=torch.Generator().manual_seed(2))
