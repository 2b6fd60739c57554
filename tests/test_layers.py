"""The layer registry (type -> tensors, output axis) and coverage: what apply compands, and says."""

import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

import weight_compander as wc
from support import assert_same, small_cnn, snapshot
from weight_compander import fused


class Dense(nn.Module):
    """A custom layer with its weight stored (in, out), as some libraries do."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.kernel = nn.Parameter(torch.rand(n_in, n_out) * 2 - 1)  # uniform, as torch's init

    def forward(self, x):
        return x @ self.kernel


@pytest.fixture
def registry():
    """Registrations made by a test are undone after it."""
    from weight_compander import layer_types as layers

    saved = dict(layers._LAYERS)
    yield
    layers._LAYERS.clear()
    layers._LAYERS.update(saved)


def test_a_custom_layer_is_one_line_and_per_channel_follows_its_output_axis(registry):
    torch.manual_seed(0)
    model = nn.Sequential(Dense(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x = torch.randn(4, 6)
    before = model(x)
    with pytest.warns(wc.CompanderWarning, match=r"companded 33\.3% .* left out: 0\.kernel 6x5 \(Dense\)"):
        assert wc.apply(model, per_channel=True, learnable=True) == ["2.weight"]  # an unknown type
    wc.remove(model)
    wc.register_layer(Dense, "kernel", output_axis=1)
    kernel = model[0].kernel.detach().clone()
    assert wc.apply(model, per_channel=True, learnable=True, scale="channel", limit=3.0) == [
        "0.kernel",
        "2.weight",
    ]
    compander = model[0].parametrizations.kernel[0]
    assert compander.raw_gain.shape == (1, 5) and compander.scale.shape == (1, 5)  # one per output
    assert torch.allclose(compander.scale.flatten(), kernel.std(0))
    assert torch.allclose(model(x), before, atol=1e-5)
    model(x).square().sum().backward()
    assert compander.raw_gain.grad.shape == (1, 5) and compander.raw_gain.grad.abs().sum() > 0


def test_per_channel_gradients_along_axis_1_match_autograd(registry):
    """The fused fast path reduces over dim 0 only; other axes must still get exact gradients."""
    torch.manual_seed(0)
    wc.register_layer(Dense, "kernel", output_axis=1)
    layer = Dense(7, 4).double()
    wc.compand(layer, "kernel", learnable=True, per_channel=True)
    c, v = layer.parametrizations.kernel[0], layer.parametrizations.kernel.original
    weights = torch.randn(7, 4, dtype=torch.double)
    (layer.kernel * weights).sum().backward()
    gain, limit = c.raw_gain.exp() + 1, c.raw_limit.exp()
    reference = c.scale * limit * torch.tanh(gain * v / (c.scale * limit))  # plain autograd
    want = torch.autograd.grad((reference * weights).sum(), [v, c.raw_gain, c.raw_limit])
    for got, expected in zip([v.grad, c.raw_gain.grad, c.raw_limit.grad], want, strict=True):
        assert got.shape == expected.shape and torch.allclose(got, expected)


def test_conv_transpose_channels_lie_on_axis_1():
    layer = nn.ConvTranspose2d(6, 4, 3)  # weight (in, out, k, k)
    wc.compand(layer, per_channel=True, learnable=True)
    assert layer.parametrizations.weight[0].raw_gain.shape == (1, 4, 1, 1)


def test_registry_entries_by_path_and_bad_entries(registry):
    assert wc.layers()["transformers.pytorch_utils.Conv1D"].output_axis == 1
    assert not wc.layers()[nn.Embedding].default
    wc.register_layer(f"{__name__}.Dense", "kernel", output_axis=1)  # by path: no import needed
    assert wc.apply(nn.Sequential(Dense(3, 2))) == ["0.kernel"]
    with pytest.raises(ValueError, match="already registered; pass replace=True"):
        wc.register_layer(Dense, "kernel")
    wc.register_layer(Dense, "kernel", output_axis=0, default=False, replace=True)
    assert [k for k in wc.layers() if "Dense" in str(k)] == [Dense]  # the path entry was replaced
    for bad, error in [("Dense", ValueError), (int, TypeError)]:
        with pytest.raises(error, match="layer"):
            wc.register_layer(bad)
    with pytest.raises(ValueError, match="tensors must be tensor names"):
        wc.register_layer(nn.GRUCell, [])
    with pytest.raises(TypeError, match="output_axis must be an int"):
        wc.register_layer(nn.GRUCell, output_axis=1.0)


def test_an_output_axis_beyond_the_tensor_is_a_clear_error(registry):
    wc.register_layer(Dense, "kernel", output_axis=2)
    model = nn.Sequential(Dense(3, 2))
    before = snapshot(model)
    with pytest.raises(ValueError, match="registers output axis 2; fix the entry"):
        wc.apply(model, per_channel=True)
    assert_same(before, snapshot(model))


def test_apply_reports_coverage_and_the_largest_tensors_left_out():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 16), nn.Linear(16, 4))
    with pytest.warns(wc.CompanderWarning, match="companded 28.6%"):  # less than half: said at once
        names = wc.apply(model)
    assert names == ["1.weight", "2.weight"] and isinstance(names, list)
    cov = names.coverage
    assert (cov.companded, cov.total) == (16 * 16 + 4 * 16, 50 * 16 + 16 * 16 + 4 * 16)
    assert cov.left_out == (("0.weight", (50, 16), "Embedding"),)
    assert str(cov).startswith("companded 28.6% of the weight-matrix parameters (320 of 1,120)")
    assert wc.coverage(model) == cov


def test_a_default_selection_that_misses_most_weights_warns_once():
    lstm_model = nn.ModuleDict({"rnn": nn.LSTM(32, 32), "out": nn.Linear(32, 2)})
    with pytest.warns(wc.CompanderWarning, match=r"companded 0\.8% .* largest left out: rnn\.weight_ih_l0"):
        wc.apply(lstm_model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wc.remove(lstm_model)
        wc.apply(lstm_model, include=[nn.LSTM, nn.Linear])  # asked for explicitly: no warning
        wc.remove(lstm_model)
        wc.apply(small_cnn())


def test_overflow_is_one_summary_warning_per_apply():
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(64, 64) for _ in range(6)])
    with torch.no_grad():
        for layer in model:
            layer.weight.normal_(0, 0.02)  # transformers' init: ~4.5% beyond 2 s
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wc.apply(model)
    assert len(caught) == 1
    assert "values (4." in str(caught[0].message) and "in 6 of 6 tensors" in str(caught[0].message)


def test_the_core_library_imports_no_training_framework():
    """transformers' Conv1D is registered by path, and integrations load only with their framework."""
    code = "import sys, torch, weight_compander as wc; wc.apply(torch.nn.Linear(3, 2)); print(*sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert not {"transformers", "lightning", "accelerate"} & set(loaded.split())


