"""KURE, the quantization peer: its kurtosis and penalty against hand computations, and a run."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import weight_compander as wc
from weight_compander.harness.config.settings import TrainConfig
from weight_compander.harness.errors import ConfigError
from weight_compander.harness.ingredients import kure
from weight_compander.harness.run import train


def test_kurtosis_matches_hand_computations():
    # [-1, 1]: z = ±1, mean z^4 = 1; [-1, 0, 1]: var 2/3, mean z^4 = (2 * 9/4) / 3 = 1.5
    assert float(kure.kurtosis(torch.tensor([-1.0, 1.0]))) == pytest.approx(1.0)
    assert float(kure.kurtosis(torch.tensor([-1.0, 0.0, 1.0]))) == pytest.approx(1.5)
    # the KURE target: evenly spaced (uniform) values; Gaussian ones: 3
    grid = torch.linspace(-1, 1, 200_001, dtype=torch.float64)
    assert float(kure.kurtosis(grid)) == pytest.approx(1.8, abs=1e-4)
    assert float(kure.penalty_of([grid])) == pytest.approx(0.0, abs=1e-7)
    gauss = torch.randn(400_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert float(kure.kurtosis(gauss)) == pytest.approx(3.0, abs=0.05)
    # the penalty is the mean over tensors of (k - 1.8)^2
    two = [torch.tensor([-1.0, 1.0]), torch.tensor([-1.0, 0.0, 1.0])]
    assert float(kure.penalty_of(two)) == pytest.approx(((1 - 1.8) ** 2 + (1.5 - 1.8) ** 2) / 2)


def test_a_constant_tensor_gives_a_finite_penalty():
    assert torch.isfinite(kure.penalty_of([torch.full((3, 4), 0.5)]))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-10, 10), min_size=3, max_size=40), st.floats(0.1, 10), st.floats(-5, 5))
def test_kurtosis_does_not_depend_on_scale_or_shift(values, scale, shift):
    w = torch.tensor(values, dtype=torch.float64)
    if float(w.std()) < 1e-3:
        return  # (almost) constant: no shape to speak of
    assert float(kure.kurtosis(scale * w + shift)) == pytest.approx(float(kure.kurtosis(w)), rel=1e-6)


def test_penalty_gradient_matches_finite_differences():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 2, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: kure.penalty_of([x, y]), (a, b))


def test_penalty_acts_on_the_effective_weights_of_linear_and_conv_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(12, 2))
    assert list(kure.weights(model)) == ["0.weight", "3.weight"]  # no BatchNorm, no biases
    wc.apply(model, kind="tanh", gain=2.0, limit=3.0)
    effective = [model[0].weight, model[3].weight]
    assert kure.penalty(model).item() == pytest.approx(kure.penalty_of(effective).item())
    kure.penalty(model).backward()  # reaches the raw tensors through the compander
    raw = model[0].parametrizations.weight.original
    assert raw.grad is not None and raw.grad.abs().sum() > 0
    assert kure.kurtoses(model) == pytest.approx(
        {"0.weight": kure.kurtosis(effective[0]).item(), "3.weight": kure.kurtosis(effective[1]).item()})
    with pytest.raises(ValueError, match="at least one Linear/Conv"):
        kure.penalty(nn.Sequential(nn.ReLU()))


def test_kure_setting_is_checked():
    assert TrainConfig().kure == 0.0
    with pytest.raises(ConfigError, match="kure: must be >= 0"):
        TrainConfig(kure=-0.1)


def test_a_run_with_kure_has_flatter_weights(tmp_path):
    """The same run with and without KURE: the penalty lowers every layer's kurtosis toward 1.8."""
    base = dict(dataset="digits", model="mlp", epochs=3, batch_size=64, train_subset=400,
                val_size=100, threads=1, eval_batch_size=256)
    last = {}
    for lam in (0.0, 1.0):
        train.run(TrainConfig(**base, kure=lam), tmp_path / str(lam), progress="quiet")
        rows = [json.loads(x) for x in (tmp_path / str(lam) / "metrics.jsonl").read_text().splitlines()]
        last[lam] = rows[-1]["kurtosis"]
    assert set(last[0.0]) == set(last[1.0]) and len(last[0.0]) >= 2
    off = sum((k - 1.8) ** 2 for k in last[0.0].values())
    on = sum((k - 1.8) ** 2 for k in last[1.0].values())
    assert on < 0.5 * off, (last[0.0], last[1.0])
