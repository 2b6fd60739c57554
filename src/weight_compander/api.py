"""compand / apply / remove: put weight companding on a model and take it off again.

Every check runs before anything is registered, so a bad call leaves the model exactly as it
was; ``apply`` also undoes its own registrations if one of them fails part-way.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from . import defaults, frameworks, registration
from .coverage import Applied, coverage
from .exceptions import CompanderWarning
from .functions import Kind, get_kind
from .layer_types import output_axis
from .overflow import POLICIES, Overflow, fit_bound
from .overflow import message as overflow_message
from .parametrization import Compander, SharedCompander
from .selection import Target, companded_entries, has_tensor, select_targets, tied_holders

__all__ = ["apply", "compand", "remove"]

Include = Iterable[type[nn.Module] | str] | type[nn.Module] | str | None


@dataclass
class _Plan:
    target: Target
    compander: Compander
    tied: list[Target]
    overflow: Overflow | None


def compand(
    module: nn.Module,
    name: str = "weight",
    *,
    kind: str | Kind = defaults.DEFAULT_KIND,
    learnable: bool | Collection[str] = defaults.DEFAULT_LEARNABLE,
    scale: str | float = defaults.DEFAULT_SCALE,
    per_channel: bool = False,
    overflow: str = defaults.DEFAULT_OVERFLOW,
    **hyperparameters: float,
) -> nn.Module:
    r"""Compand one tensor: the module computes with ``w = s * phi(v / s)``, the optimizer trains ``v``.

    For ``kind="tanh"``: :math:`w = s L \tanh(g v / (s L))` -- slope ``g`` at zero pushes small
    weights out, ``|w| < s L`` bounds large ones. Registering sets ``v = f^{-1}(w)``, so the
    module's outputs do not change.

    Args:
        module: the module holding the tensor.
        name: the tensor's attribute name. Default: ``"weight"``.
        kind: a registered kind (``wc.kinds()``): ``"tanh"``, ``"mulaw"``, ``"identity"``.
        learnable: ``True`` to learn all hyperparameters, ``False`` to fix them, or the names of
            those to learn (e.g. ``("limit",)``). A frozen tensor (``requires_grad=False``, such as
            a base weight under PEFT's LoRA) gets them with ``requires_grad=False`` as well.
        scale: ``s``: ``"std"`` (the tensor's std now), ``"channel"`` (std per output channel)
            or a positive number. Hyperparameters are in units of ``s``.
        per_channel: one set of hyperparameters per output channel instead of one. Output
            channels lie along the axis registered for the layer type (``wc.register_layer``):
            dim 0 for Linear and Conv, dim 1 for ConvTranspose and transformers' ``Conv1D``.
        overflow: for bounded kinds, what to do with weights at or beyond the bound:
            ``"expand"`` raises the limit to cover them (outputs unchanged), ``"clip"`` clips
            them to the bound, ``"error"`` raises. Either way a warning says how many.
        **hyperparameters: the kind's hyperparameters, e.g. ``gain=2.0, limit=3.0``.

    Returns:
        the module.

    Example::

        >>> import torch.nn as nn, weight_compander as wc
        >>> layer = wc.compand(nn.Linear(20, 40), gain=2.0, limit=3.0)
        >>> layer.parametrizations.weight[0]
        Compander(kind=tanh, scale=0.1294, gain=2, limit=3)
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"compand needs an nn.Module; got {type(module).__name__}.")
    if not isinstance(name, str) or not has_tensor(module, name):
        names = [n for n, _ in module.named_parameters(recurse=False)]
        raise ValueError(
            f"{type(module).__name__} has no tensor {name!r}; its parameters are: "
            f"{', '.join(names) or '(none)'}."
        )
    plan = _plan(
        Target(name, module, name), None, kind, learnable, scale, per_channel, overflow, hyperparameters
    )
    _register(plan)
    if plan.overflow:
        warnings.warn(overflow_message([plan.overflow]), CompanderWarning, stacklevel=2)
    return module


def apply(
    model: nn.Module,
    include: Include = None,
    exclude: Include = None,
    *,
    kind: str | Kind = defaults.DEFAULT_KIND,
    learnable: bool | Collection[str] = defaults.DEFAULT_LEARNABLE,
    scale: str | float = defaults.DEFAULT_SCALE,
    per_channel: bool = False,
    overflow: str = defaults.DEFAULT_OVERFLOW,
    share_hyperparameters: bool = False,
    **hyperparameters: float,
) -> list[str]:
    """Compand many tensors of a model at once (the one-line drop-in).

    Args:
        model: any ``nn.Module``.
        include: what to compand: module types (their weights; ``nn.MultiheadAttention`` means
            ``in_proj_weight``, RNNs their ``weight_*``), module names (``"fc"``) or tensor names
            (``"fc.weight"``, wildcards allowed: ``"encoder.*.weight"``). Default: the
            ``weight`` of every default layer type of the registry (``wc.layers()``): Linear,
            Conv1d/2d/3d, ConvTranspose1d/2d/3d and transformers' ``Conv1D``.
        exclude: the same kinds of entries, taken out of ``include``.
        kind, learnable, scale, per_channel, overflow, **hyperparameters: as in ``compand``.
        share_hyperparameters: ``True`` gives every companded tensor the *same* learnable
            hyperparameter Parameters (the paper's "coarse" version: one ``(a, b)`` pair for
            the network, one gradient summed over all tensors, one entry in the optimizer);
            ``False`` (the paper's "fine"): one set per tensor. Fixed hyperparameters are the
            same values either way.

    Returns:
        the names of the companded tensors, e.g. ``["features.0.weight", "fc.weight"]`` (a list),
        with ``.coverage``: the share of the model's weight-matrix parameters they make up and
        the largest tensors left out (``print(names.coverage)``). A tensor tied to others (one
        Parameter in several modules) is companded once, under its first name, and all holders
        keep computing with the same ``f(v)``. Values beyond a bound are reported in one
        ``CompanderWarning`` for all tensors; so is a default selection that compands less
        than half of the weight-matrix parameters, or leaves a tenth of them out in modules
        of no registered layer type (a layer type missing from the registry).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"apply needs an nn.Module; got {type(model).__name__}.")
    frameworks.prepare(model)  # e.g. transformers' fused mixture-of-experts layers
    plans: list[_Plan] = []
    seen: set[int] = set()
    for target in select_targets(model, include, exclude):
        tensor = _tensor(target)
        # A tied Parameter once; a parametrized tensor (weight_norm) is computed anew on every
        # access, so its id can be a recycled one: tell it by its parametrization list instead.
        key = id(_stored(target))
        if key in seen:
            continue
        seen.add(key)
        holders = tied_holders(model, tensor) if isinstance(tensor, nn.Parameter) else []
        tied = [h for h in holders if h.module is not target.module or h.tensor_name != target.tensor_name]
        plans.append(_plan(target, tied, kind, learnable, scale, per_channel, overflow, hyperparameters))
    if share_hyperparameters:
        _share_hyperparameters(plans, per_channel)
    started: list[tuple[_Plan, Tensor]] = []
    try:
        for plan in plans:
            started.append((plan, _tensor(plan.target).detach().clone()))
            _register(plan)
    except Exception:
        for plan, original in reversed(started):  # leave the model exactly as it was
            _unregister(plan, original)
        raise
    frameworks.attach(model)
    overflows = [plan.overflow for plan in plans if plan.overflow]
    if overflows:
        warnings.warn(overflow_message(overflows, len(plans)), CompanderWarning, stacklevel=2)
    names = Applied(plan.target.name for plan in plans)
    names.coverage = coverage(model)
    if include is None and names.coverage.suspicious:
        warnings.warn(
            f"{names.coverage}. Add what should be companded with include=[...], or register "
            "a layer type once with wc.register_layer(LayerType, 'weight', output_axis=...).",
            CompanderWarning,
            stacklevel=2,
        )
    return names


def remove(model: nn.Module, bake: bool = True) -> nn.Module:
    """Take companding off every tensor of the model.

    Args:
        model: a model with companded tensors.
        bake: ``True`` leaves ordinary Parameters holding ``f(v)`` (identical outputs, no
            overhead; other parametrizations of the same tensor, such as ``weight_norm``, are
            baked in too). ``False`` leaves the raw ``v`` (other parametrizations stay).

    Returns:
        the model, with the same Parameter objects (an optimizer holding them keeps working).

    Raises:
        ValueError: when nothing in the model is companded (as
            ``torch.nn.utils.parametrize.remove_parametrizations`` does).
    """
    entries = companded_entries(model)
    if not entries:
        raise ValueError("nothing in this model is companded, so there is nothing to remove.")
    registration.remove_entries(entries, bake)
    frameworks.detach(model)
    return model


# --- planning: all checks, no side effects ----------------------------------------------------


def _tensor(target: Target) -> Tensor:
    return getattr(target.module, target.tensor_name)


def _stored(target: Target) -> object:
    """What holds the tensor for as long as it lives: its Parameter, or its parametrization list."""
    if parametrize.is_parametrized(target.module, target.tensor_name):
        return target.module.parametrizations[target.tensor_name]
    return _tensor(target)


def _frozen(target: Target) -> bool:
    """The tensor does not train (``requires_grad=False``), e.g. a base weight under PEFT's LoRA."""
    stored = _stored(target)
    if isinstance(stored, Tensor):
        return not stored.requires_grad
    return not any(p.requires_grad for n, p in stored.named_parameters() if n.startswith("original"))


def _plan(target, tied, kind, learnable, scale, per_channel, overflow, hyper) -> _Plan:
    where = f"{target.name!r} ({type(target.module).__name__})"
    if parametrize.is_parametrized(target.module, target.tensor_name) and any(
        isinstance(p, Compander | SharedCompander) for p in target.module.parametrizations[target.tensor_name]
    ):
        raise ValueError(f"{where} is already companded; call wc.remove(model) first to re-compand it.")
    frozen = _frozen(target)
    with torch.no_grad():
        w = _tensor(target).detach()
    if not w.is_floating_point():
        raise TypeError(f"{where} has dtype {w.dtype}; only floating-point tensors can be companded.")
    if not torch.isfinite(w).all():
        raise ValueError(f"{where} holds NaN or infinite values; fix the weights before companding.")
    spec = get_kind(kind)
    if get_kind(spec.name) is not spec:  # companders store the kind by name (so they pickle)
        raise ValueError(
            f"kind {spec.name!r} differs from the registered one; register it with wc.register_kind."
        )
    learned = _learned_names(spec, learnable)
    if overflow not in POLICIES:
        raise ValueError(f"overflow must be one of {', '.join(POLICIES)}; got {overflow!r}.")
    if not isinstance(per_channel, bool):
        raise TypeError(f"per_channel must be True or False; got {per_channel!r}.")
    if per_channel and w.dim() < 2:
        raise ValueError(f"per_channel needs a tensor with output channels; {where} is {w.dim()}-D.")
    axis = _axis(target, w, where) if per_channel or scale == "channel" else 0
    values = _hyper_values(spec, hyper, learned)
    s = _scale(w, scale, where, axis)
    shape = _channel_shape(w, axis) if per_channel else ()
    note = None
    if spec.bound is not None:
        values[spec.bound], note = fit_bound(w, s, values[spec.bound], shape, overflow, where, spec)
        spec.hyperparameters[spec.bound].check(spec.name, spec.bound, values[spec.bound].max().item(), False)
    tensors = {
        n: torch.as_tensor(v, dtype=w.dtype, device=w.device).expand(shape).clone() for n, v in values.items()
    }
    compander = Compander(spec.name, s, tensors, learned)
    if frozen:  # a frozen weight keeps frozen hyperparameters: training must not change it
        compander.requires_grad_(False)
    return _Plan(target, compander, tied or [], note)


def _share_hyperparameters(plans: list[_Plan], per_channel: bool) -> None:
    """Point every plan's learnable hyperparameters at the first plan's Parameters."""
    if not isinstance(per_channel, bool) or per_channel:
        raise ValueError(
            "share_hyperparameters=True needs per_channel=False: one shared value per hyperparameter."
        )
    if not plans:
        return
    first = plans[0].compander
    for plan in plans[1:]:
        for name in first.learnable:
            mine, theirs = getattr(plan.compander, f"raw_{name}"), getattr(first, f"raw_{name}")
            if not torch.equal(mine.detach(), theirs.detach()):
                raise ValueError(
                    f"share_hyperparameters=True, but {plan.target.name!r} needs its own {name} "
                    f"(its weights lie beyond the bound: the bound was raised for it); pass a larger "
                    f"{name}= or overflow='clip'."
                )
            plan.compander._parameters[f"raw_{name}"] = theirs


def _axis(target: Target, w: Tensor, where: str) -> int:
    axis = output_axis(target.module, target.tensor_name)
    if not -w.dim() <= axis < w.dim():
        raise ValueError(
            f"{where} is {w.dim()}-D, but its layer type registers output axis {axis}; fix the "
            "entry with wc.register_layer(..., replace=True)."
        )
    return axis % w.dim()


def _channel_shape(w: Tensor, axis: int) -> tuple[int, ...]:
    """One entry per output channel along ``axis``, broadcasting over the other dims."""
    return tuple(n if d == axis else 1 for d, n in enumerate(w.shape))


def _learned_names(spec: Kind, learnable: bool | Collection[str]) -> tuple[str, ...]:
    if isinstance(learnable, bool):
        return tuple(spec.hyperparameters) if learnable else ()
    if isinstance(learnable, str) or not isinstance(learnable, Collection):
        raise TypeError(f"learnable must be True, False or a collection of names; got {learnable!r}.")
    unknown = set(learnable) - set(spec.hyperparameters)
    if unknown:
        raise ValueError(
            f"{spec.name} has no hyperparameter {', '.join(sorted(map(str, unknown)))} to learn; "
            f"its hyperparameters are: {', '.join(spec.hyperparameters) or '(none)'}."
        )
    return tuple(n for n in spec.hyperparameters if n in learnable)


def _hyper_values(spec: Kind, hyper: dict[str, float], learned: tuple[str, ...]) -> dict[str, Tensor]:
    unknown = set(hyper) - set(spec.hyperparameters)
    if unknown:
        raise ValueError(
            f"{spec.name} has no hyperparameter {', '.join(sorted(unknown))}; "
            f"its hyperparameters are: {', '.join(spec.hyperparameters) or '(none)'}."
        )
    return {
        n: torch.tensor(h.check(spec.name, n, hyper.get(n, h.default), n in learned), dtype=torch.float64)
        for n, h in spec.hyperparameters.items()
    }


def _scale(w: Tensor, scale: str | float, where: str, axis: int) -> Tensor:
    if isinstance(scale, str):
        if scale == "std":
            s = w.float().std() if w.numel() > 1 else torch.tensor(0.0)
        elif scale == "channel":
            if w.dim() < 2:
                raise ValueError(f"scale='channel' needs output channels; {where} is {w.dim()}-D.")
            s = w.float().movedim(axis, 0).flatten(1).std(dim=1).view(_channel_shape(w, axis))
        else:
            raise ValueError(f"scale must be 'std', 'channel' or a positive number; got {scale!r}.")
        zero = int((~(s > 0)).sum())
        if zero:
            raise ValueError(
                f"{where} has zero standard deviation ({zero} of {s.numel()} scale values), so its "
                f"scale cannot be taken from it; pass a number, e.g. scale=0.05."
            )
        return s.to(w.dtype)
    if isinstance(scale, bool) or not isinstance(scale, int | float):
        raise TypeError(f"scale must be 'std', 'channel' or a positive number; got {scale!r}.")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite positive number; got {scale}.")
    return torch.tensor(float(scale), dtype=w.dtype, device=w.device)


# --- registration -----------------------------------------------------------------------------


def _register(plan: _Plan) -> None:
    # a tied tensor's first holder: baking it alone (e.g. a PEFT merge) would untie the others
    plan.compander.has_tied_holders = bool(plan.tied)
    registration.register(plan.target.module, plan.target.tensor_name, plan.compander)
    for holder in plan.tied:
        registration.register_shared(holder.module, holder.tensor_name, plan.compander)


def _unregister(plan: _Plan, original: Tensor) -> None:
    """Undo a (possibly partial) registration and put the tensor's original values back."""
    for target in [*plan.tied, plan.target]:
        module, name = target.module, target.tensor_name
        if parametrize.is_parametrized(module, name):
            plist = module.parametrizations[name]
            ours = [i for i, p in enumerate(plist) if isinstance(p, Compander | SharedCompander)]
            if ours:
                registration.drop(module, name, ours[-1], bake=False)
    module, name = plan.target.module, plan.target.tensor_name
    with torch.no_grad():
        if parametrize.is_parametrized(module, name):
            module.parametrizations[name].right_inverse(original)
        else:
            getattr(module, name).copy_(original)
