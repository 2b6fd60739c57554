"""Which tensors of a model to compand, which are tied, and which are companded already."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from torch import Tensor, nn
from torch.nn.utils import parametrize

from .layer_types import layer_spec, tensor_names
from .parametrization import Compander, SharedCompander

__all__ = [
    "Entry", "Target", "companded_entries", "join_name", "select_targets", "tied_holders", "user_modules",
]


@dataclass(frozen=True)
class Target:
    """One tensor of a model: ``module.<tensor_name>``, known as ``name`` in the model."""

    name: str
    module: nn.Module
    tensor_name: str


@dataclass(frozen=True)
class Entry(Target):
    """A companded tensor: its parametrization list and the compander's place in it."""

    index: int
    compander: Compander
    shared: bool  # a second holder of a tied tensor (the compander lives on the first)

    @property
    def parametrizations(self) -> parametrize.ParametrizationList:
        return self.module.parametrizations[self.tensor_name]


def join_name(prefix: str, name: str) -> str:
    """A qualified tensor name: ``"fc" + "weight"`` -> ``"fc.weight"`` (no dot at the root)."""
    return f"{prefix}.{name}" if prefix else name


def has_tensor(module: nn.Module, tensor_name: str) -> bool:
    if parametrize.is_parametrized(module, tensor_name):
        return True
    value = module._parameters.get(tensor_name, module._buffers.get(tensor_name))
    return isinstance(value, Tensor)


def user_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``model.named_modules()`` without the internals of parametrizations (weight_norm's
    modules, our own companders): the modules a user can name."""
    for name, module in model.named_modules():
        if ".parametrizations." not in f".{name}." and not name.startswith("parametrizations."):
            yield name, module


def _check_entries(entries: Iterable[object], what: str) -> list[type[nn.Module] | str]:
    checked = []
    for entry in entries:
        is_type = isinstance(entry, type) and issubclass(entry, nn.Module)
        if not (is_type or isinstance(entry, str)):
            raise TypeError(
                f"{what} entries must be nn.Module subclasses (e.g. nn.Linear) or names of modules "
                f"or tensors (e.g. 'fc' or 'fc.weight', wildcards allowed); got {entry!r} "
                f"({type(entry).__name__})."
            )
        checked.append(entry)
    return checked


def _default_names(module: nn.Module) -> tuple[str, ...]:
    spec = layer_spec(module)
    return spec.tensor_names(module) if spec is not None and spec.default else ()


def _matches(entries: list[type[nn.Module] | str | None], model: nn.Module, what: str) -> list[Target]:
    """The tensors any entry matches, in the model's own order (``None``: the default layer types)."""
    found: dict[str, Target] = {}
    unmatched = {e for e in entries if isinstance(e, str)}
    for module_name, module in user_modules(model):
        for entry in entries:
            if entry is None:
                names = _default_names(module)
            elif isinstance(entry, type):
                names = tensor_names(module) if isinstance(module, entry) else ()
            elif entry == module_name:
                names = tensor_names(module)
            else:
                names = tuple(
                    n for n in _tensor_names(module) if fnmatch.fnmatchcase(join_name(module_name, n), entry)
                )
            for n in names:
                if has_tensor(module, n):
                    found.setdefault(join_name(module_name, n), Target(join_name(module_name, n), module, n))
                    unmatched.discard(entry)
    if unmatched:
        raise ValueError(
            f"{what} entry {sorted(unmatched)[0]!r} matches no module or tensor of the model; "
            f"module names are: {', '.join(n for n, _ in user_modules(model) if n) or '(none)'}."
        )
    return list(found.values())


def _tensor_names(module: nn.Module) -> list[str]:
    names = list(module._parameters) + list(module._buffers)
    if parametrize.is_parametrized(module):
        names += list(module.parametrizations)
    return names


def select_targets(
    model: nn.Module,
    include: Iterable[type[nn.Module] | str] | type[nn.Module] | str | None,
    exclude: Iterable[type[nn.Module] | str] | type[nn.Module] | str | None,
) -> list[Target]:
    """Resolve include/exclude (types, module names, tensor names, wildcards) to tensors.

    ``include=None`` means every tensor of the registered default layer types (``layers.py``).
    """
    include = [include] if isinstance(include, str | type) else include
    exclude = [] if exclude is None else exclude
    exclude = [exclude] if isinstance(exclude, str | type) else exclude
    entries = [None] if include is None else _check_entries(include, "include")
    targets = _matches(entries, model, "include")
    dropped = {t.name for t in _matches(_check_entries(exclude, "exclude"), model, "exclude")}
    return [t for t in targets if t.name not in dropped]


def tied_holders(model: nn.Module, tensor: Tensor) -> list[Target]:
    """Every (module, name) in the model that holds this very Parameter object."""
    holders = []
    for module_name, module in user_modules(model):
        for n, p in module._parameters.items():
            if p is tensor:
                holders.append(Target(join_name(module_name, n), module, n))
    return holders


def companded_entries(model: nn.Module) -> list[Entry]:
    """All companded tensors of a model, the first holder of a tied tensor before the others."""
    entries = []
    for module_name, module in user_modules(model):
        if not parametrize.is_parametrized(module):
            continue
        for tensor_name, plist in module.parametrizations.items():
            for index, p in enumerate(plist):
                if isinstance(p, Compander | SharedCompander):
                    shared = isinstance(p, SharedCompander)
                    compander = p.compander if shared else p
                    name = join_name(module_name, tensor_name)
                    entries.append(Entry(name, module, tensor_name, index, compander, shared))
    return sorted(entries, key=lambda e: e.shared)
