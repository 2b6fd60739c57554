"""Hugging Face Transformers: Trainer, checkpoints, tied embeddings and vocabulary resizing.

What works without this module: ``wc.apply`` compands GPT-2's ``Conv1D`` (a registered layer
type), and ``save_pretrained`` / ``Trainer`` checkpoints use the library's checkpoint layout, so the
plain class loads the effective weights and ``resume_from_checkpoint`` restores the companding.
This module adds::

    from weight_compander.integrations import transformers as wc_hf
    trainer = Trainer(model, args, ..., optimizers=wc_hf.optimizers(model, args))  # no decay on hyper
    model = wc_hf.from_pretrained(GPT2LMHeadModel, "out/checkpoint-500", learnable=True)  # resume

and, through ``attach`` (called by ``wc.apply``; ``hf_embeddings.py``), ``tie_weights`` and
``resize_token_embeddings`` that know about companded embeddings.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

try:
    from transformers.modeling_utils import PreTrainedModel
except ImportError as err:  # the core library needs only torch
    raise ImportError(
        "weight_compander.integrations.transformers needs transformers and accelerate: "
        "pip install 'weight-compander[integrations]'"
    ) from err

from .. import api, state
from ..exceptions import CompanderWarning
from ..optim import param_groups
from . import hf_checkpoints, hf_embeddings
from .hf_checkpoints import model_keys, register_experts

if TYPE_CHECKING:
    from transformers import TrainingArguments

__all__ = [
    "attach",
    "detach",
    "from_pretrained",
    "load_checkpoint",
    "model_keys",
    "optimizers",
    "prepare",
    "register_experts",
]


def prepare(model: nn.Module) -> None:
    """Called by ``wc.apply`` before it selects tensors: registers fused mixture-of-experts layers."""
    register_experts(model)


def attach(model: nn.Module) -> None:
    """Called by ``wc.apply``: companding-aware ``tie_weights`` / ``resize_token_embeddings``, and
    a load hook that maps transformers' legacy checkpoint keys."""
    hf_embeddings.attach(model)
    hf_checkpoints.attach(model)


def detach(model: nn.Module) -> None:
    """Called by ``wc.remove``: undo ``attach``."""
    hf_embeddings.detach(model)
    hf_checkpoints.detach(model)


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
    if isinstance(model, PreTrainedModel):  # legacy key names, as from_pretrained maps them
        merged = model_keys(model, merged)
    result = model.load_state_dict(merged, strict=False)
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    ignored = [re.compile(p) for p in getattr(model, "_keys_to_ignore_on_load_missing", None) or ()]
    missing = [k for k in result.missing_keys if k not in tied and not any(p.search(k) for p in ignored)]
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
        layouts = {k: v for f in _weight_files(path) for k, v in _tensors(f, suffix).items()}
        include = [k[: -len(suffix)] for k in model_keys(model, layouts) if k.endswith(suffix)] or None
    with warnings.catch_warnings():  # limits raised on the way are replaced by the saved ones
        warnings.simplefilter("ignore", CompanderWarning)
        api.apply(model, include, exclude, **compand_settings)
    return load_checkpoint(model, path)


def _tensors(path: Path, suffix: str) -> dict[str, Tensor]:
    """The tensors of one weight file whose keys end with ``suffix``."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(path, "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys() if k.endswith(suffix)}  # noqa: SIM118
    return {k: v for k, v in _read(path).items() if k.endswith(suffix)}
