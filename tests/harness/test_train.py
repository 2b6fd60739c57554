"""train.run on tiny data: the run folder, determinism, resume, divergence, config checks."""

import json

import pytest
import torch

from weight_compander import state as layout
from weight_compander.harness.config.settings import TrainConfig
from weight_compander.harness.errors import NonFiniteLossError, RunFolderError
from weight_compander.harness.run import loop, restore, train
from weight_compander.harness.run import metrics as run_metrics
from weight_compander.harness.store import checkpoint

TIME_KEYS = {"time", "wall_time", "cpu_time", "images_per_second"}

# digits + mlp on 400 images: a run takes well under a second.
TINY = dict(dataset="digits", model="mlp", epochs=2, batch_size=64, train_subset=400,
            val_size=100, threads=1, eval_batch_size=256)
# Every random stream in use: init, dropout, data order, augmentation, mixup, learnable WC.
BUSY = dict(TINY, epochs=3, augment=True, mixup_alpha=0.4, dropout=0.1, label_smoothing=0.1,
            reparam="wc", wc_learnable=True, schedule="onecycle")


def tiny(**changes):
    return TrainConfig(**{**TINY, **changes})


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def untimed(rows):
    if isinstance(rows, dict):
        return {k: v for k, v in rows.items() if k not in TIME_KEYS}
    return [untimed(r) for r in rows]


def test_run_writes_the_run_folder(tmp_path):
    cfg = tiny(reparam="wc")
    final = train.run(cfg, tmp_path / "r", progress="quiet")
    run_dir = tmp_path / "r"
    names = {p.name for p in run_dir.iterdir()}
    assert names == {"config.json", "metrics.jsonl", "final.json", "checkpoint.pt",
                     "checkpoint-prev.pt", ".lock"}  # .lock: held while the run trains

    saved = json.loads((run_dir / "config.json").read_text())
    meta = saved.pop("meta")
    assert saved == cfg.resolved().to_dict()
    assert {"version", "git_commit", "torch", "python", "machine", "started"} <= set(meta)
    assert meta["torch"] == torch.__version__

    rows = metrics(run_dir)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert set(rows[0]) == {"epoch", "step", "train_loss", "train_acc", "val_loss", "val_acc",
                            "lr", "wc", "kurtosis", "time"}  # no label noise: no memorization
    assert rows[1]["step"] == 2 * (400 // 64)
    assert rows[0]["wc"] and all("gain" in h for h in rows[0]["wc"].values())

    assert json.loads((run_dir / "final.json").read_text()) == final
    assert {"test_acc", "test_loss", "val_acc", "val_loss", "train_acc", "train_loss", "epochs",
            "wall_time", "cpu_time", "images_per_second", "seed"} <= set(final)
    assert final["val_acc"] == rows[-1]["val_acc"] and final["epochs"] == 2
    assert 0.5 < final["test_acc"] <= 1.0  # digits are easy even in two tiny epochs

    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and TrainConfig.from_json(state["config"]) == cfg.resolved()


def test_same_config_and_seed_give_identical_metrics(tmp_path):
    cfg = TrainConfig(**BUSY)
    a = train.run(cfg, tmp_path / "a", progress="quiet")
    b = train.run(cfg, tmp_path / "b", progress="quiet")
    assert untimed(a) == untimed(b)
    assert untimed(metrics(tmp_path / "a")) == untimed(metrics(tmp_path / "b"))
    train.run(cfg.replace(seed=1), tmp_path / "c", progress="quiet")
    assert untimed(metrics(tmp_path / "c")) != untimed(metrics(tmp_path / "a"))


def interrupted(cfg, run_dir, monkeypatch) -> list[int]:
    """Run until the first checkpoint is written, then die as if killed; the epochs saved."""
    real_save, saves = checkpoint.save, []

    def save_then_die(state, run_dir):  # a kill right after the first epoch's checkpoint
        real_save(state, run_dir)
        saves.append(state["epoch"])
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg, run_dir, progress="quiet")
    monkeypatch.setattr(checkpoint, "save", real_save)
    return saves


