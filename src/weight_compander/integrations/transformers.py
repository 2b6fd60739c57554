"""Hugging Face Transformers: Trainer, checkpoints, tied embeddings and vocabulary resizing.

What works without this module: ``wc.apply`` compands GPT-2's ``Conv1D`` (a registered layer
type), and ``save_pretrained`` / ``Trainer`` checkpoints use the library's checkpoint layout, so the
plain class loads the effective weights and ``resume_from_checkpoint`` restores the companding.
This module adds::

    from weight_compander.integrations import transformers as wc_hf
    trainer = Trainer(model, args, ..., optimizers=wc_hf.optimizers(model, args))  # no decay on hyper
    model = wc_hf.from_pretrained(GPT2LMHeadModel, "out/checkpoint-500", learnable=True)  # resume

and, through ``attach`` (called by ``wc.apply``), ``tie_weights`` and ``resize_token_embeddings``
that know about companded embeddings: tied tensors stay tied and companded, resized vocabularies
keep every old raw row exactly and compand the new rows with the same ``f``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from transformers.modeling_utils import PreTrainedModel

from .. import api, state
from ..exceptions import CompanderWarning
from ..optim import param_groups
from ..parametrization import Compander, SharedCompander, make_picklable

if TYPE_CHECKING:
    from transformers import TrainingArguments

__all__ = ["attach", "detach", "from_pretrained", "load_checkpoint", "optimizers"]


def optimizers(
    model: nn.Module,
    args: TrainingArguments,
    *,
    hyper_lr: float | None = None,
    hyper_weight_decay: float = 0.0,
) -> tuple[torch.optim.Optimizer, None]:
    """``Trainer(..., optimizers=wc_hf.optimizers(model, args))``: the optimizer ``args.optim`` names,
    with ``wc.param_groups`` so that weight decay stays off the compander hyperparameters.

    Trainer's own optimizer exempts only biases and norms, so it would decay ``log(limit)`` and
    ``log(gain - 1)`` toward 0. ``None`` lets Trainer build its scheduler from ``args`` as usual.
    """
    from transformers import Trainer  # needs accelerate: imported only when a Trainer is wanted

    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    if not isinstance(cls, type) or {"params", "model", "optimizer_dict"} & set(kwargs):
        raise ValueError(
            f"args.optim={args.optim!r} builds its own parameter groups; use a torch optimizer such "
            "as 'adamw_torch' with wc_hf.optimizers, or pass optimizers=(torch.optim.AdamW("
            "wc.param_groups(model, weight_decay=...), lr=...), None) to Trainer."
        )
    groups = param_groups(model, args.weight_decay, hyper_lr=hyper_lr, hyper_weight_decay=hyper_weight_decay)
    return cls(groups, **kwargs), None


# --- checkpoints ------------------------------------------------------------------------------


def _weight_files(path: Path) -> list[Path]:
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (path / index).is_file():
            files = sorted(set(json.loads((path / index).read_text())["weight_map"].values()))
            return [path / f for f in files]
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (path / single).is_file():
            return [path / single]
    raise FileNotFoundError(f"{path} holds no model weights (model.safetensors or pytorch_model.bin).")


def _read(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a ``save_pretrained`` / Trainer checkpoint folder into a companded model.

    Restores the raw weights, scales and learned hyperparameters (layout 2 or 1), or compands the
    weights of a plain checkpoint with the model's ``f``. All shards are read first, so the state
    of one tensor may span shards.

    Raises:
        ValueError: when the checkpoint does not fit the model (other companding settings, other
            architecture); nothing is reported as loaded when it was not.
    """
    merged: dict[str, Tensor] = {}
    for file in _weight_files(Path(path)):
        merged.update(_read(file))
    result = model.load_state_dict(merged, strict=False)
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    missing = [k for k in result.missing_keys if k not in tied]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{path} does not fit this model: missing {missing[:5]}, unexpected "
            f"{result.unexpected_keys[:5]}. Compand the model with the settings it was saved with "
            "(kind, learnable, per_channel) before loading."
        )
    return model


