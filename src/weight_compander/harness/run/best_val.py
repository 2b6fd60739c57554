"""Selection on validation: keep the weights of the best validation epoch, test them once.

Early stopping as a user does it: after every epoch the validation accuracy decides whether
this epoch's weights are the best so far; after the last epoch the kept weights are evaluated
on the test set once, beside the final epoch's. With label noise (ingredients/label_noise.py) the
validation labels are as noisy as the training labels, so this is the honest version.

The best epoch is the *first* epoch with the highest ``val_acc`` in metrics.jsonl (a later
tie does not replace it). The kept weights are part of every checkpoint (``"best"``), so a
resumed run selects exactly what an uninterrupted one does.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

__all__ = ["BestEpoch"]


class BestEpoch:
    """The best validation epoch so far and a CPU copy of its model state."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.val_acc = -math.inf
        self.model: dict[str, Any] | None = None

    def update(self, epoch: int, val_acc: float, model: nn.Module) -> bool:
        """Keep `model`'s state if `val_acc` beats every earlier epoch; True if it did."""
        if not val_acc > self.val_acc:
            return False
        self.epoch, self.val_acc = epoch, val_acc
        self.model = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return True

    def state_dict(self) -> dict[str, Any]:
        """Plain data and tensors, for the checkpoint (loads with ``weights_only=True``)."""
        return {"epoch": self.epoch, "val_acc": self.val_acc, "model": self.model}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore from a checkpoint; None (a checkpoint written before this existed) starts over,
        so such a run selects among the epochs it trains after resuming (none left: final.json
        gets None for the best-validation fields)."""
        if state is not None:
            self.epoch, self.val_acc, self.model = state["epoch"], state["val_acc"], state["model"]
