"""Putting a compander on a tensor and taking it off: the one place that registers, for
`apply` and for the integrations that rebuild companded tensors (e.g. resized embeddings).

`register` keeps the tensor's value (torch's ``right_inverse``; on top of another
parametrization the whole chain is inverted here) and records the order of the module's
parameters, which `drop` restores, so an optimizer built from ``parameters()`` sees the order
it saw before; `register_shared` puts the same compander on a second holder of a tied tensor.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from . import state
from .parametrization import Compander, SharedCompander, make_picklable

__all__ = ["drop", "register", "register_shared", "remove_entries"]


def register(module: nn.Module, name: str, compander: Compander) -> None:
    """Compand ``module.<name>`` with `compander`, leaving its value (and outputs) unchanged."""
    compander.parameter_order = tuple(module._parameters)  # restored by drop
    stacked = parametrize.is_parametrized(module, name)
    before = getattr(module, name).detach().clone() if stacked else None
    parametrize.register_parametrization(module, name, compander)
    if stacked:
        # torch only inverts the first parametrization of a tensor; on top of another one
        # (e.g. weight_norm) we invert the whole chain ourselves so outputs stay the same.
        with torch.no_grad():
            module.parametrizations[name].right_inverse(before)
    make_picklable(module)
    state.attach(module)


def register_shared(module: nn.Module, name: str, compander: Compander) -> None:
    """Put `compander` on a second holder of its tied tensor (one compander, one raw tensor)."""
    shared = SharedCompander(compander)
    shared.parameter_order = tuple(module._parameters)
    parametrize.register_parametrization(module, name, shared)
    make_picklable(module)
    state.attach(module)


def remove_entries(entries: list, bake: bool) -> None:
    """Take companding off these entries (``selection.companded_entries``); see `drop`."""
    # Second holders of tied tensors first: the first holder's bake then writes f(v) into the
    # one Parameter they share.
    for entry in sorted(entries, key=lambda e: not e.shared):
        drop(entry.module, entry.tensor_name, entry.index, bake=bake and not entry.shared)


def drop(module: nn.Module, name: str, index: int, bake: bool) -> None:
    """Remove the parametrization at `index` of ``module.<name>`` (bake: leave ``f(v)``)."""
    plist = module.parametrizations[name]
    order = getattr(plist[index], "parameter_order", ())
    if bake or len(plist) == 1:
        parametrize.remove_parametrizations(module, name, leave_parametrized=bake)
        # torch re-registers the tensor last; put it back in its place so parameters() (and
        # any optimizer built from it) sees the order it saw before companding.
        params = module._parameters
        for key in [k for k in order if k in params] + [k for k in params if k not in order]:
            params[key] = params.pop(key)
    else:
        del plist[index]  # keep the other parametrizations of this tensor
    if not any(
        isinstance(p, Compander | SharedCompander)
        for plist in getattr(module, "parametrizations", {}).values()
        for p in plist
    ):
        state.detach(module)
