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
from pathlib import Path
from typing import Any

import torch

from weight_compander.harness.config.settings import TrainConfig
from weight_compander.harness.errors import ConfigError
from weight_compander.harness.run import distributed, folder, loop, objective
from weight_compander.harness.run.progress import Progress
from weight_compander.harness.run.restore import build_model, load_data
from weight_compander.harness.run.session import Session, derived_seed
from weight_compander.harness.run.stopping import StopRequest
from weight_compander.harness.store import checkpoint

__all__ = ["run"]


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

    The run folder is locked for the run's life (store/runlock.py): a folder another process
    is training is refused with `RunBusyError`.

    Raises:
        ConfigError / RunFolderError / DataError: bad settings, folder or data.
        RunBusyError: another process is training this run folder.
        RunFileError: a damaged config.json (the message says what to do).
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
    state, done = folder.open_shared(cfg, run_dir, resume, rank, held)
    if done is not None:
        out.line(f"{run_dir} is complete; final metrics from {run_dir / 'final.json'}")
        return done
    s, batches, net, companded = _start(cfg, state, out)
    if rank == 0:
        if state is None:
            meta = folder.run_meta(s.shape, batches.ds, companded, world)
            folder.write_config(run_dir, cfg, meta)
        folder.write_metrics(run_dir, s.history)
    out.line(_start_line(s, batches, run_dir, resumed=state is not None))
    for epoch in range(s.epoch + 1, cfg.epochs + 1):
        trained = loop.train_epoch(s, net, batches, epoch, stop, run_dir, out)
        record = loop.close_epoch(s, batches, epoch, trained)
        if rank == 0:
            folder.write_metrics(run_dir, s.history)
        s.save(run_dir, s.order_gen.get_state())
        out.row(record)
        if epoch < cfg.epochs and distributed.any_rank(stop.signum is not None):
            raise loop.interrupted(stop, run_dir, f"after epoch {epoch} (step {s.step})")
    # -- test: once, after the last epoch, on the last and on the best-validation weights --
    final = loop.test(s, batches.ds)
    if rank == 0:
        checkpoint.write_json(run_dir / "final.json", final)
    out.line(f"{loop.final_line(final)} -> {run_dir / 'final.json'}")
    return final


def _start(
    cfg: TrainConfig, state: dict[str, Any] | None, out: Progress
) -> tuple[Session, loop.Batches, Any, list[str]]:
    """Data, model, optimizers and generators, seeded, or restored from `state` (a checkpoint);
    returns the session, the batches on the device, the model to train (wrapped under torchrun)
    and the names of the reparameterized tensors."""
    rank, world = distributed.rank_world()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    dev = distributed.device()
    torch.manual_seed(cfg.seed)  # init and dropout; data order and augmentation have their own
    order_gen = torch.Generator().manual_seed(derived_seed(cfg.seed, "order"))
    aug_gen = torch.Generator().manual_seed(derived_seed(cfg.seed, "augment"))
    ds = load_data(cfg)
    batches = loop.data_on(ds, cfg, dev)
    distributed.check_batch_size(batches.batch_size, world)
    shape = {"in_channels": ds.in_channels, "input_size": list(batches.x.shape[2:]),
             "num_classes": ds.num_classes}  # input_size (H, W) or (L,): plain data for JSON
    model, companded = build_model(cfg, shape)
    model.to(dev)
    if world > 1:  # every rank its own dropout stream (init above is the same on all)
        torch.manual_seed(derived_seed(cfg.seed, f"rank{rank}"))
    hyper_opt = objective.hyper_optimizer(cfg, model)
    val_gen = None
    if hyper_opt is not None:
        val_gen = torch.Generator().manual_seed(derived_seed(cfg.seed, "validation"))  # same on all ranks
        if not len(batches.y_val):
            raise ConfigError("wc_learn: 'validation' needs a validation split (val_size >= 1)")
    opt, sched = objective.optimizer(cfg, model, batches.steps)
    s = Session(cfg, model, opt, sched, shape, order_gen, aug_gen, hyper_opt, val_gen)
    if state is not None:  # resume: every tensor and generator exactly as it was saved
        s.restore(state, out.line)
    return s, batches, distributed.wrap(model), companded  # the wrapped model trains; `model` is saved


def _start_line(s: Session, b: loop.Batches, run_dir: Path, *, resumed: bool) -> str:
    cfg, world, ds = s.cfg, distributed.rank_world()[1], b.ds
    where = f" from epoch {s.epoch + 1}, step {s.step + s.position['index']}" if s.position else ""
    return (
        f"{'resume' if resumed else 'train'} {cfg.dataset}/{cfg.model} reparam={cfg.reparam} "
        f"seed={cfg.seed}: {len(b.y)} train / {len(ds.val_y)} val / {len(ds.test_y)} test, "
        f"{b.steps} steps/epoch x {cfg.epochs} epochs{where}"
        f"{f' on {world} processes' if world > 1 else ''} -> {run_dir}"
    )
