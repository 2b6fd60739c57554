"""One training run, flat and readable top to bottom: data, model, optimizer, loop, test.

A run folder holds ``config.json`` (every resolved setting + meta), ``metrics.jsonl`` (one
line per epoch), ``checkpoint.pt`` (+ ``checkpoint-prev.pt``) and, once the run is
complete, ``final.json`` with the test metrics, measured once after the last epoch, on the
last epoch's weights (``test_acc``) and on those of the best validation epoch
(``test_acc_best_val``, ``best_epoch``; see best_val.py).
Every random draw comes from a seeded generator whose state is checkpointed, so a resumed
run ends with exactly the metrics of an uninterrupted one.

A checkpoint is written after every epoch and, on SIGTERM / SIGINT, after the current step
(with the position inside the epoch); a SIGKILL loses at most the epoch in progress. Under
torchrun every rank runs this function on its shard of each batch (see distributed.py);
only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

import weight_compander as wc
from weight_compander.harness import (
    augment,
    checkpoint,
    data,
    distributed,
    kure,
    label_noise,
    mechanism,
    models,
    peers,
    runfiles,
    runlock,
)
from weight_compander.harness.best_val import BestEpoch
from weight_compander.harness.config import BILEVEL_HYPER_LR, ConfigError, TrainConfig
from weight_compander.harness.progress import Progress
from weight_compander.harness.stopping import RunInterrupted, StopRequest, signal_name

__all__ = [
    "NonFiniteLossError", "RunFolderError", "RunInterrupted", "build_model", "evaluate",
    "load_model", "run",
]


RESUME_HINT = ". Continue with --resume (same settings and --out)"


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""

    def __init__(self, epoch: int, step: int, value: float) -> None:
        self.epoch, self.step, self.value = epoch, step, value
        super().__init__(
            f"non-finite training loss ({value}) at epoch {epoch}, step {step}; the checkpoint "
            "of the last completed epoch is kept. Lower the learning rate (lr) or check the "
            "data and reparameterization settings."
        )


class RunFolderError(ConfigError):
    """The run folder holds another run, or none to resume; the message says what to do."""


def run(
    config: TrainConfig, run_dir: str | Path, *, resume: bool = False, progress: bool | str = True
) -> dict[str, Any]:
    """Train one model as `config` says, write the run folder, return the final metrics.

    Args:
        config: the settings; ``None`` defaults (e.g. val_size) are resolved and recorded.
        run_dir: the run folder (created). A folder that already holds a run is refused
            unless `resume` is set.
        resume: continue from the folder's latest checkpoint (a complete run just returns
            its final.json); the folder's config must equal `config`.
        progress: True: bars on a terminal, plain lines elsewhere; False: plain lines;
            "quiet": no output.

    The run folder is locked for the run's life (runlock.py): a folder another process
    is training is refused with `runlock.RunBusyError`.

    Raises:
        ConfigError / RunFolderError / data.DataError: bad settings, folder or data.
        runlock.RunBusyError: another process is training this run folder.
        runfiles.RunFileError: a damaged config.json (the message says what to do).
        OSError: the disk or the folder (e.g. full, read-only), naming the file.
        NonFiniteLossError: the loss became NaN/inf (naming epoch and step).
        RunInterrupted: SIGTERM / SIGINT arrived; the run stopped after the current step
            and wrote a checkpoint that `resume` continues from.
    """
    with StopRequest() as stop, contextlib.ExitStack() as held:  # held: the run folder's lock
        return _run(config.resolved(), Path(run_dir), resume, progress, stop, held)


def _run(
    cfg: TrainConfig, run_dir: Path, resume: bool, progress: bool | str, stop: StopRequest,
    held: contextlib.ExitStack,
) -> dict[str, Any]:
    rank, world = distributed.rank_world()
    out = Progress(progress if rank == 0 else "quiet")
    distributed.check_batch_size(cfg.batch_size, world)
    state, done = _open_shared(cfg, run_dir, resume, rank, held)
    if done is not None:
        out.line(f"{run_dir} is complete; final metrics from {run_dir / 'final.json'}")
        return done
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    dev = distributed.device()
    torch.manual_seed(cfg.seed)  # init and dropout; data order and augmentation have their own
    order_gen = torch.Generator().manual_seed(_derived_seed(cfg.seed, "order"))
    aug_gen = torch.Generator().manual_seed(_derived_seed(cfg.seed, "augment"))

    # -- data: tensors in memory, batches sliced from a seeded permutation --
    ds = load_data(cfg)
    x_train, y_train = ds.train_x.to(dev), ds.train_y.to(dev)
    n = len(y_train)
    bs = min(cfg.batch_size, n)
    distributed.check_batch_size(bs, world)
    steps = n // bs  # the remainder is dropped; the permutation changes every epoch
    shape = {"in_channels": ds.in_channels, "input_size": list(x_train.shape[2:]),
             "num_classes": ds.num_classes}  # input_size (H, W) or (L,): plain data for JSON

    # -- model, reparameterization, optimizer, per-step schedule --
    model, companded = build_model(cfg, shape)
    model.to(dev)
    if world > 1:  # every rank its own dropout stream (init above is the same on all)
        torch.manual_seed(_derived_seed(cfg.seed, f"rank{rank}"))
    # wc_learn = "validation": the weights' optimizer leaves the hyperparameters out; they
    # follow held-out batches instead (wc.hyper_step, first-order bilevel)
    bilevel = cfg.reparam == "wc" and cfg.wc_learn == "validation"
    groups = wc.param_groups(
        model, cfg.weight_decay, hyper_lr=cfg.wc_hyper_lr, with_hyperparameters=not bilevel,
        decay=cfg.decay_on,
    )
    hyper_opt = val_gen = None
    # "train": the hyperparameters see the training objective on held-out data; "plain" cross-
    # entropy also rewards sharper logits, which undoes label smoothing (a temperature effect)
    hyper_smoothing = cfg.label_smoothing if cfg.wc_hyper_loss == "train" else 0.0
    if bilevel:
        hyper_opt = torch.optim.Adam(wc.hyperparameters(model), lr=cfg.wc_hyper_lr or BILEVEL_HYPER_LR)
        val_gen = torch.Generator().manual_seed(_derived_seed(cfg.seed, "validation"))  # same on all ranks
        x_val, y_val = ds.val_x.to(dev), ds.val_y.to(dev)
        if not len(y_val):
            raise ConfigError("wc_learn: 'validation' needs a validation split (val_size >= 1)")
    opt, sched = _optimizer(cfg, groups, steps, model)

    start, step, history, position, best = 0, 0, [], None, BestEpoch()  # best: selection on val
    clock = {"train": 0.0, "wall": 0.0, "cpu": 0.0, "images": 0}
    if state is not None:  # resume: every tensor and generator exactly as it was saved
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        rng, saved_world = state["rng"], state.get("world", 1)
        same_world = saved_world == world and "ranks" in rng  # older checkpoints: no "ranks"
        torch.set_rng_state(rng["ranks"][rank].clone() if same_world else rng["torch"])  # no views
        order_gen.set_state(rng["order"])
        aug_gen.set_state(rng["augment"])
        if bilevel:
            hyper_opt.load_state_dict(state["hyper_optimizer"])
            val_gen.set_state(rng["validation"])
        position = state.get("position")  # set if the run stopped inside an epoch
        start, step = state["epoch"], state["step"] - (position["index"] if position else 0)
        history, clock = json.loads(state["history"]), json.loads(state["clock"])
        best.load_state_dict(state.get("best"))
        if saved_world != world:
            out.line(f"note: continuing a {saved_world}-process run with {world}: same data "
                     "order and augmentation, but dropout draws and rounding differ")
    net = distributed.wrap(model)  # trains; `model` (unwrapped) is what is saved and evaluated
    if rank == 0:
        if state is None:
            meta = _meta(shape, ds, companded, world)
            checkpoint.write_json(run_dir / "config.json", {**cfg.to_dict(), "meta": meta})
        _write_metrics(run_dir, history)
    where = f" from epoch {start + 1}, step {step + position['index']}" if position else ""
    out.line(
        f"{'resume' if state else 'train'} {cfg.dataset}/{cfg.model} reparam={cfg.reparam} "
        f"seed={cfg.seed}: {n} train / {len(ds.val_y)} val / {len(ds.test_y)} test, "
        f"{steps} steps/epoch x {cfg.epochs} epochs{where}"
        f"{f' on {world} processes' if world > 1 else ''} -> {run_dir}"
    )

    def save(epoch: int, steps_done: int, order: Tensor, inside: dict | None = None) -> None:
        """Checkpoint (rank 0 writes; every rank takes part: the RNG states are gathered)."""
        ranks = torch.stack(distributed.gather(torch.get_rng_state()))
        if rank == 0:
            checkpoint.save({
                "format": 1, "epoch": epoch, "step": steps_done, "world": world,
                "config": cfg.to_json(), "model": model.state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "ranks": ranks, "order": order,
                        "augment": aug_gen.get_state(),
                        **({"validation": val_gen.get_state()} if bilevel else {})},
                **({"hyper_optimizer": hyper_opt.state_dict()} if bilevel else {}),
                "shape": shape, "history": json.dumps(history), "clock": json.dumps(clock),
                "best": best.state_dict(),
                **({"position": inside} if inside else {}),
            }, run_dir)

    def tick(t0: float, c0: float, images: int) -> None:
        clock["wall"] += time.perf_counter() - t0
        clock["cpu"] += _cpu_since(c0)  # summed over the ranks
        clock["images"] += images

    # -- training loop: train an epoch, validate, log, checkpoint --
    augmenting, mixing = cfg.augment, cfg.mixup_alpha > 0
    for epoch in range(start + 1, cfg.epochs + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        net.train()
        order = order_gen.get_state()  # a mid-epoch checkpoint redraws `perm` from here
        perm = torch.randperm(n, generator=order_gen)
        first, lr = 0, opt.param_groups[0]["lr"]  # logged: the rate at the epoch's first step
        losses = []  # tensors per step, no sync; a NaN is traced to its step later
        correct = torch.zeros((), dtype=torch.long, device=dev)  # with mixup: the first label
        if position is not None:  # resume inside this epoch: rank 0 holds the sums so far
            first, lr, mine = position["index"], position["lr"], float(rank == 0)
            losses = list((position["losses"].to(dev) * mine).unbind())
            correct += position["correct"].to(dev) * int(mine)
            position = None
        bar = out.bar(epoch, cfg.epochs, steps)
        for i in range(first, steps):
            idx = perm[i * bs:(i + 1) * bs]  # the global batch; random draws are for all of it,
            x, y = x_train[idx], y_train[idx]  # on every rank, so N ranks see what 1 would
            if augmenting:
                x = augment.augment_batch(x, ds.augment_policy, aug_gen)
            if mixing:
                lam = _beta(cfg.mixup_alpha, aug_gen)
                partner = torch.randperm(len(y), generator=aug_gen)
                x, y_mix = lam * x + (1 - lam) * x[partner], y[partner]
            x, y = distributed.shard(x), distributed.shard(y)  # this rank's share
            with _weights_once(cfg):
                logits = net(x)
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
                if mixing:
                    loss = lam * loss + (1 - lam) * F.cross_entropy(
                        logits, distributed.shard(y_mix), label_smoothing=cfg.label_smoothing
                    )
                # logged: the data loss; trained: with the penalties on the weights
                objective = loss + _decay_penalty(cfg, model) + _kure_penalty(cfg, model)
            opt.zero_grad(set_to_none=True)
            objective.backward()
            opt.step()
            sched.step()
            if bilevel and (step + i + 1) % cfg.wc_hyper_every == 0:
                pick = torch.randint(len(y_val), (bs,), generator=val_gen, device=dev)
                xv, yv = x_val[pick], y_val[pick]
                distributed.broadcast_buffers(model)  # every rank: the same BN stats, same step
                wc.hyper_step(
                    model,
                    lambda: F.cross_entropy(model(xv), yv, label_smoothing=hyper_smoothing),  # noqa: B023
                    hyper_opt,
                )
            losses.append(loss.detach())
            correct += (logits.argmax(1) == y).sum()
            bar.update(1)
            if i + 1 < steps and distributed.any_rank(stop.signum is not None):
                clock["train"] += time.perf_counter() - t0
                tick(t0, c0, (i + 1 - first) * bs)
                sums = {"losses": distributed.all_sum(torch.stack(losses)),
                        "correct": distributed.all_sum(correct)}
                save(epoch - 1, step + i + 1, order,
                     {"epoch": epoch, "index": i + 1, "lr": lr, **sums})
                raise _interrupted(stop, run_dir, f"after step {step + i + 1} (epoch {epoch})")
        bar.close()
        clock["train"] += time.perf_counter() - t0
        losses = distributed.all_sum(torch.stack(losses))  # per step, summed over the ranks
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            k = int(bad[0, 0])
            raise NonFiniteLossError(epoch, step + k + 1, float(losses[k]) / world)
        step += steps
        train_loss = float(losses.sum()) / (steps * world)
        train_acc = float(distributed.all_sum(correct)) / (steps * bs)
        distributed.broadcast_buffers(model)  # all ranks evaluate (and save) rank 0's BN stats
        val_loss, val_acc = evaluate(model, ds.val_x, ds.val_y, cfg.eval_batch_size)
        best.update(epoch, val_acc, model)
        tick(t0, c0, (steps - first) * bs)
        record = {
            "epoch": epoch, "step": step, "train_loss": train_loss, "train_acc": train_acc,
            "val_loss": val_loss, "val_acc": val_acc, "lr": lr,
            "wc": _wc_hyper(model) if cfg.reparam == "wc" else {},
            **mechanism.epoch_metrics(model, ds, cfg.eval_batch_size),  # kurtosis, memorization
            "time": time.perf_counter() - t0,
        }
        history.append(record)
        if rank == 0:
            _write_metrics(run_dir, history)
        save(epoch, step, order_gen.get_state())
        out.row(record)
        if epoch < cfg.epochs and distributed.any_rank(stop.signum is not None):
            raise _interrupted(stop, run_dir, f"after epoch {epoch} (step {step})")

    # -- test: once, after the last epoch, on the last and on the best-validation weights --
    final = _test(cfg, model, ds, history, step, clock, best)
    if rank == 0:
        checkpoint.write_json(run_dir / "final.json", final)
    out.line(f"{_final_line(final)} -> {run_dir / 'final.json'}")
    return final


def load_data(cfg: TrainConfig) -> data.Dataset:
    """The config's data set, split and normalised, with its training/validation label noise."""
    try:
        ds = data.load_dataset(
            cfg.dataset, data_dir=cfg.data_dir, val_size=cfg.val_size, train_subset=cfg.train_subset
        )
    except data.DataError:
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
        elif cfg.reparam in ("weight_norm", "weight_std"):
            names = peers.apply_peer(model, cfg.reparam)
        else:
            names = []
    except (ValueError, TypeError) as err:
        raise ConfigError(f"model/reparam settings: {err}") from err
    return model, names


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy (no label smoothing) and accuracy on (x, y), in eval mode.

    Under torchrun every rank passes the whole set, evaluates its share, and the sums are
    reduced, so all ranks return the same numbers.
    """
    model.eval()
    n, dev = len(y), next(model.parameters()).device
    x, y = distributed.shard(x), distributed.shard(y)
    loss = torch.zeros((), dtype=torch.float64, device=dev)
    correct = torch.zeros((), dtype=torch.long, device=dev)
    with parametrize.cached():  # reparameterized weights are computed once, not per batch
        for i in range(0, len(y), batch_size):
            xb, yb = x[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev)
            logits = model(xb)
            loss += F.cross_entropy(logits, yb, reduction="sum").double()
            correct += (logits.argmax(1) == yb).sum()
    total = distributed.all_sum(torch.stack([loss, correct.double()]))
    return float(total[0]) / n, float(total[1]) / n


def load_model(run_dir: str | Path) -> nn.Module:
    """Rebuild a run's latest model: config -> model -> reparameterization -> weights (eval mode).

    For reports: the effective weights (``wc.weights``) are exactly those the run trained.
    """
    run_dir = Path(run_dir)
    state = checkpoint.load_latest(run_dir)
    if state is None:
        raise checkpoint.CheckpointError(f"{run_dir} has no checkpoint; was the run started?")
    cfg = TrainConfig.from_json(state["config"])
    torch.manual_seed(cfg.seed)
    model, _ = build_model(cfg, state["shape"])
    model.load_state_dict(state["model"])
    return model.eval()


# ---------------------------------------------------------------- helpers


def _open_shared(
    cfg: TrainConfig, run_dir: Path, resume: bool, rank: int, held: contextlib.ExitStack
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Rank 0 locks the run folder (until `held` closes) and checks it; every rank gets the
    result, or the error to raise, so no rank waits for a folder that was refused."""
    opened: Any = None
    if rank == 0:  # only rank 0 touches the folder; the other ranks get what it found
        try:
            held.enter_context(runlock.run_lock(run_dir))
            opened = _open_run_dir(cfg, run_dir, resume)
        except (ConfigError, checkpoint.CheckpointError, runfiles.RunFileError, OSError) as err:
            opened = err
    opened = distributed.broadcast(opened)
    if isinstance(opened, Exception):
        raise opened
    return opened


