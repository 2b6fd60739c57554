"""wc_learn = "validation": hyperparameters follow held-out batches, resumably."""

import json

import pytest

from weight_compander.harness.config.settings import TrainConfig
from weight_compander.harness.errors import ConfigError
from weight_compander.harness.run import train
from weight_compander.harness.store import checkpoint

TIME_KEYS = {"time", "wall_time", "cpu_time", "images_per_second"}
BILEVEL = dict(dataset="digits", model="mlp", epochs=3, batch_size=64, train_subset=400, val_size=100,
               threads=1, dropout=0.1, augment=True, reparam="wc", wc_learnable=True,
               wc_learn="validation", wc_hyper_lr=0.05, wc_hyper={"gain": 2.0, "limit": 3.0})  # fmt: skip


def learned(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["wc"] for r in rows]


def untimed(obj):
    if isinstance(obj, dict):
        return {k: v for k, v in obj.items() if k not in TIME_KEYS}
    return [untimed(o) for o in obj]


def test_hyperparameters_move_only_with_validation_steps(tmp_path):
    # 18 training steps; a hyperparameter step every 1000 steps never comes: nothing may move,
    # although the training loss has gradients for them
    train.run(TrainConfig(**BILEVEL, wc_hyper_every=1000), tmp_path / "never", progress="quiet")
    for epoch in learned(tmp_path / "never"):
        assert all(h == pytest.approx({"gain": 2.0, "limit": 3.0}, abs=1e-6) for h in epoch.values())
    train.run(TrainConfig(**BILEVEL, wc_hyper_every=2), tmp_path / "every2", progress="quiet")
    last = learned(tmp_path / "every2")[-1]
    assert all(abs(h["gain"] - 2.0) > 1e-3 and abs(h["limit"] - 3.0) > 1e-3 for h in last.values())
    by_train = TrainConfig(**{**BILEVEL, "wc_learn": "train"})
    train.run(by_train, tmp_path / "train", progress="quiet")
    assert learned(tmp_path / "train")[-1] != last  # a different signal, a different path


def test_learn_only_the_limit(tmp_path):
    train.run(TrainConfig(**BILEVEL, wc_learn_only=["limit"]), tmp_path / "r", progress="quiet")
    for h in learned(tmp_path / "r")[-1].values():
        assert h["gain"] == pytest.approx(2.0, abs=1e-6) and abs(h["limit"] - 3.0) > 1e-3


def test_resume_keeps_hyperparameter_optimizer_state(tmp_path, monkeypatch):
    cfg = TrainConfig(**BILEVEL)
    whole = train.run(cfg, tmp_path / "whole", progress="quiet")
    real_save = checkpoint.save

    def save_then_die(state, run_dir):
        real_save(state, run_dir)
        assert state["hyper_optimizer"]["state"]  # Adam moments of the hyperparameters are saved
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg, tmp_path / "cut", progress="quiet")
    monkeypatch.setattr(checkpoint, "save", real_save)
    resumed = train.run(cfg, tmp_path / "cut", resume=True, progress="quiet")
    assert untimed(resumed) == untimed(whole)
    assert learned(tmp_path / "cut") == learned(tmp_path / "whole")


def test_validation_learning_needs_learnable_wc():
    with pytest.raises(ConfigError, match="wc_learn: 'validation' needs reparam = 'wc' and wc_learnable"):
        TrainConfig(**{**BILEVEL, "wc_learnable": False})
    with pytest.raises(ConfigError, match="wc_learn: 'bilevel' is not one of train, validation"):
        TrainConfig(**{**BILEVEL, "wc_learn": "bilevel"})


def test_hyper_loss_train_uses_the_label_smoothing(tmp_path):
    # without label smoothing the two losses are the same function: identical paths
    for loss in ("plain", "train"):
        cfg = TrainConfig(**BILEVEL, wc_hyper_every=2, wc_hyper_loss=loss)
        train.run(cfg, tmp_path / loss, progress="quiet")
    assert learned(tmp_path / "plain") == learned(tmp_path / "train")
    # with it, "train" follows the smoothed loss on the validation batches: another path
    smoothed = TrainConfig(**BILEVEL, wc_hyper_every=2, wc_hyper_loss="train", label_smoothing=0.2)
    train.run(smoothed, tmp_path / "smoothed", progress="quiet")
    train.run(smoothed.replace(wc_hyper_loss="plain"), tmp_path / "smoothed-plain", progress="quiet")
    assert learned(tmp_path / "smoothed") != learned(tmp_path / "smoothed-plain")


def test_hyper_loss_needs_validation_learning():
    with pytest.raises(ConfigError, match="wc_hyper_loss: only applies with wc_learn = 'validation'"):
        TrainConfig(**{**BILEVEL, "wc_learn": "train", "wc_hyper_loss": "train"})
    with pytest.raises(ConfigError, match="wc_hyper_loss: 'smooth' is not one of plain, train"):
        TrainConfig(**{**BILEVEL, "wc_hyper_loss": "smooth"})
