"""A fused forward/backward for the tanh compander, exact to float32's precision.

Autograd through ``s*L*tanh(g*v/(s*L))`` allocates a temporary for every operator, forward and
backward, and reduces the hyperparameter gradients elementwise; on a weight-heavy model (an MLP
with 1.8 M weights and little compute per weight) that doubled the training step. Here one
``autograd.Function`` computes ``w`` and the analytic backward, and keeps the laws docs/speed.md
promises exactly: odd to the last bit, and within float32's relative precision of float64 from
``|v| = 1e-30*s`` to ``1e3*s`` (the ``2*sigmoid(2u) - 1`` used before was 3 % off at ``1e-6*s``).

* CPU, float32, contiguous (training on CPU): the C kernel of ``cpu_kernel.py``, one pass over
  the weights forward and one backward.
* Anything else (CUDA, float64, a machine without a C compiler, ``torch.compile`` tracing,
  ``torch.func`` transforms): the same function as torch operations. It works on ``a = |u|`` and
  copies the sign of ``v`` back (odd by construction), ``tanh(a) = -expm1(-2a) * (1 - q)`` with
  ``q = sigmoid(-2a)`` has no cancellation, and ``dw/dv = 4g * q(1 - q)`` reuses ``q``.

Scale and hyperparameters are one value each or one per index of dim 0 (``Kind.compand`` moves
output channels on another axis, as ConvTranspose and transformers' Conv1D keep them, to dim 0).

Second derivatives: the fast backwards above are not differentiable (the C kernel; a saved ``q``
without history). Where autograd will differentiate the backward (``create_graph=True``, which
Hessian-vector products use, and every ``torch.func`` transform), both Functions run
``_differentiable_backward`` instead: the same analytic derivatives as torch operations of the
inputs, so autograd's derivative of it is the exact second derivative. ``_TanhTorch`` has
``setup_context`` and a generated vmap rule, so ``torch.func.grad``, ``vmap`` and ``jacrev`` work.

The paper's kinds (arctan, asinh, erf: ``w = s a phi(v / (s b))``; powerprop) have a kernel path
too (``fused_odd``): ``phi`` in double from the float32 ``v``, one rounding, the sign copied back,
and learnable hyperparameters' gradients as per-row float64 sums from the same backward pass.
Wherever the kernel does not run, they compute their formula, as they did before they had one.

Both give the hyperparameter gradients as one sum each over the weights (per tensor or per
output channel), of float64 terms in float64:

    dLoss/dg = sum(dLoss/dw * v * sech^2(u))
    dLoss/dL = sum(dLoss/dw * s * (tanh(u) - u * sech^2(u)))

Such a sum adds a million terms of both signs and may cancel to 1 % of its terms'
root-sum-square; float32 terms carry a few 1e-7 of error each, which that cancellation makes
1e-5 of the sum. The earlier float32 ``<dLoss/dv, v> / g`` and ``(<dLoss/dw, w> - <dLoss/dv, v>) / L``
were 6e-5 to 9e-5 off float64 on a random 1024x1024 weight (``benchmarks/precision.py``).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import torch
from torch import Tensor

from . import cpu_kernel


class _TanhTorch(torch.autograd.Function):
    # forward, setup_context and backward are torch operations, so torch.func may vmap them
    generate_vmap_rule = True

    @staticmethod
    def forward(v: Tensor, scale: Tensor, gain: Tensor, limit: Tensor) -> tuple[Tensor, Tensor]:
        bound = scale * limit
        # in place where it saves memory traffic; under torch.func out of place where vmap could
        # batch one operand alone (then an in-place result cannot hold it) or has no rule (addcmul_)
        batchable = _functorch_active()
        y, k = torch.abs(v), -2 * gain / bound
        y = y * k if batchable else y.mul_(k)  # -2|u|, even in v by construction
        q = torch.sigmoid(y)  # sigmoid(-2|u|) in (0, 1/2]
        w = y.expm1_()  # expm1(-2|u|) in (-1, 0], exact near 0
        w = torch.addcmul(w, w, q, value=-1.0) if batchable else w.addcmul_(w, q, value=-1.0)  # -tanh|u|
        w.mul_(-bound).copysign_(v)  # s*L*tanh|u| with the sign of v: odd to the last bit
        return w, q

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        v, scale, gain, limit = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)  # no zero tensor for q's (absent) gradient
        ctx.save_for_backward(v, output[1], scale, gain, limit)

    @staticmethod
    def backward(ctx, grad_w: Tensor | None, _grad_q: None):
        v, q, scale, gain, limit = ctx.saved_tensors
        if grad_w is None:
            return None, None, None, None
        if _differentiating_backward(grad_w):
            return _differentiable_backward(ctx.needs_input_grad, grad_w, v, scale, gain, limit)
        grad_v = torch.addcmul(q, q, q, value=-1.0).mul_(4 * gain).mul_(grad_w)  # dw/dv = 4g q(1 - q)
        grad_gain = grad_limit = None
        if ctx.needs_input_grad[2] or ctx.needs_input_grad[3]:
            grad_gain, grad_limit = _hyperparameter_gradients(grad_w, v, scale, gain, limit)
        return grad_v, None, grad_gain, grad_limit


def _differentiating_backward(grad_w: Tensor) -> bool:
    """Whether this backward must be torch operations of its inputs: autograd will differentiate
    it (``create_graph=True``, or a torch.func transform, which always builds the graph), or vmap
    batches the upstream gradient (``is_grads_batched``, ``autograd.functional.jacobian``)."""
    functorch = torch._C._functorch
    batched = functorch.is_functorch_wrapped_tensor(grad_w) or functorch.is_legacy_batchedtensor(grad_w)
    return torch.is_grad_enabled() or _functorch_active() or batched


def _differentiable_backward(
    needs_input_grad, grad_w: Tensor, v: Tensor, scale: Tensor, gain: Tensor, limit: Tensor
):
    """The backward as differentiable torch operations, for second derivatives and torch.func.

    The same analytic derivatives and float64 arithmetic as the fast backward (whole-tensor float64
    temporaries instead of chunks or the C kernel), so autograd differentiates them once more:
    d^2 w / dv^2, the mixed hyperparameter terms and the dependence on the upstream gradient.
    Scale and hyperparameters may broadcast along any axis; the sums reduce to their shapes.
    """
    s, g, limit64 = scale.double(), gain.double(), limit.double()
    v64, grad64 = v.double(), grad_w.double()
    a = torch.abs(v64 * (g / (s * limit64)))
    e = torch.exp(-2 * a)
    r = 1 / (1 + e)
    sech2 = 4 * e * r * r
    grad_v = (grad64 * g * sech2).to(v.dtype) if needs_input_grad[0] else None
    grad_gain = grad_limit = None
    if needs_input_grad[2]:
        grad_gain = _sum_to(grad64 * v64 * sech2, gain)
    if needs_input_grad[3]:  # dw/dL = s (tanh(a) - a sech^2(a)) sign(v)
        grad_limit = _sum_to(grad64 * (s * ((1 - e) * r - a * sech2)).copysign(v64), limit)
    return grad_v, None, grad_gain, grad_limit


def _sum_to(terms: Tensor, like: Tensor) -> Tensor:
    """Elementwise gradient terms summed to a (broadcasting) hyperparameter's shape and dtype."""
    return terms.sum_to_size(like.shape).to(like.dtype)