@contextmanager
def _quiet_about_companding(cls: type[PreTrainedModel]) -> Iterator[None]:
    """``from_pretrained`` of the plain class would list every ``*_compander.*`` key as UNEXPECTED."""
    had = "_keys_to_ignore_on_load_unexpected" in cls.__dict__
    saved = cls.__dict__.get("_keys_to_ignore_on_load_unexpected")
    ours = rf"{state.SUFFIX}\."
    cls._keys_to_ignore_on_load_unexpected = [*(cls._keys_to_ignore_on_load_unexpected or []), ours]
    try:
        yield
    finally:
        if had:
            cls._keys_to_ignore_on_load_unexpected = saved
        else:
            del cls._keys_to_ignore_on_load_unexpected


def from_pretrained(
    cls: type[PreTrainedModel],
    path: str | Path,
    *,
    include: Any = None,
    exclude: Any = None,
    from_pretrained_kwargs: dict[str, Any] | None = None,
    **compand_settings: Any,
) -> PreTrainedModel:
    """Resume a companded model from a checkpoint folder, as it was when saved.

    ``cls.from_pretrained`` (the effective weights), ``wc.apply`` (the tensors the checkpoint has
    companding state for, unless ``include`` says otherwise), then ``load_checkpoint`` (raw
    weights, scales, learned hyperparameters).

    Args:
        cls: the model class, e.g. ``GPT2LMHeadModel``.
        path: a ``save_pretrained`` or Trainer checkpoint folder.
        include, exclude: as in ``wc.apply``. Default: what the checkpoint holds companded.
        from_pretrained_kwargs: passed on to ``cls.from_pretrained`` (e.g. ``{"dtype": ...}``).
        **compand_settings: the settings it was companded with (``kind``, ``learnable``,
            ``per_channel``, ...), as in ``wc.apply``.

    Example::

        >>> model = wc_hf.from_pretrained(GPT2LMHeadModel, "out/checkpoint-500", learnable=True)
    """
    path = Path(path)
    with _quiet_about_companding(cls):
        model = cls.from_pretrained(path, **(from_pretrained_kwargs or {}))
    if include is None:
        suffix = f"{state.SUFFIX}.layout"
        keys = [k for f in _weight_files(path) for k in _keys(f)]
        include = [k[: -len(suffix)] for k in keys if k.endswith(suffix)] or None
    with warnings.catch_warnings():  # limits raised on the way are replaced by the saved ones
        warnings.simplefilter("ignore", CompanderWarning)
        api.apply(model, include, exclude, **compand_settings)
    return load_checkpoint(model, path)


def _keys(path: Path) -> list[str]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(path, "pt") as f:
            return list(f.keys())
    return list(_read(path))


# --- tie_weights and resize_token_embeddings --------------------------------------------------


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
        entries = [e for e in _entries(model) if e.module in self._modules().values()]
        api._remove_entries(entries, bake=True)
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
            order = tuple(module._parameters)
            parametrize.register_parametrization(module, "weight", item.compander)
            item.compander.parameter_order = order
            rows = min(item.raw.shape[0], weight.shape[0])
            with torch.no_grad():
                module.parametrizations.weight.original[:rows] = item.raw[:rows].to(weight.dtype)
            make_picklable(module)
            state.attach(module)
            for role, other in modules.items():  # its tied partner
                if role != item.role and other._parameters.get("weight") is weight:
                    shared = SharedCompander(item.compander)
                    shared.parameter_order = tuple(other._parameters)
                    parametrize.register_parametrization(other, "weight", shared)
                    make_picklable(other)
                    state.attach(other)


def _entries(model: nn.Module):
    from ..selection import companded_entries

    return companded_entries(model)


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
