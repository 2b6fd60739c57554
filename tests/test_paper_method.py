"""The paper's method: arctan in absolute units, shared hyperparameters, decay on the effective
weight, and Adam with Powerpropagation's modification."""

import copy
import io
import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrize

import weight_compander as wc

D = torch.float64


def mlp(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def slope_at_zero(kind: str, **hyper: float) -> float:
    x = torch.zeros((), dtype=D, requires_grad=True)
    h = {k: torch.tensor(v, dtype=D) for k, v in hyper.items()}
    (grad,) = torch.autograd.grad(wc.get_kind(kind).forward(x, **h), x)
    return grad.item()


@settings(max_examples=40, deadline=None)
@given(a=st.floats(0.1, 5.0), b=st.floats(0.1, 5.0))
def test_paper_kinds_slope_at_zero_and_bound(a, b):
    assert slope_at_zero("arctan", a=a, b=b) == pytest.approx(a / b, rel=1e-12)
    assert slope_at_zero("asinh", a=a, b=b) == pytest.approx(a / b, rel=1e-12)
    assert slope_at_zero("erf", a=a, b=b) == pytest.approx(2 * a / (b * math.sqrt(math.pi)), rel=1e-12)
    far = torch.tensor([1e6], dtype=D)
    h = {"a": torch.tensor(a, dtype=D), "b": torch.tensor(b, dtype=D)}
    assert wc.get_kind("arctan").forward(far, **h).item() == pytest.approx(a * math.pi / 2, rel=1e-5)
    assert wc.get_kind("arctan").bound_value(h).item() == pytest.approx(a * math.pi / 2)
    assert wc.get_kind("erf").bound_value(h).item() == pytest.approx(a)
    assert wc.get_kind("asinh").bound is None  # grows like log: no bound


SLOPES_AT_ZERO = {
    "tanh": ({"gain": 1.7, "limit": 2.0}, 1.7),
    "mulaw": ({"mu": 8.0, "crossover": 3.0}, 8.0 / math.log1p(8.0)),
    "identity": ({}, 1.0),
    "arctan": ({"a": 1.0, "b": 0.6}, 1.0 / 0.6),
    "asinh": ({"a": 0.8, "b": 0.5}, 0.8 / 0.5),
    "erf": ({"a": 0.7, "b": 0.7}, 2 / math.sqrt(math.pi)),
    "linear": ({"slope": 1.3}, 1.3),
    "powerprop": ({"alpha": 2.0}, 0.0),
}


@pytest.mark.parametrize("kind", SLOPES_AT_ZERO)
@pytest.mark.parametrize("dtype", [torch.float32, D], ids=["float32", "float64"])
def test_autograd_slope_at_exactly_zero_is_the_true_slope(kind, dtype):
    """A weight that is exactly 0 must still get its gradient (abs() has slope 0 at 0)."""
    hyper, slope = SLOPES_AT_ZERO[kind]
    layer = nn.Linear(3, 3, bias=False).to(dtype)
    with torch.no_grad():
        layer.weight.uniform_(-0.3, 0.3)
        layer.weight[0, 0] = 0.0
    wc.compand(layer, kind=kind, scale=1.0, **hyper)
    layer.weight.sum().backward()
    grad = layer.parametrizations.weight.original.grad[0, 0].item()
    assert grad == pytest.approx(slope, rel=1e-6)


def test_powerprop_pulls_toward_zero_and_linear_is_a_line():
    assert slope_at_zero("powerprop", alpha=2.0) == 0.0
    assert slope_at_zero("linear", slope=1.7) == pytest.approx(1.7)
    v = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], dtype=D)
    assert torch.equal(wc.get_kind("powerprop").forward(v, torch.tensor(2.0, dtype=D)), v * v.abs())


def test_paper_setting_in_absolute_units_is_exactly_a_arctan_v_over_b():
    model = mlp()
    x = torch.randn(5, 6)
    before = model(x).detach()
    names = wc.apply(model, kind="arctan", a=1.0, b=0.6, scale=1.0)
    assert names == ["0.weight", "2.weight"]
    assert torch.allclose(model(x), before, atol=1e-6)  # v = b tan(w / a): starts as the baseline
    for layer in (model[0], model[2]):
        compander = layer.parametrizations.weight[0]
        assert compander.scale.item() == 1.0  # absolute units, no per-tensor scale
        v = layer.parametrizations.weight.original
        assert torch.allclose(layer.weight, 1.0 * torch.atan(v / 0.6), rtol=0, atol=1e-7)