def _open_run_dir(
    cfg: TrainConfig, run_dir: Path, resume: bool
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Check the folder against `resume`; return (checkpoint or None, final.json or None).

    A missing config.json is restored from the checkpoint (which holds the same settings);
    an empty or corrupt final.json means the run has not finished, so it is resumed.
    """
    config_path = run_dir / "config.json"
    if not resume:
        if _holds_a_run(run_dir):
            raise RunFolderError(
                f"{run_dir} already holds a run; pass --resume to continue it, or choose "
                "another --out (or delete the folder)"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        return None, None
    state = checkpoint.load_latest(run_dir) if run_dir.is_dir() else None
    if config_path.exists():
        saved = runfiles.read_config(config_path)
    elif state is not None:
        saved = TrainConfig.from_json(state["config"])
    elif _holds_a_run(run_dir):
        raise RunFolderError(
            f"cannot resume {run_dir}: its config.json is missing and it has no checkpoint to "
            "restore it from; delete the folder to train the run again"
        )
    else:  # nothing written yet: resuming is starting
        run_dir.mkdir(parents=True, exist_ok=True)
        return None, None
    differ = [k for k in saved.resolved().diff(cfg) if k != "threads"]  # threads: machine only
    if differ:
        detail = ", ".join(f"{k} ({getattr(saved, k)!r} there, {getattr(cfg, k)!r} now)"
                           for k in differ)
        raise RunFolderError(
            f"cannot resume {run_dir}: its config differs in {detail}; use the same settings "
            "or another --out"
        )
    if not config_path.exists():
        restored = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        checkpoint.write_json(config_path, {**saved.to_dict(), "meta": {
            "restored_from": checkpoint.CHECKPOINT, "restored": restored}})
    return state, runfiles.read_final(run_dir)[0]


def _holds_a_run(run_dir: Path) -> bool:
    """Any of a run's files is there (a non-resume run refuses such a folder)."""
    return any((run_dir / name).exists() for name in runfiles.RUN_FILES)


def _write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """metrics.jsonl, rewritten whole (atomically) after every epoch: never half a line."""
    checkpoint.write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))


