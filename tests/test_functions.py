"""The compander family: the laws every kind must obey, for all inputs and hyperparameters."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import weight_compander as wc
from weight_compander import cpu_kernel
from weight_compander.functions import Hyperparameter
from weight_compander.fused import fused_tanh, fused_tanh_torch

D = torch.float64
values = st.lists(st.floats(-50, 50, allow_nan=False), min_size=2, max_size=40)
gains = st.floats(1.0, 8.0)
limits = st.floats(0.5, 10.0)
mus = st.floats(0.1, 100.0)
crossovers = st.floats(0.2, 10.0)
scales = st.floats(1e-3, 10.0)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality (tells -0 from +0, unlike ==)."""
    ints = {torch.float32: torch.int32, torch.float64: torch.int64}[a.dtype]
    return a.dtype == b.dtype and torch.equal(a.view(ints), b.view(ints))


def curve(kind: str, x: torch.Tensor, s: float, **hyper: float) -> torch.Tensor:
    spec = wc.get_kind(kind)
    h = {k: torch.tensor(v, dtype=D) for k, v in hyper.items()}
    return spec.compand(x, torch.tensor(s, dtype=D), h)


def inverse(kind: str, w: torch.Tensor, s: float, **hyper: float) -> torch.Tensor:
    spec = wc.get_kind(kind)
    h = {k: torch.tensor(v, dtype=D) for k, v in hyper.items()}
    return spec.expand(w, torch.tensor(s, dtype=D), h)


paper_ab = {"a": st.floats(0.3, 3.0), "b": st.floats(0.3, 3.0)}
KIND_CASES = [
    ("tanh", {"gain": gains, "limit": limits}),
    ("mulaw", {"mu": mus, "crossover": crossovers}),
    ("identity", {}),
    ("arctan", paper_ab),
    ("asinh", paper_ab),
    ("erf", paper_ab),
    ("linear", {"slope": st.floats(0.2, 5.0)}),
    ("powerprop", {"alpha": st.floats(1.0, 4.0, exclude_min=True)}),
]


def test_every_registered_builtin_kind_is_property_tested():
    builtin = [k for k in wc.kinds() if not k.startswith("test-")]
    assert sorted(builtin) == sorted(k for k, _ in KIND_CASES)


@pytest.mark.parametrize(("kind", "hyper"), KIND_CASES, ids=[k for k, _ in KIND_CASES])
def test_odd_increasing_and_invertible(kind, hyper):
    @settings(max_examples=60, deadline=None)
    @given(xs=values, s=scales, h=st.fixed_dictionaries(hyper))
    def law(xs, s, h):
        x = torch.tensor(xs, dtype=D) * s
        w = curve(kind, x, s, **h)
        assert same_bits(curve(kind, -x, s, **h), -w)  # odd, to the last bit
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


# --- the laws to the last bit, float32 over the whole range, fused and unfused (issue 12) ------

# log10(|v| / s) of hypothesis' values; the anchors are always checked too, with both signs
exponents = st.floats(-30.0, 3.0)
wide = st.lists(st.tuples(exponents, st.booleans()), min_size=1, max_size=60)
ANCHORS = [0.0, 1e-30, 1e-6, 1e-3, 0.5, 1.0, 3.0, 50.0, 1e3]
CHANNEL_FACTORS = [1.0, 1.3, 2.0]  # per-channel tests: each row's s and hyperparameters, scaled


def wide_tensor(pairs: list, s: float, dtype: torch.dtype, rows: int = 1) -> torch.Tensor:
    """v = +-10^e * s for hypothesis' (e, negative) pairs and the anchors, each with both signs."""
    x = torch.tensor([10.0**e * (-1.0 if neg else 1.0) for e, neg in pairs] + ANCHORS, dtype=D)
    x = torch.cat([x, -x]) * s
    return (x if rows == 1 else x.expand(rows, -1) * factors(rows, D)).to(dtype)