def test_resume_after_interrupt_matches_uninterrupted_run(tmp_path, monkeypatch):
    cfg = TrainConfig(**BUSY)
    whole = train.run(cfg, tmp_path / "whole", progress="quiet")
    assert interrupted(cfg, tmp_path / "cut", monkeypatch) == [1]
    assert not (tmp_path / "cut" / "final.json").exists()

    resumed = train.run(cfg, tmp_path / "cut", resume=True, progress="quiet")
    assert untimed(resumed) == untimed(whole)
    assert untimed(metrics(tmp_path / "cut")) == untimed(metrics(tmp_path / "whole"))
    # A complete run resumes to its final metrics without training again.
    assert train.run(cfg, tmp_path / "cut", resume=True, progress="quiet") == resumed


def test_run_folders_written_before_checkpoint_layout_2_resume_the_same(tmp_path, monkeypatch):
    """Checkpoints of older versions hold the model in layout 1 (torch's own parametrize keys)."""
    cfg = TrainConfig(**BUSY)
    whole = train.run(cfg, tmp_path / "whole", progress="quiet")
    interrupted(cfg, tmp_path / "cut", monkeypatch)
    state = checkpoint.load(tmp_path / "cut" / checkpoint.CHECKPOINT)
    model = restore.load_model(tmp_path / "cut")
    for module in model.modules():  # what state_dict gave before layout 2
        layout.detach(module)
    state["model"] = model.state_dict()
    assert not [k for k in state["model"] if "_compander" in k]
    checkpoint.save(state, tmp_path / "cut")
    assert untimed(train.run(cfg, tmp_path / "cut", resume=True, progress="quiet")) == untimed(whole)


def test_resume_refuses_other_config_and_fresh_run_refuses_used_folder(tmp_path):
    cfg = tiny(epochs=1)
    train.run(cfg, tmp_path / "r", progress="quiet")
    with pytest.raises(RunFolderError, match=r"config differs in lr \(0\.05 there, 0\.1 now\)"):
        train.run(cfg.replace(lr=0.1), tmp_path / "r", resume=True, progress="quiet")
    with pytest.raises(RunFolderError, match=r"already holds a run.*--resume"):
        train.run(cfg, tmp_path / "r", progress="quiet")


def test_non_finite_loss_stops_with_epoch_and_step_and_keeps_checkpoint(tmp_path, monkeypatch):
    real_ce, calls = loop.F.cross_entropy, []

    def ce(*args, **kwargs):  # the 3rd step of epoch 2 (6 steps per epoch) diverges
        loss = real_ce(*args, **kwargs)
        if "reduction" in kwargs:  # evaluation
            return loss
        calls.append(1)
        return loss * float("nan") if len(calls) == 9 else loss

    monkeypatch.setattr(loop.F, "cross_entropy", ce)
    with pytest.raises(NonFiniteLossError, match="epoch 2, step 9") as info:
        train.run(tiny(), tmp_path / "r", progress="quiet")
    assert (info.value.epoch, info.value.step) == (2, 9)
    assert checkpoint.load_latest(tmp_path / "r")["epoch"] == 1
    assert len(metrics(tmp_path / "r")) == 1 and not (tmp_path / "r" / "final.json").exists()


def test_huge_learning_rate_diverges_cleanly(tmp_path):
    with pytest.raises(NonFiniteLossError, match="epoch 1, step"):
        train.run(tiny(lr=1e12, momentum=0.0), tmp_path / "r", progress="quiet")


@pytest.mark.parametrize(
    "changes",
    [
        dict(reparam="weight_norm", optimizer="adamw", lr=1e-3, schedule="constant"),
        dict(reparam="weight_std", model="cnn"),
        dict(reparam="wc", wc_kind="mulaw", wc_per_channel=True, wc_learnable=True,
             wc_hyper_lr=0.01, wc_layers=["1.weight"]),
    ],
)
def test_variants_train_and_load_model_rebuilds_the_final_model(tmp_path, changes):
    cfg = tiny(epochs=1, **changes)
    final = train.run(cfg, tmp_path / "r", progress="quiet")
    model = restore.load_model(tmp_path / "r")
    assert not model.training
    from weight_compander.harness.ingredients import data

    ds = data.load_dataset("digits", val_size=100, train_subset=400)
    loss, acc = run_metrics.evaluate(model, ds.test_x, ds.test_y, 256)
    assert (loss, acc) == (final["test_loss"], final["test_acc"])
