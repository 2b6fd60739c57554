"""Model registry: every model builds, runs forward/backward, and holds weights WC can reach."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from weight_compander.harness.ingredients.models import MODELS, build_model, register_model

IMAGE_MODELS = [n for n in MODELS if n != "cnn1d"]
# (in_channels, input_size) each model must accept.
SHAPES = {name: [(1, (28, 28)), (3, (32, 32)), (1, (8, 8))] for name in IMAGE_MODELS}
SHAPES["cnn1d"] = [(1, (40,)), (2, (40,))]
CASES = [(name, c, s) for name in MODELS for c, s in SHAPES[name]]
# Parameter counts for 10 classes, 3x32x32 input (1x40 for cnn1d): the published sizes where
# there are any (ResNet-20 0.27M, CIFAR ResNet-18 11.2M, WRN-16-4 2.7M).
PARAMS = {
    "mlp": (1.6e6, 1.8e6),
    "cnn": (0.5e6, 0.65e6),
    "cnn-nonorm": (0.5e6, 0.65e6),
    "resnet20": (0.26e6, 0.29e6),
    "resnet18": (11.1e6, 11.2e6),
    "wrn16-4": (2.7e6, 2.8e6),
    "cnn1d": (15e3, 40e3),
}


def test_registry_contents():
    assert set(MODELS) == {"mlp", "cnn", "cnn-nonorm", "resnet20", "resnet18", "wrn16-4", "cnn1d"}
    assert set(PARAMS) == set(MODELS)


@pytest.mark.parametrize(("name", "channels", "size"), CASES)
def test_forward_backward(name, channels, size):
    torch.manual_seed(0)
    model = build_model(name, in_channels=channels, input_size=size, num_classes=7, dropout=0.2)
    x = torch.randn(3, channels, *size)
    out = model(x)
    assert out.shape == (3, 7) and torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([0, 3, 6])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    grads = [p.grad.abs().sum() for p in model.parameters() if p.dim() >= 2]
    assert all(g > 0 for g in grads), "every weight matrix / kernel must receive gradient"


@pytest.mark.parametrize("name", list(MODELS))
def test_parameter_counts(name):
    channels, size = (1, (40,)) if name == "cnn1d" else (3, (32, 32))
    model = build_model(name, in_channels=channels, input_size=size, num_classes=10)
    n = sum(p.numel() for p in model.parameters())
    low, high = PARAMS[name]
    assert low <= n <= high, f"{name}: {n} parameters"


@pytest.mark.parametrize("name", list(MODELS))
def test_every_weight_sits_in_a_linear_or_conv(name):
    channels, size = SHAPES[name][0]
    model = build_model(name, in_channels=channels, input_size=size, num_classes=10)
    owners = {
        f"{mname}.{pname}".lstrip("."): m
        for mname, m in model.named_modules()
        for pname, _ in m.named_parameters(recurse=False)
    }
    matrices = [k for k, p in model.named_parameters() if p.dim() >= 2]
    assert matrices
    for key in matrices:
        assert isinstance(owners[key], nn.Linear | nn.Conv1d | nn.Conv2d), key


@pytest.mark.parametrize("name", list(MODELS))
def test_init_is_seeded_and_dropout_is_used(name):
    channels, size = SHAPES[name][-1]

    def build():
        torch.manual_seed(3)
        return build_model(name, in_channels=channels, input_size=size, num_classes=10, dropout=0.3)

    a, b = build(), build()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    drops = [m for m in a.modules() if isinstance(m, nn.Dropout)]
    assert drops and all(m.p == 0.3 for m in drops)
    a.eval()
    x = torch.randn(2, channels, *size)
    assert torch.equal(a(x), a(x))


@pytest.mark.parametrize(("name", "channels", "size"), [("cnn", 1, (8, 8)), ("cnn1d", 1, (40,))])
def test_small_models_learn(name, channels, size):
    torch.manual_seed(0)
    model = build_model(name, in_channels=channels, input_size=size, num_classes=4)
    x, y = torch.randn(32, channels, *size), torch.arange(32) % 4
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    first = None
    for _ in range(15):
        loss = F.cross_entropy(model(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_int_input_size():
    assert build_model("cnn", in_channels=1, input_size=28, num_classes=10)(
        torch.zeros(2, 1, 28, 28)
    ).shape == (2, 10)
    assert build_model("cnn1d", in_channels=1, input_size=40, num_classes=10)(
        torch.zeros(2, 1, 40)
    ).shape == (2, 10)
    assert build_model("mlp", in_channels=1, input_size=(40,), num_classes=10)(
        torch.zeros(2, 1, 40)
    ).shape == (2, 10)


def test_errors():
    kw = {"in_channels": 1, "num_classes": 10}
    with pytest.raises(ValueError, match=r"unknown model 'vgg'.*mlp.*cnn.*resnet20.*wrn16-4"):
        build_model("vgg", input_size=(28, 28), **kw)
    with pytest.raises(ValueError, match=r"cnn needs 2-D images.*cnn1d"):
        build_model("cnn", input_size=(40,), **kw)
    with pytest.raises(ValueError, match=r"cnn1d needs 1-D signals"):
        build_model("cnn1d", input_size=(28, 28), **kw)
    with pytest.raises(ValueError, match=r"at least 8x8"):
        build_model("resnet20", input_size=(6, 6), **kw)
    with pytest.raises(ValueError, match=r"dropout"):
        build_model("mlp", input_size=(8, 8), dropout=1.0, **kw)
    with pytest.raises(ValueError, match=r"already registered"):
        register_model("mlp")(lambda *a: nn.Identity())


def test_register_model():
    @register_model("test-linear")
    def linear(in_channels, input_size, num_classes, dropout):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * input_size[0], num_classes))

    try:
        model = build_model("test-linear", in_channels=2, input_size=(5,), num_classes=3)
        assert model(torch.zeros(4, 2, 5)).shape == (4, 3)
    finally:
        del MODELS["test-linear"]


def test_cnn_nonorm_has_no_normalization_and_keeps_the_signal_scale():
    """The point of `cnn-nonorm`: every weight's scale reaches the output (no norm layer
    could undo it), and He init keeps activations O(1) through its five layers."""
    torch.manual_seed(0)
    model = build_model("cnn-nonorm", in_channels=1, input_size=(28, 28), num_classes=10)
    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)
    assert not any(isinstance(m, norms) for m in model.modules())
    x = torch.randn(256, 1, 28, 28)
    out = model.eval()(x)
    assert 0.3 < out.std().item() < 10.0  # max-pooling raises it; default init gives 0.08
    with torch.no_grad():  # doubling one conv kernel changes the output (it would not under BN)
        model[0].weight.mul_(2)
    assert not torch.allclose(model(x), out, rtol=1e-3, atol=1e-3)