def factors(rows: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(CHANNEL_FACTORS[:rows], dtype=dtype).view(rows, 1)


def tensors(s: float, h: dict, dtype: torch.dtype, rows: int = 1):
    """s and the hyperparameters as 0-dim tensors, or per row (shape (rows, 1)) when rows > 1."""
    if rows == 1:
        return torch.tensor(s, dtype=dtype), {k: torch.tensor(x, dtype=dtype) for k, x in h.items()}
    f = factors(rows, dtype)
    return s * f, {k: x * f for k, x in h.items()}


def compand_path(kind: str, v: torch.Tensor, s: torch.Tensor, h: dict) -> torch.Tensor:
    """What ``Compander.forward`` runs: the kind's fused function where it has one (for tanh in
    float32 on CPU, the C kernel)."""
    return wc.get_kind(kind).compand(v, s, h)


def torch_path(kind: str, v: torch.Tensor, s: torch.Tensor, h: dict) -> torch.Tensor:
    """The fused function as torch operations (CUDA, float64, no C compiler)."""
    return fused_tanh_torch(v, s, **h) if kind == "tanh" else compand_path(kind, v, s, h)


def formula_path(kind: str, v: torch.Tensor, s: torch.Tensor, h: dict) -> torch.Tensor:
    """The unfused formula ``s * phi(v / s)``, operator by operator."""
    return s * wc.get_kind(kind).forward(v / s, **h)


PATHS = {"fused": compand_path, "fused-torch": torch_path, "unfused": formula_path}
TANH_IMPLEMENTATIONS = {"kernel": fused_tanh, "torch": fused_tanh_torch}
KIND_IDS = [k for k, _ in KIND_CASES]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, D], ids=["float32", "float64"])
@pytest.mark.parametrize(("kind", "hyper"), KIND_CASES, ids=KIND_IDS)
def test_odd_to_the_last_bit(kind, hyper, dtype, path):
    @settings(max_examples=30, deadline=None)
    @given(pairs=wide, s=scales, h=st.fixed_dictionaries(hyper), rows=st.sampled_from([1, 3]))
    def law(pairs, s, h, rows):
        v = wide_tensor(pairs, s, dtype, rows)
        scale, hyper_t = tensors(s, h, dtype, rows)
        w = PATHS[path](kind, v, scale, hyper_t)
        assert same_bits(PATHS[path](kind, -v, scale, hyper_t), -w)

    law()


@pytest.mark.parametrize("dtype", [torch.float32, D], ids=["float32", "float64"])
@pytest.mark.parametrize(("kind", "hyper"), KIND_CASES, ids=KIND_IDS)
def test_inverse_is_odd_to_the_last_bit(kind, hyper, dtype):
    @settings(max_examples=30, deadline=None)
    @given(pairs=wide, s=scales, h=st.fixed_dictionaries(hyper))
    def law(pairs, s, h):
        spec = wc.get_kind(kind)
        scale, hyper_t = tensors(s, h, dtype)
        w = wide_tensor(pairs, s, dtype)  # beyond a bound too: expand clips symmetrically
        assert same_bits(spec.expand(-w, scale, hyper_t), -spec.expand(w, scale, hyper_t))
        y = w / scale
        if spec.bound:
            y = y.clamp(-0.99, 0.99) * hyper_t[spec.bound]
        assert same_bits(spec.inverse(-y, **hyper_t), -spec.inverse(y, **hyper_t))

    law()


# Powerprop's v * |v|^(alpha - 1) underflows float32 below ~1e-38^(1/alpha) by its very form:
# |w| is a power of |v|, so no implementation keeps 1e-6 there; its other laws hold.
PRECISE_KIND_CASES = [(k, h) for k, h in KIND_CASES if k != "powerprop"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("kind", "hyper"), PRECISE_KIND_CASES, ids=[k for k, _ in PRECISE_KIND_CASES])
def test_float32_within_1e_6_of_float64_from_1e_30_to_1e3_scales(kind, hyper, path):
    @settings(max_examples=40, deadline=None)
    @given(pairs=wide, s=scales, h=st.fixed_dictionaries(hyper), rows=st.sampled_from([1, 3]))
    def law(pairs, s, h, rows):
        v = wide_tensor(pairs, s, torch.float32, rows)
        scale, hyper_t = tensors(s, h, torch.float32, rows)
        w = PATHS[path](kind, v, scale, hyper_t)
        # the reference: the formula in float64 at exactly the same (float32) inputs
        ref = formula_path(kind, v.double(), scale.double(), {k: x.double() for k, x in hyper_t.items()})
        zero = ref == 0
        assert zero.sum() == 2 * rows and (w[zero] == 0).all()  # only at v = +-0
        rel = (w.double() - ref).abs()[~zero] / ref.abs()[~zero]
        assert rel.max().item() <= 1e-6

    law()


