"""The compander family: the laws every kind must obey, for all inputs and hyperparameters."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import weight_compander as wc
from weight_compander.functions import Hyperparameter
from weight_compander.fused import fused_tanh

D = torch.float64
values = st.lists(st.floats(-50, 50, allow_nan=False), min_size=2, max_size=40)
gains = st.floats(1.0, 8.0)
limits = st.floats(0.5, 10.0)
mus = st.floats(0.1, 100.0)
crossovers = st.floats(0.2, 10.0)
scales = st.floats(1e-3, 10.0)


def curve(kind: str, x: torch.Tensor, s: float, **hyper: float) -> torch.Tensor:
    spec = wc.get_kind(kind)
    h = {k: torch.tensor(v, dtype=D) for k, v in hyper.items()}
    return spec.compand(x, torch.tensor(s, dtype=D), h)


def inverse(kind: str, w: torch.Tensor, s: float, **hyper: float) -> torch.Tensor:
    spec = wc.get_kind(kind)
    h = {k: torch.tensor(v, dtype=D) for k, v in hyper.items()}
    return spec.expand(w, torch.tensor(s, dtype=D), h)


KIND_CASES = [
    ("tanh", {"gain": gains, "limit": limits}),
    ("mulaw", {"mu": mus, "crossover": crossovers}),
    ("identity", {}),
]


@pytest.mark.parametrize(("kind", "hyper"), KIND_CASES, ids=[k for k, _ in KIND_CASES])
def test_odd_increasing_and_invertible(kind, hyper):
    @settings(max_examples=60, deadline=None)
    @given(xs=values, s=scales, h=st.fixed_dictionaries(hyper))
    def law(xs, s, h):
        x = torch.tensor(xs, dtype=D) * s
        w = curve(kind, x, s, **h)
        assert torch.allclose(curve(kind, -x, s, **h), -w, atol=1e-12 * s)  # odd
        order = torch.argsort(x)
        xs_sorted, ws_sorted = x[order], w[order]
        strictly = xs_sorted[1:] > xs_sorted[:-1]
        assert (ws_sorted[1:][strictly] >= ws_sorted[:-1][strictly]).all()  # increasing
        # right inverse: f(f^-1(w)) == w wherever w is inside the invertible range
        spec = wc.get_kind(kind)
        inside = torch.ones_like(w, dtype=torch.bool)
        if spec.bound:
            inside = w.abs() < 0.9 * s * h[spec.bound]
        roundtrip = curve(kind, inverse(kind, w, s, **h), s, **h)
        assert torch.allclose(roundtrip[inside], w[inside], rtol=1e-9, atol=1e-12 * s)

    law()


@settings(max_examples=60, deadline=None)
@given(g=gains, L=limits, s=scales)
def test_tanh_slope_at_zero_is_gain_and_bound_is_limit(g, L, s):
    eps = torch.tensor([1e-7 * s], dtype=D)
    slope = curve("tanh", eps, s, gain=g, limit=L) / eps
    assert math.isclose(slope.item(), g, rel_tol=1e-6)
    far = torch.tensor([1e6 * s], dtype=D)
    assert curve("tanh", far, s, gain=g, limit=L).item() <= s * L * (1 + 1e-12)


@settings(max_examples=60, deadline=None)
@given(mu=mus, c=crossovers, s=scales)
def test_mulaw_slope_and_crossover(mu, c, s):
    eps = torch.tensor([1e-8 * s], dtype=D)
    slope = curve("mulaw", eps, s, mu=mu, crossover=c) / eps
    assert math.isclose(slope.item(), mu / math.log1p(mu), rel_tol=1e-5)
    at_c = curve("mulaw", torch.tensor([s * c], dtype=D), s, mu=mu, crossover=c)
    assert math.isclose(at_c.item(), s * c, rel_tol=1e-9)


@settings(max_examples=40, deadline=None)
@given(xs=values, g=gains, L=limits, s=scales)
def test_fused_tanh_matches_the_formula(xs, g, L, s):
    x = torch.tensor(xs, dtype=D) * s
    spec = wc.get_kind("tanh")
    formula = torch.tensor(s, dtype=D) * spec.forward(
        x / s, torch.tensor(g, dtype=D), torch.tensor(L, dtype=D)
    )
    fused = fused_tanh(x, torch.tensor(s, dtype=D), torch.tensor(g, dtype=D), torch.tensor(L, dtype=D))
    assert torch.allclose(fused, formula, rtol=1e-12, atol=1e-13 * s * L)


@pytest.mark.parametrize("scale_shape", [(), (4, 1)])
@pytest.mark.parametrize("hyper_shape", [(), (4, 1)])
def test_fused_tanh_gradients_are_exact(scale_shape, hyper_shape):
    torch.manual_seed(0)
    v = (torch.randn(4, 3, dtype=D) * 2).requires_grad_()
    s = torch.rand(scale_shape, dtype=D) + 0.5
    g = (torch.rand(hyper_shape, dtype=D) + 1.5).requires_grad_()
    L = (torch.rand(hyper_shape, dtype=D) + 2.0).requires_grad_()
    assert torch.autograd.gradcheck(fused_tanh, (v, s, g, L))


def test_fused_tanh_float32_close_to_float64_and_exact_at_zero():
    x = torch.randn(10_000) * 3
    s, g, L = torch.tensor(0.7), torch.tensor(2.0), torch.tensor(3.0)
    exact = s.double() * wc.get_kind("tanh").forward(x.double() / s.double(), g.double(), L.double())
    assert (fused_tanh(x, s, g, L).double() - exact).abs().max() < 1e-6 * s * L
    assert torch.equal(fused_tanh(torch.zeros(5), s, g, L), torch.zeros(5))


def test_register_custom_kind_and_use_it():
    def cube_root(x, a):
        return torch.sign(x) * (a * x.abs()) ** (1 / 3)

    def cube(y, a):
        return torch.sign(y) * y.abs() ** 3 / a

    kind = wc.register_kind("test-cube-root", cube_root, cube, {"a": 1.5}, replace=True)
    assert "test-cube-root" in wc.kinds() and kind.hyperparameters["a"].default == 1.5
    layer = torch.nn.Linear(6, 5)
    before = layer.weight.detach().clone()
    wc.compand(layer, kind="test-cube-root", learnable=True)
    assert torch.allclose(layer.weight, before, atol=1e-6)
    assert [n for n, _ in wc.named_hyperparameters(layer)] == ["weight.raw_a"]
    with pytest.raises(ValueError, match="already registered"):
        wc.register_kind("test-cube-root", cube_root, cube, {"a": 1.5})


def test_register_kind_rejects_bad_definitions():
    with pytest.raises(TypeError, match="callable"):
        wc.register_kind("test-bad", "not a function", abs)
    with pytest.raises(ValueError, match="bound"):
        wc.register_kind("test-bad", abs, abs, {"a": 1.0}, bound="b")
    with pytest.raises(ValueError, match="> 0"):
        wc.register_kind("test-bad", abs, abs, {"a": -1.0})
    assert "test-bad" not in wc.kinds()


def test_unknown_kind_lists_valid_ones():
    with pytest.raises(ValueError, match="tanh, mulaw, identity"):
        wc.get_kind("tahn")


def test_hyperparameter_check_messages():
    gain = Hyperparameter(2.0, lower=1.0, closed=True)
    assert gain.check("tanh", "gain", 1.0, learnable=False) == 1.0
    with pytest.raises(ValueError, match="learnable gain starts strictly above 1"):
        gain.check("tanh", "gain", 1.0, learnable=True)
    with pytest.raises(TypeError, match="must be a number"):
        gain.check("tanh", "gain", "2", learnable=False)