def _weights_once(cfg: TrainConfig) -> contextlib.AbstractContextManager:
    """With decay on the effective weight the loss reads every weight twice: compute it once."""
    return parametrize.cached() if cfg.decay_on == "effective" else contextlib.nullcontext()


def _decay_penalty(cfg: TrainConfig, model: nn.Module) -> Tensor | float:
    """``weight_decay/2 * ||f(v)||^2`` of the companded tensors when decay acts on the effective weight."""
    if cfg.decay_on != "effective" or cfg.weight_decay == 0:
        return 0.0
    return wc.effective_weight_decay(model, cfg.weight_decay)


def _kure_penalty(cfg: TrainConfig, model: nn.Module) -> Tensor | float:
    """The KURE peer (kure.py): kure * mean over layers of (kurtosis(w) - 1.8)^2."""
    return cfg.kure * kure.penalty(model) if cfg.kure else 0.0


def _optimizer(cfg: TrainConfig, groups: list[dict], steps: int, model: nn.Module) -> tuple[Any, Any]:
    """The config's optimizer over `groups` and its per-step schedule over the run's steps."""
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


def _test(
    cfg: TrainConfig, model: nn.Module, ds: data.Dataset, history: list[dict[str, Any]], step: int,
    clock: dict[str, Any], best: BestEpoch,
) -> dict[str, Any]:
    """final.json: test metrics of the last epoch's weights, then of the best validation
    epoch's (loaded into `model` last: the run is over, its checkpoint holds the last ones)."""
    t0, c0 = time.perf_counter(), time.process_time()
    test_loss, test_acc = evaluate(model, ds.test_x, ds.test_y, cfg.eval_batch_size)
    best_loss = best_acc = None  # None: resumed from a checkpoint that kept no best weights
    if best.model is not None:
        model.load_state_dict(best.model)
        best_loss, best_acc = evaluate(model, ds.test_x, ds.test_y, cfg.eval_batch_size)
    last = history[-1]
    return {
        "test_acc": test_acc, "test_loss": test_loss,
        "test_acc_best_val": best_acc, "test_loss_best_val": best_loss,
        "best_epoch": best.epoch, "best_val_acc": best.val_acc if best.model is not None else None,
        "val_acc": last["val_acc"], "val_loss": last["val_loss"],
        "train_acc": last["train_acc"], "train_loss": last["train_loss"],
        "epochs": cfg.epochs, "steps": step, "seed": cfg.seed,
        "wall_time": clock["wall"] + time.perf_counter() - t0,
        "cpu_time": clock["cpu"] + _cpu_since(c0),
        "images_per_second": clock["images"] / max(clock["train"], 1e-9),
    }


