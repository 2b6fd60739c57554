"""The state_dict of a companded model: loadable by the plain model and by a companded one.

Every checkpoint must be deployable as it is, so ``state_dict()`` holds each companded tensor's
effective weight under its plain key, and the state that companding needs to resume (the raw
tensor, the scale, the hyperparameters) beside it under keys of its own. Layout 2
(``LAYOUT_VERSION``), for tensor ``n`` of the module at prefix ``P``::

    P.n                         f(v), the effective weight: what the model without WC holds
    P.n_compander.original      v, the raw tensor (original0, original1, ... under weight_norm)
    P.n_compander.0.scale       the parametrization state, torch's own names after the prefix:
    P.n_compander.0.raw_gain    scale s, fixed hyperparameters by name, learned ones as raw_<name>
    P.n_compander.layout        2

A tensor tied to others is stored once (the other holders get only ``P.n``, the same tensor
object, so tied-weight de-duplication such as transformers' ``save_pretrained`` applies). A
tensor stacked on another parametrization (weight_norm) has its plain view in that
parametrization's own keys (``P.parametrizations.n.original0``, ...), holding values that
produce the effective weight. Layout 1 is torch's native parametrize layout
(``P.parametrizations.n.*``), what this library wrote before; it still loads. A checkpoint with
only plain keys (a model saved without WC) loads into a companded model as its effective weights.

The plain model class loads ``P.n`` and ignores or reports the ``*_compander.*`` keys (torch:
``strict=False``; transformers reports them as UNEXPECTED); ``plain_state_dict`` leaves them out.
Checkpoints hold both ``v`` and ``f(v)``, so companded tensors take twice their size on disk.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from . import defaults
from .exceptions import CompanderWarning
from .functions import get_kind
from .parametrization import Compander, SharedCompander

__all__ = ["LAYOUT_VERSION", "SUFFIX", "attach", "detach", "plain_state_dict"]

LAYOUT_VERSION = 2
SUFFIX = "_compander"  # WC state of tensor ``P.n`` lives under ``P.n_compander.``
_HOOKS = "_wc_state_hooks"  # the ids of a module's two hooks (ints: they survive deepcopy and pickle)
# compander -> (the state dict being filled, f(v) put into it), both weakly; kept off the module
# so that the module still pickles.
_EFFECTIVE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def attach(module: nn.Module) -> None:
    """Give a module holding companded tensors the layout-2 save hook and the load hook."""
    if getattr(module, _HOOKS, None):
        return
    # torch < 2.5 has only the private forms of the two hook registrations
    register = getattr(module, "register_state_dict_post_hook", module._register_state_dict_hook)
    save = register(_save_hook)
    load = module._register_load_state_dict_pre_hook(_load_hook, with_module=True)
    setattr(module, _HOOKS, (save.id, load.id))


def detach(module: nn.Module) -> None:
    """Take the hooks off once a module holds no companded tensor (a baked model is plain)."""
    ids = module.__dict__.pop(_HOOKS, None)
    if ids:
        module._state_dict_hooks.pop(ids[0], None)
        module._load_state_dict_pre_hooks.pop(ids[1], None)


def plain_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The state dict of the model without WC: effective weights under plain keys, nothing else.

    What to deploy, or to hand to ``save_pretrained(dir, state_dict=...)`` for a checkpoint the
    plain class loads without reporting unexpected keys. Tied tensors share one tensor, as in
    the plain model. The live model stays companded.
    """
    from .selection import companded_entries

    ours = tuple(f"{e.name}{SUFFIX}." for e in companded_entries(model) if not e.shared)
    return {k: v for k, v in model.state_dict().items() if not k.startswith(ours)}


# --- saving ----------------------------------------------------------------------------------


def _compander_index(plist: parametrize.ParametrizationList) -> int | None:
    for i, p in enumerate(plist):
        if isinstance(p, Compander | SharedCompander):
            return i
    return None


def _effective(module: nn.Module, name: str, compander: Compander, destination: dict) -> Tensor:
    """``f(v)``, computed once per state dict for all holders of a tied tensor.

    The holders of a tied tensor must hand out one tensor object, as a plain tied model does,
    so that savers that de-duplicate tied weights by storage (transformers' ``save_pretrained``)
    see them as tied. (Only within one state dict: a version counter would miss ``.data`` writes.)
    """
    cached = _EFFECTIVE.get(compander)
    if cached is not None and cached[0]() is destination and (value := cached[1]()) is not None:
        return value
    with torch.no_grad():
        value = getattr(module, name).detach()
    with contextlib.suppress(TypeError):  # a plain dict as destination has no weak references
        _EFFECTIVE[compander] = (weakref.ref(destination), weakref.ref(value))
    return value


def _plain_view(plist, index: int, effective: Tensor, prefix: str, name: str) -> dict[str, Tensor]:
    """Keys and values that make the model without WC compute ``effective`` for this tensor."""
    others = [p for i, p in enumerate(plist) if i != index]
    if not others:
        return {prefix + name: effective}
    # Stacked (e.g. weight_norm below WC): invert the remaining chain, as torch does on registering.
    with torch.no_grad():
        value = effective
        for p in reversed(others[1:]):
            value = p.right_inverse(value)
        value = others[0].right_inverse(value) if hasattr(others[0], "right_inverse") else value
    native = f"{prefix}parametrizations.{name}."
    if isinstance(value, Tensor):
        view = {native + "original": value}
    else:
        view = {f"{native}original{i}": v for i, v in enumerate(value)}
    for j, p in enumerate(others):
        view.update({f"{native}{j}.{k}": v for k, v in p.state_dict().items()})
    return view


