"""Training-label noise: wrong labels on purpose, to measure how much a network memorizes them.

A share ``rate`` of the training labels, and the same share of the validation labels, is
replaced by a wrong class; the test labels are never touched, so test accuracy measures what
the network learned of the true classes. Validation labels are noisy too because a real
user's validation split is carved from the same noisy data, so selecting the best epoch on
validation (run/best_val.py) gets no clean signal a user would not have.

Two kinds (the usual pair in the noisy-label literature, e.g. Han et al. 2018, "Co-teaching"):

- ``symmetric``: each chosen label becomes a uniformly random *other* class.
- ``pairflip``: each chosen label ``c`` becomes ``(c + 1) mod K``, one fixed other class, the
  harder, structured case (a consistent confusion can be learned as a rule).

Exactly ``round(rate · n)`` labels of a split of ``n`` change, chosen by a seeded permutation.
The noise seed is a constant of this module, not the run's seed: every seed and variant of a
comparison sees the same wrong labels, so differences between variants stay paired.
"""

from __future__ import annotations

import dataclasses
import hashlib

import torch
from torch import Tensor

from weight_compander.harness.errors import LabelNoiseError
from weight_compander.harness.ingredients.data import Dataset

__all__ = ["KINDS", "NOISE_SEED", "apply_label_noise", "noisy_labels"]

KINDS = ("symmetric", "pairflip")
NOISE_SEED = 7_654_321  # constant on purpose: the wrong labels must not depend on the run's seed




def noisy_labels(
    y: Tensor, rate: float, kind: str, num_classes: int, *, stream: str = "train"
) -> tuple[Tensor, Tensor]:
    """Replace ``round(rate · len(y))`` labels by wrong ones; return (new labels, changed indices).

    Args:
        y: int64 labels in ``[0, num_classes)``; not modified.
        rate: share of labels to change, in ``[0, 1)``.
        kind: ``"symmetric"`` (a uniformly random other class) or ``"pairflip"`` (``c → c+1 mod K``).
        num_classes: K; pairflip needs K ≥ 3 (with two classes it is the symmetric kind, and
            the two would be one experiment under two names).
        stream: names the split ("train", "val"), so each split has its own draw.

    Raises:
        LabelNoiseError: rate outside [0, 1), unknown kind, pairflip with fewer than 3 classes.
    """
    check(rate, kind, num_classes)
    n = len(y)
    k = round(rate * n)
    seed = int.from_bytes(hashlib.sha256(f"{NOISE_SEED}:{stream}".encode()).digest()[:8], "little") >> 1
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=gen)[:k].sort().values
    out = y.clone()
    if kind == "symmetric":  # an offset in 1..K-1 never lands on the true class
        offset = torch.randint(1, num_classes, (k,), generator=gen)
    else:
        offset = torch.ones(k, dtype=torch.long)
    out[idx] = (y[idx] + offset) % num_classes
    return out, idx


def check(rate: float, kind: str, num_classes: int | None = None) -> None:
    """Raise LabelNoiseError for a rate outside [0, 1), an unknown kind, or pairflip on K < 3."""
    if not 0.0 <= rate < 1.0:
        raise LabelNoiseError(f"label_noise: must be in [0, 1), got {rate}")
    if kind not in KINDS:
        raise LabelNoiseError(f"label_noise_kind: {kind!r} is not one of {', '.join(KINDS)}")
    if num_classes is not None and kind == "pairflip" and rate > 0 and num_classes < 3:
        raise LabelNoiseError(
            f"label_noise_kind: 'pairflip' needs at least 3 classes, this data set has {num_classes}; "
            "use 'symmetric' (with 2 classes the two kinds are the same)"
        )


def apply_label_noise(ds: Dataset, rate: float, kind: str) -> Dataset:
    """The data set with noisy training and validation labels (test labels untouched).

    ``source`` gains a note with the number of changed labels, so a run's config.json says
    what it trained on; ``train_y_clean`` keeps the true training labels, so a run can measure
    how many wrong ones it memorizes (run/metrics.py). A rate of 0 returns `ds` itself.
    """
    check(rate, kind, ds.num_classes)
    if rate == 0:
        return ds
    train_y, train_idx = noisy_labels(ds.train_y, rate, kind, ds.num_classes, stream="train")
    val_y, val_idx = noisy_labels(ds.val_y, rate, kind, ds.num_classes, stream="val")
    note = (f"; label noise {rate:g} {kind}: {len(train_idx)} of {len(train_y)} training and "
            f"{len(val_idx)} of {len(val_y)} validation labels changed, test labels clean")
    return dataclasses.replace(ds, train_y=train_y, val_y=val_y, source=ds.source + note,
                               train_y_clean=ds.train_y)