def test_arctan_overflow_is_measured_against_a_times_pi_over_2():
    layer = nn.Linear(4, 4)
    with torch.no_grad():
        layer.weight.fill_(0.7)  # inside 0.5 * pi/2 = 0.785, beyond a = 0.5 itself
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning: 0.7 is invertible
        wc.compand(layer, kind="arctan", a=0.5, b=0.5, scale=1.0)
    assert torch.allclose(layer.weight, torch.full((4, 4), 0.7), atol=1e-6)
    beyond = nn.Linear(4, 4)
    with torch.no_grad():
        beyond.weight.fill_(0.9)
    with pytest.raises(ValueError, match=r"arctan bound 1\.571·a"):
        wc.compand(beyond, kind="arctan", a=0.5, b=0.5, scale=1.0, overflow="error")
    assert torch.equal(beyond.weight, torch.full((4, 4), 0.9))  # refused: the layer is unchanged


# --- shared ("coarse") hyperparameters ---------------------------------------------------------


def shared_and_fine():
    shared, fine = mlp(), mlp()
    kw = {"kind": "arctan", "a": 0.5, "b": 1.0, "scale": 1.0, "learnable": True}
    wc.apply(shared, share_hyperparameters=True, **kw)
    wc.apply(fine, **kw)
    return shared, fine


def test_shared_hyperparameters_are_one_parameter_with_the_summed_gradient():
    shared, fine = shared_and_fine()
    assert [n for n, _ in wc.named_hyperparameters(shared)] == ["0.weight.raw_a", "0.weight.raw_b"]
    assert len(list(wc.named_hyperparameters(fine))) == 4
    groups = wc.param_groups(shared, weight_decay=1e-4)
    hyper = next(g for g in groups if g["name"] == "wc_hyper")
    assert len(hyper["params"]) == 2  # one entry in the optimizer per hyperparameter
    x, y = torch.randn(7, 6), torch.randint(0, 3, (7,))
    for model in (shared, fine):
        nn.functional.cross_entropy(model(x), y).backward()
    fine_grads = dict(wc.named_hyperparameters(fine))
    for name, p in wc.named_hyperparameters(shared):
        other = name.replace("0.weight", "2.weight")
        total = fine_grads[name].grad + fine_grads[other].grad
        assert torch.allclose(p.grad, total, rtol=1e-5, atol=1e-7)


