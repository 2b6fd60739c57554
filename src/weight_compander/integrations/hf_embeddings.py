"""transformers' ``tie_weights`` and ``resize_token_embeddings`` on a companded model.

transformers ties and resizes embeddings by assigning Parameters and building new plain layers,
which on companded tensors crashes half-way (``tie_weights``) or silently drops the companding
(``resize_token_embeddings`` of an untied output layer). ``attach`` (called by ``wc.apply``) gives
each transformers model in a model companding-aware versions of both, as instance attributes:
tied tensors stay tied and companded, a resize keeps every old raw row and compands the new
ones, and what cannot be done is refused before anything changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from transformers.modeling_utils import PreTrainedModel

from .. import registration
from ..parametrization import Compander, SharedCompander
from ..selection import companded_entries

__all__ = ["attach", "detach"]


def attach(model: nn.Module) -> None:
    """Give every transformers model in ``model`` companding-aware ``tie_weights`` and
    ``resize_token_embeddings`` (instance attributes, so only companded models change)."""
    for module in model.modules():
        if isinstance(module, PreTrainedModel) and "tie_weights" not in module.__dict__:
            module.tie_weights = _TieWeights(module)
            module.resize_token_embeddings = _ResizeTokenEmbeddings(module)


def detach(model: nn.Module) -> None:
    for module in model.modules():
        for name, kind in (("tie_weights", _TieWeights), ("resize_token_embeddings", _ResizeTokenEmbeddings)):
            if isinstance(module.__dict__.get(name), kind):
                del module.__dict__[name]


def _holder(model: nn.Module, key: str) -> tuple[nn.Module, str]:
    path, _, name = key.rpartition(".")
    return (model.get_submodule(path) if path else model), name


def _companded(module: nn.Module, name: str) -> Compander | SharedCompander | None:
    if parametrize.is_parametrized(module, name):
        for p in module.parametrizations[name]:
            if isinstance(p, Compander | SharedCompander):
                return p
    return None


class _TieWeights:
    """``model.tie_weights`` on a companded model.

    transformers ties by assigning Parameters, which a companded tensor no longer is. Companded
    tied tensors are tied already (``wc.apply`` compands a tied tensor once, for all holders), so
    they are skipped and transformers ties the others; a companded pair that is *not* tied is
    refused before anything changes.
    """

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model

    def __call__(self, missing_keys: set[str] | None = None, recompute_mapping: bool = True) -> None:
        model = self.model
        tie = type(model).tie_weights
        mapping = (
            model.get_expanded_tied_weights_keys(all_submodels=True)
            if recompute_mapping
            else model.all_tied_weights_keys
        )
        plain = {}
        for target, source in mapping.items():
            t, s = _companded(*_holder(model, target)), _companded(*_holder(model, source))
            if t is None and s is None:
                plain[target] = source
            elif not (t is not None and s is not None and _owner(t) is _owner(s)):
                raise ValueError(
                    f"tie_weights would tie {target} to {source}, but companding keeps them apart "
                    "(only one is companded, or they are companded separately). Tie the weights "
                    "before wc.apply, or call wc.remove(model) first; nothing was changed."
                )
        if len(plain) == len(mapping):
            return tie(model, missing_keys, recompute_mapping)
        saved = model.all_tied_weights_keys
        model.all_tied_weights_keys = plain
        try:
            return tie(model, missing_keys, recompute_mapping=False)
        finally:
            model.all_tied_weights_keys = saved


def _owner(p: Compander | SharedCompander) -> Compander:
    return p.compander if isinstance(p, SharedCompander) else p


@dataclass
class _Saved:
    """The companding of one embedding-like module, kept while transformers resizes it."""

    role: str  # "input" or "output"
    compander: Compander
    raw: Tensor | None  # the raw rows (None: the module shared the other role's tensor)


class _ResizeTokenEmbeddings:
    """``model.resize_token_embeddings`` on a companded model.

    transformers builds new plain embedding (and output) layers and copies the old rows into
    them, which on a companded model would crash half-way or silently drop the companding.
    Here the companding is taken off first (the layers then hold ``f(v)``), transformers
    resizes, and the new layers are companded with the same compander: old rows get their old
    raw values back exactly, new rows ``f^-1`` of their initial values, per-channel
    hyperparameters of new rows the mean of the old ones.
    """

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model

    def __call__(
        self,
        new_num_tokens: int | None = None,
        pad_to_multiple_of: int | None = None,
        mean_resizing: bool = True,
    ) -> nn.Embedding:
        model = self.model
        resize = type(model).resize_token_embeddings
        saved = self._saved()
        if not saved or (new_num_tokens is None and pad_to_multiple_of is None):
            return resize(model, new_num_tokens, pad_to_multiple_of, mean_resizing)
        entries = [e for e in companded_entries(model) if e.module in self._modules().values()]
        registration.remove_entries(entries, bake=True)
        try:
            embeddings = resize(model, new_num_tokens, pad_to_multiple_of, mean_resizing)
        finally:
            self._compand_again(saved)
        return embeddings

    def _modules(self) -> dict[str, nn.Module]:
        roles = {"input": self.model.get_input_embeddings(), "output": self.model.get_output_embeddings()}
        return {role: m for role, m in roles.items() if m is not None}

    def _saved(self) -> list[_Saved]:
        saved = []
        for role, module in self._modules().items():
            p = _companded(module, "weight")
            if p is None:
                continue
            plist = module.parametrizations.weight
            if len(plist) != 1:
                raise ValueError(
                    f"the {role} embeddings are companded on top of another parametrization; "
                    "resize_token_embeddings cannot rebuild them. Call wc.remove(model) first; "
                    "nothing was changed."
                )
            raw = None if isinstance(p, SharedCompander) else plist.original.detach().clone()
            saved.append(_Saved(role, _owner(p), raw))
        return saved

    def _compand_again(self, saved: list[_Saved]) -> None:
        modules = self._modules()
        for item in sorted(saved, key=lambda s: s.raw is None):  # owners first
            module = modules[item.role]
            if _companded(module, "weight") is not None:
                continue  # tied to an owner companded a moment ago
            weight = module.weight
            if item.raw is None:
                raise RuntimeError(  # transformers untied what was tied: should not happen
                    f"the {item.role} embeddings were tied before resizing and are not any more."
                )
            _resize_channels(item.compander, weight.shape[0])
            registration.register(module, "weight", item.compander)
            rows = min(item.raw.shape[0], weight.shape[0])
            with torch.no_grad():
                module.parametrizations.weight.original[:rows] = item.raw[:rows].to(weight.dtype)
            for role, other in modules.items():  # its tied partner
                if role != item.role and other._parameters.get("weight") is weight:
                    registration.register_shared(other, "weight", item.compander)


def _resize_channels(compander: Compander, rows: int) -> None:
    """Per-channel state (one row per token) to ``rows`` rows; new rows get the old rows' mean."""
    for store in (compander._parameters, compander._buffers):
        for name, t in list(store.items()):
            if t is None or t.dim() == 0 or t.shape[0] == rows:
                continue
            with torch.no_grad():
                extra = t.mean(dim=0, keepdim=True).expand(max(rows - t.shape[0], 0), *t.shape[1:])
                value = torch.cat([t[:rows], extra])
            if isinstance(t, nn.Parameter):
                value = nn.Parameter(value, requires_grad=t.requires_grad)
            store[name] = value