def fused_and_float64_gradients(v, s, g, L, grad_w, implementation=fused_tanh):
    """dLoss/d(v, g, L) of a fused float32 path and of float64 autograd through the formula."""
    leaves = [x.clone().requires_grad_() for x in (v, g, L)]
    implementation(leaves[0], s, leaves[1], leaves[2]).backward(grad_w)
    leaves64 = [x.double().requires_grad_() for x in (v, g, L)]
    v64, g64, L64 = leaves64
    (s.double() * wc.get_kind("tanh").forward(v64 / s.double(), g64, L64)).backward(grad_w.double())
    return [x.grad for x in leaves], [x.grad for x in leaves64]


@pytest.mark.parametrize("implementation", TANH_IMPLEMENTATIONS)
def test_fused_tanh_backward_matches_float64_autograd(implementation):
    """dw/dv elementwise and both hyperparameter gradients, per tensor and per channel, of the C
    kernel and of the torch path."""

    @settings(max_examples=40, deadline=None)
    @given(pairs=wide, s=scales, g=gains, L=limits, rows=st.sampled_from([1, 3]), seed=st.integers(0, 2**16))
    def law(pairs, s, g, L, rows, seed):
        backward_matches_float64_autograd(TANH_IMPLEMENTATIONS[implementation], pairs, s, g, L, rows, seed)

    law()


def backward_matches_float64_autograd(implementation, pairs, s, g, L, rows, seed):
    """The checks of test_fused_tanh_backward_matches_float64_autograd for one example.

    Each row holds typical weights (randn * s) and hypothesis' extreme ones (1e-30 s .. 1e3 s).
    """
    gen = torch.Generator().manual_seed(seed)
    scale, hyper = tensors(s, {"gain": g, "limit": L}, torch.float32, rows)
    typical = torch.randn(rows, 64, generator=gen, dtype=D) * scale.double()
    v = torch.cat([typical, wide_tensor(pairs, s, D, rows).view(rows, -1)], dim=1).float()
    if rows == 1:
        v = v.view(-1)
    gain, limit = hyper["gain"], hyper["limit"]
    # upstream gradients with the sign of v make every term of the hyperparameter sums positive,
    # so a relative error of the sum is the error of the method, not of a cancelling reference
    grad_w = (torch.rand(v.shape, generator=gen) + 0.5).copysign(v)
    grads, grads64 = fused_and_float64_gradients(v, scale, gain, limit, grad_w, implementation)
    (dv, dg, dL), (dv64, dg64, dL64) = grads, grads64
    assert torch.allclose(dg.double(), dg64, rtol=1e-5, atol=0)
    assert torch.allclose(dL.double(), dL64, rtol=1e-5, atol=0)
    # dw/dv = g sech^2(u): float64 autograd forms 1 - tanh^2, exact only to ~1e-16 absolute ...
    gain64 = gain.double().expand_as(v)
    assert ((dv.double() - dv64).abs() <= 1e-5 * dv64.abs() + 1e-15 * gain64 * grad_w.abs()).all()
    # ... so check the relative error against the closed form too, wherever |u| <= 20
    # (sech^2 >= 1.7e-17); beyond, the one rounding of a float32 u is amplified 2|u|-fold
    u = gain.double() * v.double() / (scale.double() * limit.double())
    closed = grad_w.double() * gain64 / torch.cosh(u) ** 2
    near = u.abs() <= 20
    assert ((dv.double() - closed).abs()[near] <= 1e-5 * closed.abs()[near]).all()
    # random signs: the sums may cancel, so bound the error by the sum of the terms' magnitudes
    signs = torch.randint(0, 2, v.shape, generator=gen).float() * 2 - 1
    (_, dg_r, dL_r), (_, dg64_r, dL64_r) = fused_and_float64_gradients(
        v, scale, gain, limit, grad_w * signs, implementation
    )
    assert ((dg_r.double() - dg64_r).abs() <= 1e-5 * dg64.abs()).all()
    assert ((dL_r.double() - dL64_r).abs() <= 1e-5 * dL64.abs()).all()