def test_shared_hyperparameters_survive_deepcopy_pickle_and_state_dict():
    shared, _ = shared_and_fine()
    with torch.no_grad():
        shared[0].parametrizations.weight[0].raw_a.add_(0.25)
    first = lambda m: m[0].parametrizations.weight[0]  # noqa: E731
    last = lambda m: m[2].parametrizations.weight[0]  # noqa: E731
    replica = copy.deepcopy(shared)
    assert first(replica).raw_a is last(replica).raw_a and first(replica).raw_a is not first(shared).raw_a
    buffer = io.BytesIO()
    torch.save(shared, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert first(loaded).raw_a is last(loaded).raw_a
    fresh, _ = shared_and_fine()
    fresh.load_state_dict(shared.state_dict())
    assert first(fresh).raw_a is last(fresh).raw_a
    assert torch.equal(last(fresh).raw_a, first(shared).raw_a)
    x = torch.randn(3, 6)
    assert torch.equal(fresh(x), shared(x))


def test_shared_hyperparameters_refuse_what_cannot_be_shared():
    model = mlp()
    with pytest.raises(ValueError, match="per_channel=False"):
        wc.apply(model, kind="arctan", scale=1.0, learnable=True, per_channel=True,
                 share_hyperparameters=True)
    assert not parametrize.is_parametrized(model[0])  # refused before anything changed
    with torch.no_grad():
        model[2].weight[0, 0] = 3.0  # beyond 0.5 * pi/2: the bound would be raised for this tensor
    with pytest.raises(ValueError, match=r"'2.weight' needs its own a"):
        wc.apply(model, kind="arctan", a=0.5, b=1.0, scale=1.0, learnable=True, share_hyperparameters=True)
    assert not parametrize.is_parametrized(model[0]) and not parametrize.is_parametrized(model[2])


# --- weight decay on the effective weight ------------------------------------------------------


def sgd_steps(model, opt, loss_fn, steps=5):
    torch.manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(9, 6, dtype=D), torch.randint(0, 3, (9,))
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        opt.step()


def test_effective_decay_with_identity_equals_sgd_weight_decay():
    lam = 0.05
    plain, companded = mlp(dtype=D), mlp(dtype=D)
    wc.apply(companded, kind="identity")
    opt_plain = torch.optim.SGD(wc.param_groups(plain, weight_decay=lam), lr=0.1, momentum=0.9)
    groups = wc.param_groups(companded, weight_decay=lam, decay="effective")
    assert {g["name"]: g["weight_decay"] for g in groups} == {
        "no_decay": 0.0, "decay_effective": 0.0
    }
    opt_wc = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    ce = lambda m, x, y: nn.functional.cross_entropy(m(x), y)  # noqa: E731
    sgd_steps(plain, opt_plain, ce)
    sgd_steps(companded, opt_wc, lambda m, x, y: ce(m, x, y) + wc.effective_weight_decay(m, lam))
    for a, b in zip(plain.parameters(), [companded[0].weight, companded[0].bias,
                                          companded[2].weight, companded[2].bias], strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-13)


def test_effective_decay_gradient_is_lambda_w_times_f_prime():
    model = mlp(dtype=D)
    wc.apply(model, kind="arctan", a=1.0, b=0.6, scale=1.0)
    lam = 0.3
    wc.effective_weight_decay(model, lam).backward()
    for layer in (model[0], model[2]):
        v = layer.parametrizations.weight.original
        w = torch.atan(v / 0.6)
        by_hand = lam * w * (1 / 0.6) / (1 + (v / 0.6) ** 2)
        assert torch.allclose(v.grad, by_hand, rtol=1e-12)
    with torch.no_grad():  # and its value: lambda/2 * sum w^2
        expected = lam / 2 * sum(float(layer.weight.pow(2).sum()) for layer in (model[0], model[2]))
    assert wc.effective_weight_decay(model, lam).item() == pytest.approx(expected, rel=1e-12)


def test_effective_decay_keeps_the_optimizer_decay_on_weights_that_are_not_companded():
    model = mlp()
    wc.apply(model, include=["0.weight"], kind="arctan", scale=1.0)
    groups = {g["name"]: g for g in wc.param_groups(model, weight_decay=1e-3, decay="effective")}
    assert groups["decay"]["params"] == [model[2].weight] and groups["decay"]["weight_decay"] == 1e-3
    assert groups["decay_effective"]["params"] == [model[0].parametrizations.weight.original]
    assert groups["decay_effective"]["effective_weight_decay"] == 1e-3
    with pytest.raises(ValueError, match="decay must be one of raw, effective"):
        wc.param_groups(model, weight_decay=1e-3, decay="w")
    with pytest.raises(ValueError, match="nothing in this model is companded"):
        wc.effective_weight_decay(mlp(), 1e-3)


# --- Adam with Powerpropagation's modification -------------------------------------------------


def test_companded_adamw_matches_a_hand_computation():
    layer = nn.Linear(3, 2, bias=False).double()
    wc.compand(layer, kind="arctan", a=1.0, b=0.6, scale=1.0)
    v = layer.parametrizations.weight.original
    lr, (b1, b2), eps, wd = 0.01, (0.9, 0.999), 1e-8, 0.1
    opt = wc.CompandedAdamW(layer.parameters(), layer, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    mine = v.detach().clone()
    m = torch.zeros_like(mine)
    s = torch.zeros_like(mine)
    torch.manual_seed(0)
    for t in (1, 2, 3):
        x = torch.randn(4, 3, dtype=D)
        opt.zero_grad()
        layer(x).pow(2).sum().backward()
        # by hand: dL/dw from the effective weight, f'(v) = (a/b) / (1 + (v/b)^2)
        w = torch.atan(mine / 0.6)
        grad_w = 2 * (x @ w.T).T @ x
        slope = (1 / 0.6) / (1 + (mine / 0.6) ** 2)
        mine = mine * (1 - lr * wd)
        m = b1 * m + (1 - b1) * grad_w
        s = b2 * s + (1 - b2) * grad_w**2
        update = (m / (1 - b1**t)) / ((s / (1 - b2**t)).sqrt() + eps)
        mine = mine - lr * update * slope
        opt.step()
        assert torch.allclose(v, mine, rtol=1e-10, atol=1e-13)


def test_companded_adamw_with_identity_is_adamw():
    plain, companded = mlp(dtype=D), mlp(dtype=D)
    wc.apply(companded, kind="identity")
    opt_plain = torch.optim.AdamW(plain.parameters(), lr=0.01, weight_decay=0.05)
    opt_wc = wc.CompandedAdamW(companded.parameters(), companded, lr=0.01, weight_decay=0.05)
    ce = lambda m, x, y: nn.functional.cross_entropy(m(x), y)  # noqa: E731
    sgd_steps(plain, opt_plain, ce)
    sgd_steps(companded, opt_wc, ce)
    assert torch.allclose(plain[0].weight, companded[0].weight, rtol=1e-9, atol=1e-12)
    assert torch.allclose(plain[2].bias, companded[2].bias, rtol=1e-9, atol=1e-12)


def test_companded_adamw_refuses_a_model_without_companding():
    with pytest.raises(ValueError, match=r"use torch\.optim\.AdamW"):
        wc.CompandedAdamW(mlp().parameters(), mlp())
    stacked = mlp()
    torch.nn.utils.parametrizations.weight_norm(stacked[0])
    wc.apply(stacked, include=["0.weight"], kind="arctan", scale=1.0)
    with pytest.raises(ValueError, match="compander alone"):
        wc.CompandedAdamW(stacked.parameters(), stacked)
