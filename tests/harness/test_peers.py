"""Peer reparameterizations: weight_norm is a drop-in, weight_std standardizes, both train."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

from weight_compander.harness.ingredients.models import build_model
from weight_compander.harness.ingredients.peers import PEERS, WS_EPS, apply_peer

CONVS = (nn.Conv1d, nn.Conv2d)


def model(name: str = "cnn", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    size = (40,) if name == "cnn1d" else (8, 8)
    return build_model(name, in_channels=1, input_size=size, num_classes=10)


def inputs(name: str = "cnn") -> torch.Tensor:
    return torch.randn(6, 1, 40) if name == "cnn1d" else torch.randn(6, 1, 8, 8)


def weight_names(m: nn.Module, types: tuple[type, ...]) -> list[str]:
    return [f"{n}.weight" for n, mod in m.named_modules() if isinstance(mod, types)]


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet20", "cnn1d"])
def test_weight_norm_keeps_outputs(name):
    m = model(name).eval()
    x = inputs(name)
    before = m(x)
    expected = weight_names(m, (nn.Linear, *CONVS))
    names = apply_peer(m, "weight_norm")
    assert names == expected
    for n in names:
        mod = m.get_submodule(n.rsplit(".", 1)[0])
        assert parametrize.is_parametrized(mod, "weight")
        assert hasattr(mod.parametrizations.weight, "original0")  # g, v of weight_norm
    torch.testing.assert_close(m(x), before, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["cnn", "cnn1d", "wrn16-4"])
def test_weight_std_standardizes_each_output_channel(name):
    m = model(name)
    convs = weight_names(m, CONVS)
    raw = {n: m.get_submodule(n.rsplit(".", 1)[0]).weight.detach().clone() for n in convs}
    plain_linear = {
        n: m.get_submodule(n.rsplit(".", 1)[0]).weight.clone() for n in weight_names(m, (nn.Linear,))
    }
    names = apply_peer(m, "weight_std")
    assert names == convs
    for n in names:
        w = m.get_submodule(n.rsplit(".", 1)[0]).weight.flatten(1)
        v = raw[n].flatten(1)
        s = raw[n].std(correction=0)  # the whole tensor's init std
        assert w.mean(1).abs().max() < 1e-6 * max(1.0, s.item())
        # Unit std per channel (up to eps), times the init std of the whole tensor.
        std_c = v.std(1, correction=0)
        expected = s * std_c / (std_c + WS_EPS)
        torch.testing.assert_close(w.std(1, correction=0), expected, rtol=1e-4, atol=0)
        assert (expected / s > 0.99).all()  # eps barely matters at init scales
    for n, w in plain_linear.items():
        mod = m.get_submodule(n.rsplit(".", 1)[0])
        assert not parametrize.is_parametrized(mod) and torch.equal(mod.weight, w)


@pytest.mark.parametrize("kind", PEERS)
def test_trains_a_step_and_stays_reparameterized(kind):
    m = model("cnn")
    apply_peer(m, kind)
    raw = {n: p.detach().clone() for n, p in m.named_parameters() if "parametrizations" in n}
    assert raw
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    x, y = inputs(), torch.arange(6) % 10
    losses = []
    for _ in range(3):
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    changed = [n for n, p in m.named_parameters() if n in raw and not torch.equal(p, raw[n])]
    assert len(changed) == len(raw), "the optimizer must reach every raw tensor"
    if kind == "weight_std":
        w = m[0].weight.flatten(1)
        assert w.mean(1).abs().max() < 1e-6


@pytest.mark.parametrize("kind", PEERS)
def test_state_dict_round_trip(kind):
    a, b = model("cnn", seed=0), model("cnn", seed=1)
    apply_peer(a, kind)
    apply_peer(b, kind)
    x = inputs()
    a.eval()
    b.eval()
    assert not torch.allclose(a(x), b(x))
    b.load_state_dict(a.state_dict())  # the weight_std scale buffer travels with it
    torch.testing.assert_close(b(x), a(x))


def test_errors():
    with pytest.raises(ValueError, match=r"unknown peer reparameterization 'spectral'.*weight_std"):
        apply_peer(model(), "spectral")
    with pytest.raises(ValueError, match=r"no Conv layers.*weight_norm or wc"):
        apply_peer(model("mlp"), "weight_std")
    m = model()
    apply_peer(m, "weight_norm")
    with pytest.raises(ValueError, match=r"already parametrized.*one reparameterization"):
        apply_peer(m, "weight_std")
