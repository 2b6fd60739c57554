"""Selection on validation: the best epoch is the one metrics.jsonl says, its weights are the
ones tested, and a resumed run selects the same."""

from __future__ import annotations

import json

import pytest
import torch

from weight_compander.harness.config.settings import TrainConfig
from weight_compander.harness.run import loop, metrics, restore, train
from weight_compander.harness.store import checkpoint

TINY = dict(dataset="digits", model="mlp", epochs=4, batch_size=64, train_subset=300,
            val_size=100, threads=1, schedule="constant", lr=0.1)


def scripted_validation(monkeypatch, accuracies):
    """Validation accuracy per epoch as given (test evaluations stay real)."""
    real, calls = metrics.evaluate, []

    def evaluate(model, x, y, batch_size):
        loss, acc = real(model, x, y, batch_size)
        if len(y) == TINY["val_size"]:
            calls.append(1)
            return loss, accuracies[len(calls) - 1]
        return loss, acc

    monkeypatch.setattr(loop, "evaluate", evaluate)


def killed_after_epoch(cfg, run_dir, epoch, monkeypatch, keep_best=True):
    """Start a run that is killed right after `epoch`'s checkpoint (without "best" on request)."""
    real_save = checkpoint.save

    def save_then_die(state, where):
        if not keep_best:
            state.pop("best")
        real_save(state, where)
        if state["epoch"] == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg, run_dir, progress="quiet")
    monkeypatch.undo()


def test_best_epoch_is_the_first_highest_val_acc_and_its_weights_are_tested(tmp_path, monkeypatch):
    scripted_validation(monkeypatch, [0.5, 0.8, 0.7, 0.8])  # a later tie does not replace epoch 2
    final = train.run(TrainConfig(**TINY), tmp_path / "r", progress="quiet")
    monkeypatch.undo()
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_acc"] for r in rows]
    assert final["best_epoch"] == rows[vals.index(max(vals))]["epoch"] == 2
    assert final["best_val_acc"] == 0.8 and final["val_acc"] == 0.8  # the last epoch's, from epoch 4

    state = checkpoint.load_latest(tmp_path / "r")
    assert state["best"]["epoch"] == 2
    assert any(not torch.equal(state["best"]["model"][k], state["model"][k]) for k in state["model"])
    model = restore.load_model(tmp_path / "r")  # the last epoch's weights
    ds = restore.load_data(TrainConfig(**TINY))
    assert metrics.evaluate(model, ds.test_x, ds.test_y, 1024) == (final["test_loss"], final["test_acc"])
    model.load_state_dict(state["best"]["model"])
    assert metrics.evaluate(model, ds.test_x, ds.test_y, 1024) == (
        final["test_loss_best_val"], final["test_acc_best_val"])


def test_resumed_run_keeps_the_best_epoch_and_its_test_accuracy(tmp_path, monkeypatch):
    cfg = TrainConfig(**TINY)
    whole = train.run(cfg, tmp_path / "whole", progress="quiet")
    killed_after_epoch(cfg, tmp_path / "cut", 3, monkeypatch)
    resumed = train.run(cfg, tmp_path / "cut", resume=True, progress="quiet")
    keys = ("best_epoch", "best_val_acc", "test_acc_best_val", "test_loss_best_val", "test_acc")
    assert {k: resumed[k] for k in keys} == {k: whole[k] for k in keys}


def test_a_checkpoint_from_before_best_val_tracking_resumes_without_inventing_a_best_epoch(
        tmp_path, monkeypatch):
    cfg = TrainConfig(**dict(TINY, epochs=1))
    killed_after_epoch(cfg, tmp_path / "old", 1, monkeypatch, keep_best=False)  # as written before
    final = train.run(cfg, tmp_path / "old", resume=True, progress="quiet")
    assert final["best_epoch"] is None and final["test_acc_best_val"] is None
    assert 0 < final["test_acc"] <= 1