@pytest.mark.parametrize("implementation", TANH_IMPLEMENTATIONS)
@pytest.mark.parametrize("shape", [(1024, 1024), (3, 20000)], ids=["per-tensor", "per-channel"])
@pytest.mark.parametrize(("g", "L"), [(1.0, 10.0), (1.0, 0.5), (1.5, 2.0), (8.0, 10.0), (8.0, 0.5)])
def test_fused_tanh_hyperparameter_gradients_on_plain_weights(g, L, shape, implementation):
    """Weights of a real layer (randn * s) and an upstream gradient of both signs: each gradient is a
    sum that cancels, and it must still be within 1e-5 of float64 autograd, relatively. (Seed 0 at
    gain 1.5, limit 2 cancels the limit's sum to 1 % of its terms' root-sum-square, where float32
    terms, a few 1e-7 off each, would come to 1e-5 of the sum.)"""
    gen = torch.Generator().manual_seed(0)
    per_tensor = shape[0] == 1024
    scale, hyper = tensors(0.05, {"gain": g, "limit": L}, torch.float32, 1 if per_tensor else shape[0])
    v = torch.randn(shape, generator=gen) * scale
    for _ in range(2):
        grad_w = torch.randn(shape, generator=gen)
        (_, dg, dL), (_, dg64, dL64) = fused_and_float64_gradients(
            v, scale, hyper["gain"], hyper["limit"], grad_w, TANH_IMPLEMENTATIONS[implementation]
        )
        assert torch.allclose(dg.double(), dg64, rtol=1e-5, atol=0)
        assert torch.allclose(dL.double(), dL64, rtol=1e-5, atol=0)


def test_issue_12_example_is_odd_and_keeps_the_slope_near_zero():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 64)
    wc.compand(lin, "weight")
    s = lin.weight.detach().std()
    P = lin.parametrizations.weight[0]
    v = torch.linspace(-50, 50, 2001) * s
    assert same_bits(P(-v), -P(v))
    small = torch.tensor([1e-3, 1e-4, 1e-5, 1e-6, 1e-30]) * s
    assert ((P(small) / (1.5 * small) - 1).abs() <= 1e-6).all()  # 2 sigmoid(2u) - 1: 3 % off


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


# --- second derivatives, every kind and path (issue 21) ---------------------------------------

KINDS = wc.kinds()  # the library's own, whatever it registers (new kinds are covered as they come)
LAYOUTS = {"tensor": None, "rows": 0, "columns": 1}  # one set, per index of dim 0, per index of dim 1


def random_hyperparameters(kind: str, factors: list[float], dtype, shape=()) -> dict:
    """Valid values around each hyperparameter's default: lower + (default - lower) * factor."""
    specs = wc.get_kind(kind).hyperparameters.items()
    return {
        name: torch.full(shape, spec.lower + (spec.default - spec.lower) * f, dtype=dtype)
        for (name, spec), f in zip(specs, factors, strict=False)
    }


def second_order_inputs(kind, layout, magnitudes, factors, s, dtype, rows=3, cols=2):
    """v (|v| >= 0.05 s, where every kind is smooth), s and the hyperparameters in a layout."""
    axis = LAYOUTS[layout]
    shape = () if axis is None else tuple(n if d == axis else 1 for d, n in enumerate((rows, cols)))
    hyper = random_hyperparameters(kind, factors, dtype, shape)
    if axis is not None:  # a different value per channel
        ramp = torch.linspace(0.8, 1.25, rows if axis == 0 else cols, dtype=dtype).view(shape)
        hyper = {k: spec_lower(kind, k) + (h - spec_lower(kind, k)) * ramp for k, h in hyper.items()}
    v = torch.tensor(magnitudes, dtype=dtype)[: rows * cols].view(rows, cols) * s
    return v, torch.full(shape, s, dtype=dtype), hyper


def spec_lower(kind: str, name: str) -> float:
    return wc.get_kind(kind).hyperparameters[name].lower


magnitudes = st.lists(
    st.floats(0.05, 4.0).flatmap(lambda m: st.sampled_from([m, -m])), min_size=6, max_size=6
)
hyper_factors = st.lists(st.floats(0.6, 1.8), min_size=4, max_size=4)