_ONE_ROW = ctypes.c_double * 4
_CHUNK = 1 << 16  # elements per float64 work chunk: small enough to stay in cache


def _hyperparameter_gradients(grad_w: Tensor, v: Tensor, scale: Tensor, gain: Tensor, limit: Tensor):
    """dLoss/dg and dLoss/dL, summed in float64 from float64 terms (see the module docstring).

    dw/dg = v sech^2(u) and dw/dL = s (tanh(a) - a sech^2(a)) sign(v), both from one exp:
    e = exp(-2a), sech^2 = 4e / (1 + e)^2, tanh(a) = (1 - e) / (1 + e); in float64 the
    subtraction's cancellation as a -> 0 (it is 2a^3/3) costs nothing a float32 sum shows. The
    work goes in cache-sized chunks: whole-tensor float64 temporaries were 5x slower on CPU.
    """
    rows = _rows(v, scale, gain, limit)
    v_rows, grad_rows = v.reshape(rows, -1), grad_w.reshape(rows, -1)
    k = _per_row(gain / (scale * limit), rows).view(rows, 1)
    s = _per_row(scale, rows).view(rows, 1)
    sums = torch.zeros(rows, 2, dtype=torch.float64, device=v.device)
    width = max(1, _CHUNK // rows)
    for start in range(0, v_rows.shape[1], width):
        v64 = v_rows[:, start : start + width].double()
        grad64 = grad_rows[:, start : start + width].double()
        a = torch.abs(v64).mul_(k)
        e = torch.mul(a, -2.0).exp_()
        r = torch.add(e, 1.0).reciprocal_()
        sech2 = torch.mul(e, 4.0).mul_(r).mul_(r)
        sums[:, 0] += torch.mul(grad64, v64).mul_(sech2).sum(dim=1)
        limit_part = e.neg_().add_(1.0).mul_(r).sub_(a.mul_(sech2))  # tanh(a) - a sech^2(a)
        sums[:, 1] += limit_part.mul_(s).copysign_(v64).mul_(grad64).sum(dim=1)
    return _per_hyper(sums[:, 0], gain), _per_hyper(sums[:, 1], limit)


class _TanhKernel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v: Tensor, scale: Tensor, gain: Tensor, limit: Tensor, kernel) -> Tensor:
        params = _kernel_params(v, scale, gain, limit)
        ctx.kernel, ctx.params = kernel, params
        ctx.save_for_backward(v, scale, gain, limit)
        return kernel.forward(v, params)

    @staticmethod
    def backward(ctx, grad_w: Tensor):
        v, scale, gain, limit = ctx.saved_tensors
        if _differentiating_backward(grad_w):
            return (*_differentiable_backward(ctx.needs_input_grad, grad_w, v, scale, gain, limit), None)
        want_gain, want_limit = ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        if not (want_gain or want_limit):
            return ctx.kernel.backward(grad_w.contiguous(), v, ctx.params), None, None, None, None
        grad_v, sums = ctx.kernel.backward_sums(grad_w.contiguous(), v, ctx.params)
        grad_gain = _per_hyper(sums[:, 0], gain) if want_gain else None
        grad_limit = _per_hyper(sums[:, 1], limit) if want_limit else None
        return grad_v, None, grad_gain, grad_limit, None


