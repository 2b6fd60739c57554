"""Second derivatives and torch.func on companded models: Hessian-vector products, per-sample
gradients (vmap of grad) and Jacobians agree with the same model written as the plain formula."""

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

import weight_compander as wc
from weight_compander import cpu_kernel

KINDS = wc.kinds()  # the library's own kinds, new ones included as they come


def formula_kind(kind: str) -> str:
    """The same compander without its fused path: plain autograd through ``s * phi(v / s)``."""
    spec = wc.get_kind(kind)
    name = f"test-formula-{kind}"
    wc.register_kind(name, spec.forward, spec.inverse, spec.hyperparameters, bound=spec.bound, replace=True)
    return name


def twin_models(kind: str, dtype: torch.dtype, **options) -> tuple[nn.Module, nn.Module]:
    """A small companded model (linear, conv, transposed conv: channels on axes 0 and 1) and its twin
    with the formula kind, with identical raw weights and hyperparameters."""
    torch.manual_seed(0)
    layers = [nn.Conv2d(2, 3, 3), nn.Tanh(), nn.ConvTranspose2d(3, 4, 2), nn.Tanh(), nn.Flatten()]
    plain = nn.Sequential(*layers, nn.Linear(4 * 5 * 5, 3)).to(dtype)
    model, reference = plain, copy.deepcopy(plain)
    wc.apply(model, kind=kind, learnable=True, **options)
    wc.apply(reference, kind=formula_kind(kind), learnable=True, **options)
    reference.load_state_dict(model.state_dict())
    return model, reference


def loss_of(model: nn.Module, params: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(functional_call(model, params, (x,)), y)


def data(dtype, n=4):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 2, 6, 6, generator=gen, dtype=dtype), torch.randint(0, 3, (n,), generator=gen)


def hvp(model: nn.Module, x, y, direction: list[torch.Tensor]) -> list[torch.Tensor]:
    params = list(model.parameters())
    first = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), params, create_graph=True)
    return torch.autograd.grad(sum((f * d).sum() for f, d in zip(first, direction, strict=True)), params)


OPTIONS = {"per-tensor": {}, "per-channel": {"per_channel": True, "scale": "channel"}}


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_hessian_vector_product_matches_the_formula_float64(kind, options):
    """Raw weights and learnable hyperparameters together, on the torch path (float64)."""
    model, reference = twin_models(kind, torch.float64, **OPTIONS[options])
    x, y = data(torch.float64)
    gen = torch.Generator().manual_seed(2)
    direction = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in model.parameters()]
    for got, want in zip(hvp(model, x, y, direction), hvp(reference, x, y, direction), strict=True):
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.skipif(cpu_kernel.load() is None, reason="the C kernel cannot be built here")
@pytest.mark.parametrize("options", OPTIONS)
def test_hessian_vector_product_on_the_c_kernel_path_matches_float64(options):
    """CPU float32 runs the C kernel forward; its backward under create_graph=True must give the
    Hessian-vector product of the formula (float64 reference, float32 tolerance)."""
    model, _ = twin_models("tanh", torch.float32, **OPTIONS[options])
    _, reference = twin_models("tanh", torch.float64, **OPTIONS[options])
    reference.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    x, y = data(torch.float32)
    assert type(model[0].weight.grad_fn).__name__ == "_TanhKernelBackward"
    gen = torch.Generator().manual_seed(2)
    direction = [torch.randn(p.shape, generator=gen) for p in model.parameters()]
    got = hvp(model, x, y, direction)
    want = hvp(reference, x.double(), y, [d.double() for d in direction])
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g.double(), w, rtol=1e-4, atol=1e-5 * w.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("kind", KINDS)
def test_torch_func_grad_vmap_and_jacrev_match_the_formula(kind, dtype):
    """torch.func.grad (parameters), vmap of grad (per-sample gradients, as Opacus computes them) and
    jacrev (outputs by parameters) on a companded model, against the same model as the formula."""
    model, reference = twin_models(kind, dtype, per_channel=True)
    x, y = data(dtype)
    params = {k: p.detach() for k, p in model.named_parameters()}
    tol = {"rtol": 1e-4, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-9, "atol": 1e-12}

    def per_sample(m):
        def one(p, xi, yi):
            return loss_of(m, p, xi[None], yi[None])

        return vmap(grad(one), in_dims=(None, 0, 0))(params, x, y)

    results = [grad(lambda p, m=m: loss_of(m, p, x, y))(params) for m in (model, reference)]
    results += [per_sample(m) for m in (model, reference)]
    results += [jacrev(lambda p, m=m: functional_call(m, p, (x,)))(params) for m in (model, reference)]
    for got, want in zip(results[::2], results[1::2], strict=True):
        for name in params:
            assert torch.allclose(got[name], want[name], **tol), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32-kernel", "float64-torch"])
def test_vectorized_jacobian_and_hessian_match_the_formula(dtype):
    """torch.autograd.functional with vectorize=True batches the upstream gradient (legacy vmap):
    the backward must take it as torch operations, not hand it to the C kernel."""
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(4, 3, generator=gen, dtype=dtype)
    s, g, L = (torch.tensor(x, dtype=dtype) for x in (0.5, 1.5, 2.0))
    spec, formula = wc.get_kind("tanh"), wc.get_kind(formula_kind("tanh"))

    def companded(v):
        return spec.compand(v, s, {"gain": g, "limit": L})

    def plain(v):
        return formula.compand(v.double(), s.double(), {"gain": g.double(), "limit": L.double()})

    functional = torch.autograd.functional
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}
    got = functional.jacobian(companded, v, vectorize=True)
    assert torch.allclose(got.double(), functional.jacobian(plain, v.double()), **tol)
    got = functional.hessian(lambda v: companded(v).sum(), v, vectorize=True)
    assert torch.allclose(got.double(), functional.hessian(lambda v: plain(v).sum(), v.double()), **tol)