@pytest.mark.parametrize("path", ["fused", "unfused"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", KINDS)
def test_second_derivatives_gradgradcheck_float64(kind, layout, path):
    """Double backward of ``w = s * phi(v / s)`` with respect to v, every hyperparameter and the
    upstream gradient, against finite differences (float64: the torch path of a fused kind)."""
    run = compand_path if path == "fused" else formula_path

    @settings(max_examples=5, deadline=None)
    @given(mags=magnitudes, fs=hyper_factors, s=st.floats(0.1, 3.0))
    def law(mags, fs, s):
        v, scale, hyper = second_order_inputs(kind, layout, mags, fs, s, D)
        names = list(hyper)

        def w(v, *h):
            return run(kind, v, scale, dict(zip(names, h, strict=True)))

        inputs = (v.requires_grad_(), *(h.requires_grad_() for h in hyper.values()))
        assert torch.autograd.gradgradcheck(w, inputs)

    law()


def float64_second_order(kind, v, scale, hyper, upstream, direction):
    """d/d(v, hyper) of <d<w, upstream>/d(v, hyper), direction>, by float64 autograd of the formula."""
    leaves = [x.detach().double().requires_grad_() for x in (v, *hyper.values())]
    names = list(hyper)
    w = formula_path(kind, leaves[0], scale.double(), dict(zip(names, leaves[1:], strict=True)))
    first = torch.autograd.grad((w * upstream.double()).sum(), leaves, create_graph=True)
    dot = sum((f * d.double()).sum() for f, d in zip(first, direction, strict=True))
    return [f.detach() for f in first], torch.autograd.grad(dot, leaves)


KERNEL_KINDS = {"tanh": "_TanhKernelBackward", **{k: "_OddKernelBackward" for k in cpu_kernel.ODD_KINDS}}


@pytest.mark.skipif(cpu_kernel.load() is None, reason="the C kernel cannot be built here")
@pytest.mark.parametrize("layout", ["tensor", "rows"])
@pytest.mark.parametrize("kind", KERNEL_KINDS)
def test_c_kernel_path_second_derivatives_match_float64(kind, layout):
    """The C kernel path (CPU float32) under create_graph=True: first and second derivatives within
    float32 precision of float64 autograd through the formula, for v and every hyperparameter."""

    @settings(max_examples=15, deadline=None)
    @given(mags=magnitudes, fs=hyper_factors, s=st.floats(0.01, 3.0), seed=st.integers(0, 2**16))
    def law(mags, fs, s, seed):
        v, scale, hyper = second_order_inputs(kind, layout, mags, fs, s, torch.float32)
        gen = torch.Generator().manual_seed(seed)
        upstream = torch.randn(v.shape, generator=gen)
        leaves = [x.clone().requires_grad_() for x in (v, *hyper.values())]
        direction = [torch.randn(x.shape, generator=gen) for x in leaves]
        w = compand_path(kind, leaves[0], scale, dict(zip(hyper, leaves[1:], strict=True)))
        assert type(w.grad_fn).__name__ == KERNEL_KINDS[kind]
        first = torch.autograd.grad((w * upstream).sum(), leaves, create_graph=True)
        dot = sum((f * d).sum() for f, d in zip(first, direction, strict=True))
        second = torch.autograd.grad(dot, leaves)
        want_first, want_second = float64_second_order(kind, v, scale, hyper, upstream, direction)
        for got, want in zip([*first, *second], [*want_first, *want_second], strict=True):
            assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())

    law()


# --- the paper's kinds on the C kernel path (CPU float32) ----------------------------------------

PAPER_HYPER = {"arctan": {"a": 1.3, "b": 0.6}, "asinh": {"a": 0.8, "b": 0.6}, "erf": {"a": 1.0, "b": 2.5},
               "powerprop": {"alpha": 1.7}}  # fmt: skip


@pytest.mark.skipif(cpu_kernel.load() is None, reason="the C kernel cannot be built here")
@pytest.mark.parametrize("rows", [1, 3], ids=["per-tensor", "per-channel"])
@pytest.mark.parametrize("kind", cpu_kernel.ODD_KINDS)
def test_paper_kinds_on_the_kernel_match_float64_autograd(kind, rows):
    """w within 1e-6, dLoss/dv within 1e-5 (elementwise), every hyperparameter gradient within 1e-5 of
    float64 autograd through the formula at the same float32 inputs: weights of a real layer plus
    1e-30 .. 1e3 in both signs, and an upstream gradient of both signs (the sums cancel)."""
    gen = torch.Generator().manual_seed(rows)
    v = torch.cat([torch.randn(rows, 3000, generator=gen), torch.logspace(-30, 3, 300).expand(rows, -1)], 1)
    v = torch.cat([v, -v, torch.zeros(rows, 1)], 1)
    scale = torch.tensor(0.7) if rows == 1 else torch.tensor([[0.7], [1.1], [2.0]])
    hyper = {k: x * (torch.tensor(1.0) if rows == 1 else torch.tensor([[1.0], [1.2], [0.9]]))
             for k, x in PAPER_HYPER[kind].items()}  # fmt: skip
    upstream = torch.randn(v.shape, generator=gen)
    leaves = [x.clone().requires_grad_() for x in (v, *hyper.values())]
    w = compand_path(kind, leaves[0], scale, dict(zip(hyper, leaves[1:], strict=True)))
    assert type(w.grad_fn).__name__ == "_OddKernelBackward"
    got = torch.autograd.grad((w * upstream).sum(), leaves)
    leaves64 = [x.detach().double().requires_grad_() for x in leaves]
    w64 = formula_path(kind, leaves64[0], scale.double(), dict(zip(hyper, leaves64[1:], strict=True)))
    want = torch.autograd.grad((w64 * upstream.double()).sum(), leaves64)
    normal = w64.abs() > 1e-30  # powerprop's |v|^alpha underflows float32 below (see above)
    assert ((w.double() - w64).abs()[normal] <= 1e-6 * w64.abs()[normal]).all()
    assert (w[~normal].abs() <= 1e-30).all() and same_bits(w[:, -1], torch.zeros(rows))
    assert ((got[0].double() - want[0]).abs() <= 1e-5 * want[0].abs() + 1e-30).all()
    for name, g, g64 in zip(hyper, got[1:], want[1:], strict=True):
        # the sum may cancel: bound its error by the sum of its terms' magnitudes
        magnitude = term_magnitudes(kind, name, leaves64, scale.double(), upstream.double(), list(hyper))
        assert ((g.double() - g64).abs() <= 1e-5 * magnitude).all(), name


def term_magnitudes(kind, name, leaves64, scale, upstream, names):
    """sum(|dLoss/dw * dw/dh|) for hyperparameter ``name`` (each of its values), in float64."""
    h = dict(zip(names, [x.detach() for x in leaves64[1:]], strict=True))
    expanded = h[name].expand(leaves64[0].shape).clone().requires_grad_()
    w = formula_path(kind, leaves64[0].detach(), scale, {**h, name: expanded})
    (partial,) = torch.autograd.grad(w, expanded, torch.ones_like(w))  # dw/dh, weight by weight
    return (upstream * partial).abs().sum_to_size(h[name].shape)


@pytest.mark.skipif(cpu_kernel.load() is None, reason="the C kernel cannot be built here")
@pytest.mark.parametrize("kind", cpu_kernel.ODD_KINDS)
def test_paper_kinds_vectorized_jacobian_on_the_kernel_path(kind):
    """Batched upstream gradients (legacy vmap) reach the kernel Function's backward: it must take
    them as torch operations and give the formula's Jacobian and Hessian."""
    v = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    s = torch.tensor(0.5)
    hyper = {k: torch.tensor(x) for k, x in PAPER_HYPER[kind].items()}
    assert type(compand_path(kind, v.requires_grad_(), s, hyper).grad_fn).__name__ == "_OddKernelBackward"
    functional = torch.autograd.functional

    def plain(x):
        return formula_path(kind, x, s.double(), {k: h.double() for k, h in hyper.items()})

    got = functional.jacobian(lambda x: compand_path(kind, x, s, hyper), v.detach(), vectorize=True)
    assert torch.allclose(got.double(), functional.jacobian(plain, v.detach().double()), rtol=1e-5, atol=1e-6)
    got = functional.hessian(lambda x: compand_path(kind, x, s, hyper).sum(), v.detach(), vectorize=True)
    want = functional.hessian(lambda x: plain(x).sum(), v.detach().double())
    assert torch.allclose(got.double(), want, rtol=1e-4, atol=1e-5)