# --- the paper's kinds: w = s a phi(v / (s b)) (arctan, asinh, erf) and powerprop -------------------


class _OddKernel(torch.autograd.Function):
    """A paper kind through the C kernel: ``w = c phi(k v)`` forward, dLoss/dv (with learnable
    hyperparameters also their float64 sums) backward, one pass each. ``formula`` is the kind's
    ``phi(x, **hyper)`` on unit scale, for the differentiable backward."""

    @staticmethod
    def forward(ctx, v: Tensor, scale: Tensor, kernel, kind: str, formula, names: tuple, *hyper: Tensor):
        ctx.kernel, ctx.kind, ctx.formula, ctx.names = kernel, kind, formula, names
        ctx.params = _odd_params(kind, v, scale, dict(zip(names, hyper, strict=True)))
        ctx.save_for_backward(v, scale, *hyper)
        return kernel.odd(kind, v, ctx.params)

    @staticmethod
    def backward(ctx, grad_w: Tensor):
        v, scale, *hyper = ctx.saved_tensors
        rest = (None,) * 4  # kernel, kind, formula, names
        want = ctx.needs_input_grad[6:]
        if _differentiating_backward(grad_w):
            grad_v, *grads = _differentiable_odd_backward(ctx, grad_w, v, scale, hyper)
            return grad_v, None, *rest, *grads
        if not any(want):
            grad_v = ctx.kernel.odd(ctx.kind, v, ctx.params, grad_w.contiguous())
            return grad_v, None, *rest, *(None for _ in hyper)
        grad_v, sums = ctx.kernel.odd(ctx.kind, v, ctx.params, grad_w.contiguous(), sums=True)
        grads = _odd_hyper_gradients(ctx.kind, sums, scale, dict(zip(ctx.names, hyper, strict=True)))
        return grad_v, None, *rest, *(g if w else None for g, w in zip(grads, want, strict=True))