def _final_line(final: dict[str, Any]) -> str:
    best = (f"best val epoch {final['best_epoch']}: test acc {final['test_acc_best_val']:.4f}"
            if final["test_acc_best_val"] is not None else "no best-val weights kept")
    return (f"test_acc {final['test_acc']:.4f}  test_loss {final['test_loss']:.4f}  {best}  "
            f"({final['wall_time']:.1f} s, {final['images_per_second']:.0f} images/s)")


def _interrupted(stop: StopRequest, run_dir: Path, where: str) -> RunInterrupted:
    """The error that ends a stopped run, once every rank knows the checkpoint is on disk."""
    distributed.barrier()
    signum = stop.signum or signal.SIGTERM  # a rank that got no signal stops with the others
    return RunInterrupted(
        signum, f"stopped by {signal_name(signum)} {where}; "
        f"checkpoint written to {run_dir / checkpoint.CHECKPOINT}{RESUME_HINT}",
    )


def _cpu_since(c0: float) -> float:
    """CPU seconds since `c0`, summed over the ranks (each rank's own time in one process)."""
    return float(distributed.all_sum(torch.tensor(time.process_time() - c0, dtype=torch.float64)))


def _derived_seed(seed: int, name: str) -> int:
    """An independent seed per random stream, so streams never share a sequence."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") >> 1


def _beta(alpha: float, gen: torch.Generator) -> float:
    """A Beta(alpha, alpha) draw from `gen` (Jöhnk's method): torch.distributions takes no
    generator, and every random draw must come from a checkpointed one."""
    while True:
        u = torch.rand(2, 64, generator=gen, dtype=torch.float64).pow(1 / alpha)
        s = u.sum(0)
        ok = ((s <= 1) & (s > 0)).nonzero()
        if len(ok):
            k = int(ok[0, 0])
            return float(u[0, k] / s[k])


def _wc_hyper(model: nn.Module) -> dict[str, dict[str, float]]:
    return {row["name"]: row["hyperparameters"] for row in wc.stats(model)}


def _meta(
    shape: dict[str, Any], ds: data.Dataset, companded: list[str], world: int
) -> dict[str, Any]:
    try:
        from importlib.metadata import version

        pkg_version = version("weight-compander")
    except Exception:
        pkg_version = getattr(wc, "__version__", None)
    return {
        "version": pkg_version,
        "git_commit": _git_commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.platform()} ({platform.machine()}, {os.cpu_count()} CPUs, "
                   f"{torch.get_num_threads()} torch threads)",
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "processes": world,  # torchrun ranks; the batch size is the global one
        "data": {"source": ds.source, "train": len(ds.train_y), "val": len(ds.val_y),
                 "test": len(ds.test_y), **shape},
        "reparameterized": companded,
    }


def _git_commit() -> str | None:
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 and res.stdout.strip() else None

