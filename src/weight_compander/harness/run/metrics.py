"""What a run measures after each epoch: loss and accuracy, and the mechanism entries.

`evaluate` gives the mean cross-entropy and accuracy of a model on a split (validation after
every epoch, test once at the end). `epoch_metrics` adds the mechanism measurements to each
metrics.jsonl row:

- **memorization** (label-noise runs): once per epoch, in eval mode, the run predicts its
  *flipped* training examples (those label_noise.py gave a wrong label; at most
  `MEMORIZATION_SAMPLE` of them, a fixed subset) and records the share predicted as the
  wrong label (``noisy_memorized``) and as the true one (``noisy_true``).
- **weight shape** (quantization): the kurtosis of each Linear/Conv layer's effective weight
  (``kurtosis``, ingredients/kure.py).

The report's figure and table of them are in report/mechanism.py.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from weight_compander.harness.ingredients import kure
from weight_compander.harness.ingredients.data import Dataset
from weight_compander.harness.run import distributed

__all__ = ["MEMORIZATION_SAMPLE", "epoch_metrics", "evaluate", "flipped_subset"]

MEMORIZATION_SAMPLE = 2000  # flipped examples measured per epoch: ±1.1 pp at most, a few % of an epoch
SAMPLE_SEED = 4_242  # constant: every epoch, seed and variant measure the same examples


def flipped_subset(ds: Dataset, limit: int = MEMORIZATION_SAMPLE) -> torch.Tensor:
    """Indices of (at most `limit`) training examples whose label noise changed; empty without."""
    if ds.train_y_clean is None:
        return torch.zeros(0, dtype=torch.long)
    idx = (ds.train_y != ds.train_y_clean).nonzero().flatten()
    if len(idx) > limit:
        pick = torch.randperm(len(idx), generator=torch.Generator().manual_seed(SAMPLE_SEED))[:limit]
        idx = idx[pick.sort().values]
    return idx


@torch.no_grad()
def epoch_metrics(model: nn.Module, ds: Dataset, batch_size: int) -> dict[str, Any]:
    """The per-epoch mechanism entries of a metrics.jsonl row (see the module docstring).

    Leaves `model` in eval mode (the training loop sets train mode at each epoch's start).
    """
    out: dict[str, Any] = {"kurtosis": kure.kurtoses(model)}
    idx = flipped_subset(ds)
    if not len(idx):
        return out
    model.eval()
    dev = next(model.parameters()).device
    noisy, true = ds.train_y[idx], ds.train_y_clean[idx]
    preds = []
    with parametrize.cached():
        for i in range(0, len(idx), batch_size):
            preds.append(model(ds.train_x[idx[i:i + batch_size]].to(dev)).argmax(1).cpu())
    pred = torch.cat(preds)
    out["noisy_memorized"] = float((pred == noisy).double().mean())
    out["noisy_true"] = float((pred == true).double().mean())
    return out


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