def _odd_params(kind: str, v: Tensor, scale: Tensor, hyper: dict[str, Tensor]) -> cpu_kernel.Params:
    """Each row's k, c and alpha (``w = c phi(k v)``) in float64, for the C kernel."""
    rows = _rows(v, scale, *hyper.values())
    if kind == "powerprop":  # w = s sign(v / s) |v / s|^alpha
        parts = [scale, hyper["alpha"]]
        values = lambda s, alpha: (1 / s, s, alpha)  # noqa: E731
    else:  # w = s a phi(v / (s b))
        parts = [scale, hyper["a"], hyper["b"]]
        values = lambda s, a, b: (1 / (s * b), s * a, 0.0 * s)  # noqa: E731
    if rows == 1:
        return _ONE_ROW(*values(*(x.item() for x in parts)), 0.0)
    k, c, alpha = values(*(_per_row(x, rows) for x in parts))
    return torch.stack([k, c, alpha, torch.zeros_like(k)], dim=1)


def _odd_hyper_gradients(kind: str, sums: Tensor, scale: Tensor, hyper: dict[str, Tensor]) -> list[Tensor]:
    """dLoss/dh for each hyperparameter (in ``hyper``'s order) from the kernel's per-row float64 sums:
    dw/da = s phi(u), dw/db = -(s a / b) u phi'(u), dw/dalpha = s sign(u) |u|^alpha ln|u| (u = k v)."""
    rows = sums.shape[0]
    s = _per_row(scale, rows)
    if kind == "powerprop":
        return [_per_hyper(s * sums[:, 0], hyper["alpha"])]
    a, b = _per_row(hyper["a"], rows), _per_row(hyper["b"], rows)
    return [_per_hyper(s * sums[:, 0], hyper["a"]), _per_hyper(-(s * a / b) * sums[:, 1], hyper["b"])]


def _differentiable_odd_backward(ctx, grad_w: Tensor, v: Tensor, scale: Tensor, hyper: list[Tensor]):
    """The backward as differentiable torch operations (second derivatives, batched gradients).

    The formula's elementwise partial derivatives come from autograd with ``create_graph``, against
    each hyperparameter expanded to ``v``'s shape (w at one index depends on v and the hyperparameters
    at that index only); times the upstream gradient, summed to each hyperparameter's shape. All in
    float64, like the tanh's: a float32 formula's second derivative summed over many weights may
    cancel to 1e-4 of float64.
    """
    needs = [ctx.needs_input_grad[0], *ctx.needs_input_grad[6:]]
    with torch.enable_grad():
        leaves = [x if x.requires_grad else x.detach().requires_grad_() for x in (v, *hyper)]
        expanded = [leaves[0].double(), *(h.double().expand(v.shape) for h in leaves[1:])]
        s = scale.double()
        w = s * ctx.formula(expanded[0] / s, **dict(zip(ctx.names, expanded[1:], strict=True)))
        targets = [x for x, need in zip(expanded, needs, strict=True) if need]
        partials = iter(torch.autograd.grad(w, targets, torch.ones_like(w), create_graph=True))
    grads = [grad_w.double() * next(partials) if need else None for need in needs]
    sums = (g if g is None else _sum_to(g, h) for g, h in zip(grads[1:], hyper, strict=True))
    return [grads[0] if grads[0] is None else grads[0].to(v.dtype), *sums]