PATHS = {
    "float32-kernel": torch.float32,
    "float32-torch-path": torch.float32,
    "float64-torch-path": torch.float64,
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
@pytest.mark.parametrize("channels", [(8, 8), (16, 8)], ids=["8-8", "16-8"])
def test_scale_per_channel_along_axis_1_keeps_outputs_and_exact_hyperparameter_gradients(
    channels, per_channel, path, monkeypatch
):
    """ConvTranspose keeps its output channels on axis 1: scale='channel' gives one s per index of
    axis 1, which the fused path once read as one per index of axis 0 (issue 21)."""
    dtype = PATHS[path]
    if path == "float32-torch-path":  # as without a C compiler
        monkeypatch.setattr(fused, "_kernel_for", lambda *tensors: None)
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(*channels, 3).to(dtype)
    x = torch.randn(2, channels[0], 5, 5, dtype=dtype)
    before = layer(x).detach()
    wc.compand(layer, scale="channel", per_channel=per_channel, learnable=True)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-14}
    assert torch.allclose(layer(x), before, **tol)
    c, v = layer.parametrizations.weight[0], layer.parametrizations.weight.original
    upstream = torch.randn(v.shape, dtype=dtype)
    (layer.weight * upstream).sum().backward()
    # the reference: plain float64 autograd through s * L * tanh(g * v / (s * L))
    leaves = [t.detach().double().requires_grad_() for t in (v, c.raw_gain, c.raw_limit)]
    v64, raw_gain, raw_limit = leaves
    s, gain, limit = c.scale.double(), raw_gain.exp() + 1, raw_limit.exp()
    reference = s * limit * torch.tanh(gain * v64 / (s * limit))
    want = torch.autograd.grad((reference * upstream.double()).sum(), leaves)
    for got, expected in zip([v.grad, c.raw_gain.grad, c.raw_limit.grad], want, strict=True):
        assert got.shape == expected.shape and torch.allclose(got.double(), expected, **tol)