def _companded(module: nn.Module, prefix: str) -> Iterator[tuple[str, Any, int, str]]:
    """Per companded tensor of the module: its name, its parametrization list, the compander's
    index in that list, and the native key prefix of its state."""
    if not parametrize.is_parametrized(module):
        return
    for name, plist in module.parametrizations.items():
        index = _compander_index(plist)
        if index is not None:
            yield name, plist, index, f"{prefix}parametrizations.{name}."


def _save_hook(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    for name, plist, index, native in _companded(module, prefix):
        keys = [native + k for k in plist.state_dict(keep_vars=True) if native + k in state_dict]
        moved = {k: state_dict.pop(k) for k in keys}
        p = plist[index]
        compander = p.compander if isinstance(p, SharedCompander) else p
        effective = _effective(module, name, compander, state_dict)
        if isinstance(p, SharedCompander):  # the first holder carries the state
            state_dict[prefix + name] = effective
            continue
        state_dict.update(_plain_view(plist, index, effective, prefix, name))
        ours = f"{prefix}{name}{SUFFIX}."
        state_dict.update({ours + k[len(native) :]: v for k, v in moved.items()})
        state_dict[ours + "layout"] = torch.tensor(LAYOUT_VERSION)  # a new tensor per key: no aliasing


# --- loading ---------------------------------------------------------------------------------


def _load_hook(module, state_dict, prefix, local_metadata, strict, missing, unexpected, errors) -> None:
    """Turn layout 2 (or plain keys) into torch's native keys before the module loads them."""
    for name, plist, index, native in _companded(module, prefix):
        if isinstance(plist[index], SharedCompander):
            plain = state_dict.pop(prefix + name, None)
            if not any(k.startswith(native) for k in state_dict):
                if plain is None:
                    # A saver that keeps one name per tied tensor (safetensors' save_model) dropped
                    # this one: report it missing, as the model without WC does, so that such a
                    # loader (load_model) sees the load complete.
                    missing.append(prefix + name)
                # The first holder loads the one tensor and compander they share; these are the
                # very same objects, so copying them onto themselves changes nothing.
                state_dict.update({native + k: v for k, v in plist.state_dict(keep_vars=True).items()})
            continue
        ours = f"{prefix}{name}{SUFFIX}."
        if ours + "layout" in state_dict:
            _check_layout(state_dict.pop(ours + "layout"), ours + "layout")
            if prefix + name not in state_dict and len(plist) == 1:
                missing.append(prefix + name)  # the same for the first holder (raw state is complete)
            for key in [k for k in state_dict if k == prefix + name or k.startswith(native)]:
                del state_dict[key]  # the plain view; the raw state below is exact
            for key in [k for k in state_dict if k.startswith(ours)]:
                state_dict[native + key[len(ours) :]] = state_dict.pop(key)
        elif f"{native}{index}.scale" in state_dict:
            continue  # layout 1: torch's own keys
        elif prefix + name in state_dict and len(plist) == 1:
            _load_plain(module, name, plist, state_dict, prefix)
        elif any(k.startswith(native) for k in state_dict):
            raise ValueError(
                f"{prefix}{name}: the checkpoint holds this tensor without companding state, and WC is "
                "stacked on another parametrization here, so its weights cannot be companded while "
                "loading. Load the checkpoint into the model before applying WC."
            )


def _check_layout(value: Tensor, key: str) -> None:
    version = int(value)
    if not 1 <= version <= LAYOUT_VERSION:
        raise ValueError(
            f"{key} says checkpoint layout {version}; this weight-compander reads layouts 1 to "
            f"{LAYOUT_VERSION}. Upgrade weight-compander to load it."
        )


def _load_plain(module: nn.Module, name: str, plist, state_dict: dict, prefix: str) -> None:
    """A plain checkpoint's weight into a companded tensor: ``v = f^-1(w)`` with this model's ``f``."""
    native = f"{prefix}parametrizations.{name}."
    w = state_dict.pop(prefix + name)
    compander = plist[0]
    current = plist.state_dict(keep_vars=True)
    if tuple(w.shape) != tuple(plist.original.shape):
        state_dict[native + "original"] = w  # torch reports the size mismatch
        return
    w = w.to(device=compander.scale.device, dtype=plist.original.dtype)
    spec = get_kind(compander.kind)
    if spec.bound is not None:
        bound = spec.bound_value(compander.hyperparameter_values()).detach()
        touched = int(((w / compander.scale).abs() > (1 - defaults.OVERFLOW_MARGIN) * bound).sum())
        if touched:
            warnings.warn(
                f"{touched} of {w.numel()} values of {prefix}{name} in a plain checkpoint lie at or beyond "
                f"the {spec.name} {spec.bound} of this companded model and were clipped; load plain "
                "checkpoints before applying WC to keep them.",
                CompanderWarning,
                stacklevel=4,
            )
    state_dict[native + "original"] = compander.right_inverse(w)
    state_dict.update({native + k: v for k, v in current.items() if k != "original"})