def fused_odd(kind: str, formula: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """The fast path of a paper kind (``cpu_kernel.ODD_KINDS``) whose unit-scale function is
    ``formula(x, **hyper)``: the C kernel on CPU float32 (see ``fused_tanh`` for when), else the
    formula ``s * formula(v / s)`` itself, as the kind without a fast path computes it."""

    def fused(v: Tensor, scale: Tensor, **hyper: Tensor) -> Tensor:
        kernel = _kernel_for(v, scale, *hyper.values())
        if kernel is None:
            return scale * formula(v / scale, **hyper)
        return _OddKernel.apply(v, scale, kernel, kind, formula, tuple(hyper), *hyper.values())

    fused.__name__ = f"fused_{kind}"
    return fused


def _kernel_params(v: Tensor, scale: Tensor, gain: Tensor, limit: Tensor) -> cpu_kernel.Params:
    """Each row's s, g, L and k = g / (s L) in float64, for the C kernel (see ``TanhKernel``)."""
    rows = _rows(v, scale, gain, limit)
    if rows == 1:  # Python floats: a few microseconds less per call than tensor operations
        s, g, L = scale.item(), gain.item(), limit.item()
        return _ONE_ROW(s, g, L, g / (s * L))
    s, g, L = (_per_row(x, rows) for x in (scale, gain, limit))
    return torch.stack([s, g, L, g / (s * L)], dim=1)


def _rows(v: Tensor, *hyper: Tensor) -> int:
    """1 if every hyperparameter (and the scale) is one value, else one row per index of dim 0."""
    rows = 1
    for h in hyper:
        if h.numel() > 1:
            if channel_axis(v, h) != 0:
                raise ValueError(
                    f"fused_tanh takes s and hyperparameters of one value or one per index of dim 0 of "
                    f"v {tuple(v.shape)}; got shape {tuple(h.shape)}. Kind.compand moves other channel "
                    "axes to dim 0 first."
                )
            rows = v.shape[0]
    return rows


def channel_axis(v: Tensor, *params: Tensor) -> int | None:
    """The one axis of ``v`` along which the (broadcasting) params vary: 0 if none varies, None if
    several do or a size differs from ``v``'s (no fused path handles those)."""
    if all(p.dim() == 0 for p in params):
        return 0
    axes = set()
    for p in params:
        shape = (1,) * (v.dim() - p.dim()) + tuple(p.shape)
        varying = [d for d, n in enumerate(shape) if n != 1]
        if len(shape) != v.dim() or any(shape[d] != v.shape[d] for d in varying):
            return None
        axes.update(varying)
    return axes.pop() if len(axes) == 1 else (0 if not axes else None)


def _per_row(x: Tensor, rows: int) -> Tensor:
    """A scalar or per-row hyperparameter as ``rows`` contiguous float64 values, for the kernel."""
    return x.detach().reshape(-1).to(torch.float64).expand(rows).contiguous()


def _per_hyper(row_sums: Tensor, like: Tensor) -> Tensor:
    """Per-row sums reduced to the hyperparameter's shape (one value, or one per row)."""
    if like.numel() > 1:
        return row_sums.view(like.shape).to(like.dtype)
    return (row_sums.sum() if row_sums.numel() > 1 else row_sums).reshape(like.shape).to(like.dtype)


def _kernel_for(v: Tensor, *hyper: Tensor):
    """The CPU kernel if it can run this call, else None (the torch path)."""
    if not (v.device.type == "cpu" and v.dtype == torch.float32 and v.is_contiguous() and v.numel()):
        return None
    if any(h.device.type != "cpu" or not h.is_floating_point() for h in hyper):
        return None
    if _compiling():  # let torch.compile trace (and fuse) the torch path instead
        return None
    # Tracers and exporters record torch operations; the kernel writes its output outside
    # torch's view, so they would record an empty tensor (zero weights in an ONNX file).
    # Tensor subclasses (fake tensors, DTensor, ...) have no plain memory for the kernel either.
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return None
    if type(v) not in (Tensor, torch.nn.Parameter):
        return None
    if _functorch_active():  # torch.func wraps tensors (no data pointer) and needs vmap rules
        return None
    return cpu_kernel.load()


def _compiling() -> bool:
    is_compiling = getattr(torch.compiler, "is_compiling", None)  # torch >= 2.3
    return bool(is_compiling and is_compiling())


def _functorch_active() -> bool:
    """Whether a torch.func transform (grad, vmap, jacrev, ...) is running."""
    return torch._C._are_functorch_transforms_active()


def fused_tanh(v: Tensor, scale: Tensor, gain: Tensor, limit: Tensor) -> Tensor:
    """``s * L * tanh(g * v / (s * L))`` with an analytic backward, exactly odd and float32-exact.

    ``scale``, ``gain`` and ``limit`` are one value each or one per index of dim 0 of ``v``.
    Second derivatives (``create_graph=True``) and torch.func transforms work on every path.
    """
    kernel = _kernel_for(v, scale, gain, limit)
    if kernel is None:
        return fused_tanh_torch(v, scale, gain, limit)
    return _TanhKernel.apply(v, scale, gain, limit, kernel)


def fused_tanh_torch(v: Tensor, scale: Tensor, gain: Tensor, limit: Tensor) -> Tensor:
    """The same function as ``fused_tanh``, always as torch operations (benchmarks, tests)."""
    _rows(v, scale, gain, limit)  # the same shape contract as the kernel path
    return _TanhTorch.apply(v, scale, gain, limit)[0]
