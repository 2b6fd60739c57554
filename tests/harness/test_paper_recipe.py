"""The paper's recipe as harness settings: arctan in absolute units, shared hyperparameters,
decay on the effective weight, the modified Adam, the multistep schedule, configs/paper/."""

import json
import pickle
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

import weight_compander as wc
from weight_compander.harness.compare.runner import run_comparison
from weight_compander.harness.config.comparison import comparison_from_dict
from weight_compander.harness.config.settings import TrainConfig
from weight_compander.harness.errors import ConfigError
from weight_compander.harness.run import restore, train

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(dataset="digits", model="mlp", epochs=2, batch_size=64, train_subset=400,
            val_size=100, threads=1, eval_batch_size=256)
PAPER_WC = dict(reparam="wc", wc_kind="arctan", wc_scale=1.0, wc_hyper={"a": 1.0, "b": 0.6})


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(reparam="wc", wc_scale="tensor"), "wc_scale: 'tensor' is not one of std, channel"),
        (dict(reparam="wc", wc_scale=-1.0), "wc_scale: must be > 0"),
        (dict(reparam="wc", wc_share=True), "wc_share: needs reparam = 'wc', wc_learnable = true"),
        (dict(decay_on="effective"), "decay_on: 'effective' needs reparam = 'wc'"),
        (dict(decay_on="v", reparam="wc"), "decay_on: 'v' is not one of raw, effective"),
        (dict(optimizer="adamw-companded"), "optimizer: 'adamw-companded' needs reparam = 'wc'"),
        (dict(schedule="multistep", lr_milestones=[]), "multistep needs at least one milestone"),
        (dict(lr_milestones=[0.7, 0.4]), "must be increasing fractions of training"),
        (dict(lr_milestones=[0.5, 1.5]), "must be increasing fractions of training"),
        (dict(lr_factor=0.0), r"lr_factor: must be in \(0, 1\]"),
    ],
)
def test_paper_options_are_checked(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**{**TINY, **changes})


def test_multistep_schedule_multiplies_lr_at_the_milestone_epochs(tmp_path):
    cfg = TrainConfig(**{**TINY, "epochs": 4}, lr=0.1, schedule="multistep", lr_milestones=[0.5, 0.75],
                      lr_factor=0.1)
    train.run(cfg, tmp_path / "r", progress="quiet")
    lrs = [row["lr"] for row in metrics(tmp_path / "r")]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.001])


def test_decay_on_the_effective_weight_changes_training_and_is_recorded(tmp_path):
    raw = train.run(TrainConfig(**TINY, **PAPER_WC, weight_decay=0.05), tmp_path / "raw", progress="quiet")
    effective = train.run(
        TrainConfig(**TINY, **PAPER_WC, weight_decay=0.05, decay_on="effective"), tmp_path / "eff",
        progress="quiet",
    )
    assert raw["test_loss"] != effective["test_loss"]
    saved = json.loads((tmp_path / "eff" / "config.json").read_text())
    assert saved["decay_on"] == "effective" and saved["wc_scale"] == 1.0
    model = restore.load_model(tmp_path / "eff")
    scales = {row["name"]: row["scale"] for row in wc.stats(model)}
    assert set(scales.values()) == {1.0}  # absolute units on every layer


def test_shared_learnable_hyperparameters_and_the_modified_adam_train(tmp_path):
    cfg = TrainConfig(**TINY, **{**PAPER_WC, "wc_hyper": {"a": 0.5, "b": 1.0}}, wc_learnable=True,
                      wc_share=True, optimizer="adamw-companded", lr=3e-3, weight_decay=0.01)
    final = train.run(cfg, tmp_path / "r", progress="quiet")
    assert final["test_acc"] > 0.5  # digits: chance is 0.1
    rows = metrics(tmp_path / "r")
    hyper = rows[-1]["wc"]
    assert len({json.dumps(h, sort_keys=True) for h in hyper.values()}) == 1  # one (a, b) for all layers
    assert hyper["1.weight"]["a"] != 0.5  # and it was learned
    model = restore.load_model(tmp_path / "r")
    assert len(list(wc.named_hyperparameters(model))) == 2


# --- configs/paper/: one epoch each on a tiny fake CIFAR folder ---------------------------------


def fake_cifar(folder: Path, name: str) -> Path:
    rng = np.random.default_rng(0)

    def batch(n: int, key: bytes, classes: int) -> dict:
        return {key: [int(v) for v in rng.integers(0, classes, n)],
                b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)}

    if name == "cifar10":
        root = folder / "cifar-10-batches-py"
        root.mkdir(parents=True)
        files = {f"data_batch_{i}": batch(3, b"labels", 10) for i in range(1, 6)}
        files["test_batch"] = batch(4, b"labels", 10)
    else:
        root = folder / "cifar-100-python"
        root.mkdir(parents=True)
        files = {"train": batch(15, b"fine_labels", 100), "test": batch(4, b"fine_labels", 100)}
    for file_name, content in files.items():
        with (root / file_name).open("wb") as fh:
            pickle.dump(content, fh, protocol=2)
    return folder


@pytest.mark.parametrize("config", sorted((ROOT / "configs" / "paper").glob("*.toml")), ids=lambda p: p.stem)
def test_paper_configs_run_one_epoch_on_fake_cifar(config, tmp_path):
    data = tomllib.loads(config.read_text())
    dataset = data["defaults"]["dataset"]
    data["seeds"] = [0]
    # ResNet-18 at 32x32 is the cost: one step of 8 images, 4 validation and 4 test images
    data["defaults"].update(data_dir=str(fake_cifar(tmp_path / "data", dataset)), epochs=1,
                            train_subset=8, batch_size=8, val_size=4, eval_batch_size=8, threads=1)
    comparison = comparison_from_dict(data, source=str(config))
    assert {"base", "wc-fixed", "wc-learn-fine", "weight-norm", "powerprop"} <= set(comparison.variants)
    summary = run_comparison(comparison, tmp_path / "runs", report=False, progress=False, log=lambda *a: None)
    assert not summary["failed"]
    finals = list((tmp_path / "runs").glob("*/*/final.json"))
    assert len(finals) == len(comparison.variants)
    fixed = json.loads((tmp_path / "runs" / "wc-fixed" / "seed0" / "config.json").read_text())
    assert (fixed["wc_kind"], fixed["wc_scale"], fixed["decay_on"]) == ("arctan", 1.0, "effective")
    assert torch.isfinite(torch.tensor([json.loads(f.read_text())["test_loss"] for f in finals])).all()
