"""The steps of a run, in the order they happen: train an epoch, close it, test once at the end.

Batches are sliced from a seeded permutation of tensors in memory; every random draw
(order, augmentation, mixup, validation batches) comes from a generator the `Session`
checkpoints. Under torchrun each rank trains on its shard of every global batch, so N ranks
see what one process would; the random draws are made for the whole batch on every rank.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import weight_compander as wc
from weight_compander.harness.config.settings import TrainConfig
from weight_compander.harness.errors import NonFiniteLossError, RunInterrupted
from weight_compander.harness.ingredients import augment
from weight_compander.harness.ingredients.data import Dataset
from weight_compander.harness.run import distributed, objective
from weight_compander.harness.run.metrics import epoch_metrics, evaluate
from weight_compander.harness.run.progress import Progress
from weight_compander.harness.run.session import Session
from weight_compander.harness.run.stopping import StopRequest, signal_name
from weight_compander.harness.store import checkpoint

__all__ = ["RESUME_HINT", "Batches", "close_epoch", "final_line", "test", "train_epoch"]

RESUME_HINT = ". Continue with --resume (same settings and --out)"


@dataclass
class Batches:
    """The training (and, for wc_learn = "validation", validation) tensors on the device."""

    ds: Dataset
    x: Tensor
    y: Tensor
    batch_size: int  # the global batch; the remainder of an epoch is dropped
    x_val: Tensor | None = None
    y_val: Tensor | None = None

    @property
    def steps(self) -> int:
        return len(self.y) // self.batch_size


def train_epoch(s: Session, net: nn.Module, b: Batches, epoch: int, stop: StopRequest,
                run_dir: Path, out: Progress) -> dict[str, Any]:
    """One pass over the training set; returns the epoch's loss/accuracy/lr and timings.

    A stop signal ends it after the current step with a checkpoint (`RunInterrupted`);
    a NaN/inf loss with `NonFiniteLossError` (the last epoch's checkpoint is kept).
    """
    cfg, world = s.cfg, distributed.rank_world()[1]
    dev, bs, steps = b.x.device, b.batch_size, b.steps
    t0, c0 = time.perf_counter(), time.process_time()
    net.train()
    order = s.order_gen.get_state()  # a mid-epoch checkpoint redraws `perm` from here
    perm = torch.randperm(len(b.y), generator=s.order_gen)
    first, lr = 0, s.opt.param_groups[0]["lr"]  # logged: the rate at the epoch's first step
    losses: list[Tensor] = []  # tensors per step, no sync; a NaN is traced to its step later
    correct = torch.zeros((), dtype=torch.long, device=dev)  # with mixup: the first label
    if s.position is not None:  # resume inside this epoch: rank 0 holds the sums so far
        first, lr, mine = s.position["index"], s.position["lr"], float(distributed.rank_world()[0] == 0)
        losses = list((s.position["losses"].to(dev) * mine).unbind())
        correct += s.position["correct"].to(dev) * int(mine)
        s.position = None
    bar = out.bar(epoch, cfg.epochs, steps)
    for i in range(first, steps):
        loss, logits, y = _step(s, net, b, perm[i * bs:(i + 1) * bs], s.step + i + 1)
        losses.append(loss.detach())
        correct += (logits.argmax(1) == y).sum()
        bar.update(1)
        if i + 1 < steps and distributed.any_rank(stop.signum is not None):
            s.clock["train"] += time.perf_counter() - t0
            _tick(s, t0, c0, (i + 1 - first) * bs)
            sums = {"losses": distributed.all_sum(torch.stack(losses)),
                    "correct": distributed.all_sum(correct)}
            s.save(run_dir, order, step=s.step + i + 1,
                   inside={"epoch": epoch, "index": i + 1, "lr": lr, **sums})
            raise interrupted(stop, run_dir, f"after step {s.step + i + 1} (epoch {epoch})")
    bar.close()
    s.clock["train"] += time.perf_counter() - t0
    summed = distributed.all_sum(torch.stack(losses))  # per step, summed over the ranks
    bad = (~torch.isfinite(summed)).nonzero()
    if len(bad):
        k = int(bad[0, 0])
        raise NonFiniteLossError(epoch, s.step + k + 1, float(summed[k]) / world)
    s.step += steps
    return {"train_loss": float(summed.sum()) / (steps * world),
            "train_acc": float(distributed.all_sum(correct)) / (steps * bs), "lr": lr,
            "t0": t0, "c0": c0, "images": (steps - first) * bs}


def _step(s: Session, net: nn.Module, b: Batches, idx: Tensor, step: int) -> tuple[Tensor, Tensor, Tensor]:
    """One optimizer step on the global batch `idx`; returns this rank's loss, logits and labels."""
    cfg, model = s.cfg, s.model
    x, y = b.x[idx], b.y[idx]  # the global batch; random draws are for all of it,
    if cfg.augment:  # on every rank, so N ranks see what 1 would
        x = augment.augment_batch(x, b.ds.augment_policy, s.aug_gen)
    mixing = cfg.mixup_alpha > 0
    if mixing:
        lam = _beta(cfg.mixup_alpha, s.aug_gen)
        partner = torch.randperm(len(y), generator=s.aug_gen)
        x, y_mix = lam * x + (1 - lam) * x[partner], y[partner]
    x, y = distributed.shard(x), distributed.shard(y)  # this rank's share
    with objective.weights_once(cfg):
        logits = net(x)
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        if mixing:
            loss = lam * loss + (1 - lam) * F.cross_entropy(
                logits, distributed.shard(y_mix), label_smoothing=cfg.label_smoothing
            )
        # logged: the data loss; trained: with the penalties on the weights
        trained = loss + objective.decay_penalty(cfg, model) + objective.kure_penalty(cfg, model)
    s.opt.zero_grad(set_to_none=True)
    trained.backward()
    s.opt.step()
    s.sched.step()
    if s.bilevel and step % cfg.wc_hyper_every == 0:
        _hyper_step(s, b)
    return loss, logits, y


def _hyper_step(s: Session, b: Batches) -> None:
    """One step of the hyperparameters on a held-out batch (wc.hyper_step, first-order bilevel)."""
    dev = b.x.device
    pick = torch.randint(len(b.y_val), (b.batch_size,), generator=s.val_gen, device=dev)
    xv, yv = b.x_val[pick], b.y_val[pick]
    distributed.broadcast_buffers(s.model)  # every rank: the same BN stats, same step
    smoothing = objective.hyper_smoothing(s.cfg)
    wc.hyper_step(
        s.model, lambda: F.cross_entropy(s.model(xv), yv, label_smoothing=smoothing), s.hyper_opt,
    )


def close_epoch(s: Session, b: Batches, epoch: int, trained: dict[str, Any]) -> dict[str, Any]:
    """Validate, keep the best weights, and return the epoch's metrics.jsonl row (appended)."""
    cfg, model, ds = s.cfg, s.model, b.ds
    distributed.broadcast_buffers(model)  # all ranks evaluate (and save) rank 0's BN stats
    val_loss, val_acc = evaluate(model, ds.val_x, ds.val_y, cfg.eval_batch_size)
    s.best.update(epoch, val_acc, model)
    _tick(s, trained["t0"], trained["c0"], trained["images"])
    record = {
        "epoch": epoch, "step": s.step, "train_loss": trained["train_loss"],
        "train_acc": trained["train_acc"], "val_loss": val_loss, "val_acc": val_acc, "lr": trained["lr"],
        "wc": _wc_hyper(model) if cfg.reparam == "wc" else {},
        **epoch_metrics(model, ds, cfg.eval_batch_size),  # kurtosis, memorization
        "time": time.perf_counter() - trained["t0"],
    }
    s.history.append(record)
    s.epoch = epoch
    return record


def test(s: Session, ds: Dataset) -> dict[str, Any]:
    """final.json: test metrics of the last epoch's weights, then of the best validation
    epoch's (loaded into the model last: the run is over, its checkpoint holds the last ones)."""
    cfg, model, best, clock = s.cfg, s.model, s.best, s.clock
    t0, c0 = time.perf_counter(), time.process_time()
    test_loss, test_acc = evaluate(model, ds.test_x, ds.test_y, cfg.eval_batch_size)
    best_loss = best_acc = None  # None: resumed from a checkpoint that kept no best weights
    if best.model is not None:
        model.load_state_dict(best.model)
        best_loss, best_acc = evaluate(model, ds.test_x, ds.test_y, cfg.eval_batch_size)
    last = s.history[-1]
    return {
        "test_acc": test_acc, "test_loss": test_loss,
        "test_acc_best_val": best_acc, "test_loss_best_val": best_loss,
        "best_epoch": best.epoch, "best_val_acc": best.val_acc if best.model is not None else None,
        "val_acc": last["val_acc"], "val_loss": last["val_loss"],
        "train_acc": last["train_acc"], "train_loss": last["train_loss"],
        "epochs": cfg.epochs, "steps": s.step, "seed": cfg.seed,
        "wall_time": clock["wall"] + time.perf_counter() - t0,
        "cpu_time": clock["cpu"] + _cpu_since(c0),
        "images_per_second": clock["images"] / max(clock["train"], 1e-9),
    }


def final_line(final: dict[str, Any]) -> str:
    """The console's last line of a run."""
    best = (f"best val epoch {final['best_epoch']}: test acc {final['test_acc_best_val']:.4f}"
            if final["test_acc_best_val"] is not None else "no best-val weights kept")
    return (f"test_acc {final['test_acc']:.4f}  test_loss {final['test_loss']:.4f}  {best}  "
            f"({final['wall_time']:.1f} s, {final['images_per_second']:.0f} images/s)")


def interrupted(stop: StopRequest, run_dir: Path, where: str) -> RunInterrupted:
    """The error that ends a stopped run, once every rank knows the checkpoint is on disk."""
    distributed.barrier()
    signum = stop.signum or signal.SIGTERM  # a rank that got no signal stops with the others
    return RunInterrupted(
        signum, f"stopped by {signal_name(signum)} {where}; "
        f"checkpoint written to {run_dir / checkpoint.CHECKPOINT}{RESUME_HINT}",
    )


def _tick(s: Session, t0: float, c0: float, images: int) -> None:
    s.clock["wall"] += time.perf_counter() - t0
    s.clock["cpu"] += _cpu_since(c0)  # summed over the ranks
    s.clock["images"] += images


def _cpu_since(c0: float) -> float:
    """CPU seconds since `c0`, summed over the ranks (each rank's own time in one process)."""
    return float(distributed.all_sum(torch.tensor(time.process_time() - c0, dtype=torch.float64)))


def _beta(alpha: float, gen: torch.Generator) -> float:
    """A Beta(alpha, alpha) draw from `gen` (Jöhnk's method): torch.distributions takes no
    generator, and every random draw must come from a checkpointed one."""
    while True:
        u = torch.rand(2, 64, generator=gen, dtype=torch.float64).pow(1 / alpha)
        total = u.sum(0)
        ok = ((total <= 1) & (total > 0)).nonzero()
        if len(ok):
            k = int(ok[0, 0])
            return float(u[0, k] / total[k])


def _wc_hyper(model: nn.Module) -> dict[str, dict[str, float]]:
    return {row["name"]: row["hyperparameters"] for row in wc.stats(model)}


def data_on(ds: Dataset, cfg: TrainConfig, dev: torch.device) -> Batches:
    """The run's tensors on `dev`, with its global batch size."""
    x, y = ds.train_x.to(dev), ds.train_y.to(dev)
    b = Batches(ds, x, y, min(cfg.batch_size, len(y)))
    if objective.bilevel(cfg):
        b.x_val, b.y_val = ds.val_x.to(dev), ds.val_y.to(dev)
    return b
