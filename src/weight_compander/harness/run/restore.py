"""A run's ingredients from its settings, and its model back from its checkpoint: one copy.

Training builds its data and model here; `load_model` rebuilds a finished (or stopped) run's
model the same way, config -> model -> reparameterization -> weights, so reports and the
robustness evaluation see exactly the effective weights the run trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

import weight_compander as wc
from weight_compander.harness.config.settings import TrainConfig
from weight_compander.harness.errors import CheckpointError, ConfigError, DataError
from weight_compander.harness.ingredients import data, label_noise, models, peers
from weight_compander.harness.store import checkpoint

__all__ = ["Restored", "build_model", "load_data", "load_model", "restore"]


def load_data(cfg: TrainConfig) -> data.Dataset:
    """The config's data set, split and normalised, with its training/validation label noise."""
    try:
        ds = data.load_dataset(
            cfg.dataset, data_dir=cfg.data_dir, val_size=cfg.val_size, train_subset=cfg.train_subset
        )
    except DataError:
        raise
    except ValueError as err:
        raise ConfigError(f"data: {err}") from err
    return label_noise.apply_label_noise(ds, cfg.label_noise, cfg.label_noise_kind)


def build_model(cfg: TrainConfig, shape: dict[str, Any]) -> tuple[nn.Module, list[str]]:
    """The config's model with its reparameterization; returns it and the tensors it touched."""
    try:
        model = models.build_model(cfg.model, dropout=cfg.dropout, **shape)
        if cfg.reparam == "wc":
            include = None if cfg.wc_layers == "default" else cfg.wc_layers
            names = wc.apply(
                model, include, kind=cfg.wc_kind,
                learnable=cfg.wc_learn_only if cfg.wc_learn_only else cfg.wc_learnable,
                per_channel=cfg.wc_per_channel, scale=cfg.wc_scale,
                share_hyperparameters=cfg.wc_share, **cfg.wc_hyper,
            )
        elif cfg.reparam in peers.PEERS:
            names = peers.apply_peer(model, cfg.reparam)
        else:
            names = []
    except (ValueError, TypeError) as err:
        raise ConfigError(f"model/reparam settings: {err}") from err
    return model, names


class Restored(NamedTuple):
    """A run's model with the chosen weights (eval mode), its settings and their epoch."""

    model: nn.Module
    config: TrainConfig
    epoch: int


def restore(run_dir: str | Path, weights: str = "final") -> Restored:
    """Rebuild a run's model from its latest checkpoint with the last epoch's weights
    (``"final"``) or those of the best validation epoch (``"best_val"``).

    Raises:
        CheckpointError: no checkpoint, or no best-validation weights kept in it.
    """
    run_dir = Path(run_dir)
    state = checkpoint.load_latest(run_dir)
    if state is None:
        raise CheckpointError(f"{run_dir} has no checkpoint; was the run started?")
    cfg = TrainConfig.from_json(state["config"])
    torch.manual_seed(cfg.seed)
    model, _ = build_model(cfg, state["shape"])
    epoch = state["epoch"]
    if weights == "best_val":
        best = state.get("best") or {}
        if best.get("model") is None:
            raise CheckpointError(f"{run_dir} keeps no best-validation weights (trained before "
                                  "they were kept); evaluate it with --weights final")
        model.load_state_dict(best["model"])
        epoch = best["epoch"]
    else:
        model.load_state_dict(state["model"])
    return Restored(model.eval(), cfg, epoch)


def load_model(run_dir: str | Path) -> nn.Module:
    """A run's latest model (eval mode): its effective weights (``wc.weights``) are exactly
    those the run trained."""
    return restore(run_dir).model
