"""Mechanism measurements: memorization of wrong labels per epoch, and each layer's kurtosis."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from weight_compander.harness.config.settings import TrainConfig
from weight_compander.harness.ingredients import data
from weight_compander.harness.run import metrics, restore, train

TINY = dict(dataset="digits", model="mlp", epochs=2, batch_size=64, train_subset=400,
            val_size=100, threads=1, eval_batch_size=256)


def test_label_noise_records_the_true_labels_of_the_flipped_examples():
    clean = data.load_dataset("digits", val_size=100, train_subset=400)
    noisy = restore.load_data(TrainConfig(**TINY, label_noise=0.3))
    assert torch.equal(noisy.train_y_clean, clean.train_y)
    flipped = metrics.flipped_subset(noisy)
    assert torch.equal(flipped, (noisy.train_y != clean.train_y).nonzero().flatten())
    assert len(flipped) == 120
    few = metrics.flipped_subset(noisy, limit=50)  # a fixed subset of them, in order
    assert len(few) == 50 and set(few.tolist()) <= set(flipped.tolist())
    assert torch.equal(few, few.sort().values) and torch.equal(few, metrics.flipped_subset(noisy, 50))
    assert clean.train_y_clean is None and not len(metrics.flipped_subset(clean))


def _lookup_dataset(n: int, k: int) -> data.Dataset:
    """Example i is the one-hot vector e_i, so a Linear layer can answer any label per example."""
    true = torch.arange(n) % k
    noisy = true.clone()
    noisy[::2] = (true[::2] + 1) % k  # every second example flipped
    eye = torch.eye(n).unsqueeze(1)
    return data.Dataset("fake", eye, noisy, eye[:0], noisy[:0], eye[:0], noisy[:0], k, 1, (n,),
                        "none", "test", (0.0,), (1.0,), train_y_clean=true)


@pytest.mark.parametrize("answer", ["noisy", "true"])
def test_memorization_is_the_share_of_flipped_examples_predicted_as_their_wrong_label(answer):
    ds = _lookup_dataset(10, 3)
    labels = ds.train_y if answer == "noisy" else ds.train_y_clean
    model = nn.Sequential(nn.Flatten(), nn.Linear(10, 3, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(nn.functional.one_hot(labels, 3).T.float())
    out = metrics.epoch_metrics(model, ds, batch_size=3)
    assert out["noisy_memorized"] == (1.0 if answer == "noisy" else 0.0)
    assert out["noisy_true"] == (0.0 if answer == "noisy" else 1.0)
    assert list(out["kurtosis"]) == ["1.weight"]
    assert not model.training  # measured in eval mode


def test_a_noisy_run_logs_memorization_per_epoch_and_a_clean_run_does_not(tmp_path):
    train.run(TrainConfig(**TINY, label_noise=0.4), tmp_path / "noisy", progress="quiet")
    train.run(TrainConfig(**TINY), tmp_path / "clean", progress="quiet")
    rows = [json.loads(x) for x in (tmp_path / "noisy" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert 0 <= r["noisy_memorized"] <= 1 and 0 <= r["noisy_true"] <= 1
        assert r["noisy_memorized"] + r["noisy_true"] <= 1  # a prediction is one class
        assert list(r["kurtosis"]) == ["1.weight", "4.weight", "7.weight"]  # the mlp's Linear layers
    clean = [json.loads(x) for x in (tmp_path / "clean" / "metrics.jsonl").read_text().splitlines()]
    assert all("noisy_memorized" not in r and len(r["kurtosis"]) == 3 for r in clean)
