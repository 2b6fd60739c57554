"""A training run's state as one object: what a checkpoint holds, saved and restored in one place.

The model, its optimizers and schedule, every random generator, the epoch and step counters,
the metrics history, the clock and the best validation epoch so far all live in a `Session`;
`save` writes exactly what `restore` reads back, so a resumed run ends with the metrics of an
uninterrupted one. Under torchrun every rank takes part in `save` (the RNG states of all
ranks are gathered) and rank 0 writes the file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from weight_compander.harness.config.settings import TrainConfig
from weight_compander.harness.run import distributed
from weight_compander.harness.run.best_val import BestEpoch
from weight_compander.harness.store import checkpoint

__all__ = ["Session", "derived_seed"]

CHECKPOINT_FORMAT = 1


def derived_seed(seed: int, name: str) -> int:
    """An independent seed per random stream, so streams never share a sequence."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") >> 1


def _new_clock() -> dict[str, Any]:
    return {"train": 0.0, "wall": 0.0, "cpu": 0.0, "images": 0}


@dataclass
class Session:
    """Everything a checkpoint of the run holds (see the module docstring)."""

    cfg: TrainConfig
    model: nn.Module  # unwrapped: what is saved and evaluated
    opt: torch.optim.Optimizer
    sched: Any
    shape: dict[str, Any]  # the model's input and output sizes, to rebuild it
    order_gen: torch.Generator  # the data order
    aug_gen: torch.Generator  # augmentation and mixup
    hyper_opt: torch.optim.Optimizer | None = None  # wc_learn = "validation" only
    val_gen: torch.Generator | None = None  # its validation batches
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps at the start of the epoch after `epoch`
    history: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl rows
    clock: dict[str, Any] = field(default_factory=_new_clock)  # seconds and images so far
    best: BestEpoch = field(default_factory=BestEpoch)  # selection on validation
    position: dict[str, Any] | None = None  # where a stopped run stopped inside the next epoch

    @property
    def bilevel(self) -> bool:
        """The hyperparameters follow held-out batches (wc_learn = "validation")."""
        return self.hyper_opt is not None

    def save(self, run_dir: Path, order: Tensor, *, step: int | None = None,
             inside: dict[str, Any] | None = None) -> None:
        """Checkpoint after `self.epoch` (+ `inside`: the position within the next epoch).

        `order`: the data-order generator's state at the start of the epoch in progress (a
        mid-epoch checkpoint redraws the permutation from it); `step`: the optimizer steps
        done (default: `self.step`).
        """
        rank, world = distributed.rank_world()
        ranks = torch.stack(distributed.gather(torch.get_rng_state()))
        if rank != 0:
            return
        bilevel = self.bilevel
        checkpoint.save({
            "format": CHECKPOINT_FORMAT, "epoch": self.epoch,
            "step": self.step if step is None else step, "world": world,
            "config": self.cfg.to_json(), "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "ranks": ranks, "order": order,
                    "augment": self.aug_gen.get_state(),
                    **({"validation": self.val_gen.get_state()} if bilevel else {})},
            **({"hyper_optimizer": self.hyper_opt.state_dict()} if bilevel else {}),
            "shape": self.shape, "history": json.dumps(self.history), "clock": json.dumps(self.clock),
            "best": self.best.state_dict(),
            **({"position": inside} if inside else {}),
        }, run_dir)

    def restore(self, state: dict[str, Any], log: Callable[[str], None]) -> None:
        """Every tensor and generator exactly as `save` wrote it; `log` gets a note when the
        number of processes changed (same data order, other dropout draws and rounding)."""
        rank, world = distributed.rank_world()
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        rng, saved_world = state["rng"], state.get("world", 1)
        same_world = saved_world == world and "ranks" in rng  # older checkpoints: no "ranks"
        torch.set_rng_state(rng["ranks"][rank].clone() if same_world else rng["torch"])  # no views
        self.order_gen.set_state(rng["order"])
        self.aug_gen.set_state(rng["augment"])
        if self.bilevel:
            self.hyper_opt.load_state_dict(state["hyper_optimizer"])
            self.val_gen.set_state(rng["validation"])
        self.position = state.get("position")  # set if the run stopped inside an epoch
        self.epoch = state["epoch"]
        self.step = state["step"] - (self.position["index"] if self.position else 0)
        self.history, self.clock = json.loads(state["history"]), json.loads(state["clock"])
        self.best.load_state_dict(state.get("best"))
        if saved_world != world:
            log(f"note: continuing a {saved_world}-process run with {world}: same data "
                "order and augmentation, but dropout draws and rounding differ")
