"""What a run minimizes and with what: the optimizer, its per-step schedule and the penalties.

The data loss is logged; the trained objective adds weight decay on the effective weight
(``decay_on = "effective"``) and the KURE penalty. With ``wc_learn = "validation"`` the
compander hyperparameters have their own optimizer and follow held-out batches instead.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

import weight_compander as wc
from weight_compander.harness.config.settings import BILEVEL_HYPER_LR, TrainConfig
from weight_compander.harness.ingredients import kure

__all__ = [
    "bilevel", "decay_penalty", "hyper_optimizer", "hyper_smoothing", "kure_penalty", "optimizer",
    "weights_once",
]


def optimizer(cfg: TrainConfig, model: nn.Module, steps: int) -> tuple[Any, Any]:
    """The config's optimizer over the model's parameter groups and its per-step schedule."""
    # wc_learn = "validation": the weights' optimizer leaves the hyperparameters out; they
    # follow held-out batches instead (wc.hyper_step, first-order bilevel)
    groups = wc.param_groups(
        model, cfg.weight_decay, hyper_lr=cfg.wc_hyper_lr, with_hyperparameters=not bilevel(cfg),
        decay=cfg.decay_on,
    )
    total = cfg.epochs * steps
    if cfg.optimizer == "sgd":
        nesterov = cfg.nesterov and cfg.momentum > 0  # torch refuses Nesterov without momentum
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=nesterov)
    elif cfg.optimizer == "adamw-companded":
        opt = wc.CompandedAdamW(groups, model, lr=cfg.lr, betas=(cfg.momentum, 0.999))
    else:
        opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))
    if cfg.schedule == "multistep":  # at epoch boundaries: milestones are fractions of the epochs
        milestones = [max(1, round(m * cfg.epochs)) * steps for m in cfg.lr_milestones]
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=cfg.lr_factor)
    elif cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    elif cfg.schedule == "onecycle":
        max_lr = [g["lr"] for g in opt.param_groups]
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=total)
    else:
        sched = torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    return opt, sched


def bilevel(cfg: TrainConfig) -> bool:
    """The compander hyperparameters follow held-out batches (first-order bilevel)."""
    return cfg.reparam == "wc" and cfg.wc_learn == "validation"


def hyper_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer | None:
    """Adam on the hyperparameters with ``wc_learn = "validation"``; None otherwise."""
    if not bilevel(cfg):
        return None
    return torch.optim.Adam(wc.hyperparameters(model), lr=cfg.wc_hyper_lr or BILEVEL_HYPER_LR)


def hyper_smoothing(cfg: TrainConfig) -> float:
    """The label smoothing of the hyperparameters' loss on validation batches: "train" sees the
    training objective; "plain" cross-entropy also rewards sharper logits, which undoes label
    smoothing (a temperature effect)."""
    return cfg.label_smoothing if cfg.wc_hyper_loss == "train" else 0.0


def weights_once(cfg: TrainConfig) -> contextlib.AbstractContextManager:
    """With decay on the effective weight the loss reads every weight twice: compute it once."""
    return parametrize.cached() if cfg.decay_on == "effective" else contextlib.nullcontext()


def decay_penalty(cfg: TrainConfig, model: nn.Module) -> Tensor | float:
    """``weight_decay/2 * ||f(v)||^2`` of the companded tensors when decay acts on the effective weight."""
    if cfg.decay_on != "effective" or cfg.weight_decay == 0:
        return 0.0
    return wc.effective_weight_decay(model, cfg.weight_decay)


def kure_penalty(cfg: TrainConfig, model: nn.Module) -> Tensor | float:
    """The KURE peer (ingredients/kure.py): kure * mean over layers of (kurtosis(w) - 1.8)^2."""
    return cfg.kure * kure.penalty(model) if cfg.kure else 0.0
