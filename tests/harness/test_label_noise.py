"""Label noise: exactly round(rate·n) wrong labels of the stated structure, never a test label."""

from __future__ import annotations

import json

import pytest
import torch

from weight_compander.harness.config.settings import TrainConfig
from weight_compander.harness.errors import ConfigError, LabelNoiseError
from weight_compander.harness.ingredients import data, label_noise
from weight_compander.harness.ingredients.label_noise import noisy_labels
from weight_compander.harness.run import restore, train

TINY = dict(dataset="digits", model="mlp", epochs=1, batch_size=64, train_subset=400,
            val_size=100, threads=1)


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.37, 0.9])
@pytest.mark.parametrize("kind", label_noise.KINDS)
def test_exactly_round_rate_n_labels_change_with_the_stated_structure(rate, kind):
    y = torch.arange(1000) % 10
    out, idx = noisy_labels(y, rate, kind, 10)
    changed = (out != y).nonzero().flatten()
    assert len(changed) == round(rate * len(y)) and torch.equal(changed, idx)
    if kind == "pairflip":
        assert torch.equal(out[idx], (y[idx] + 1) % 10)  # each class to its successor
    else:  # another class, spread over all of them
        assert (out[idx] != y[idx]).all() and (rate < 0.3 or len(out[idx].unique()) == 10)
    assert torch.equal(out, noisy_labels(y, rate, kind, 10)[0])  # one fixed draw
    assert torch.equal(y, torch.arange(1000) % 10)  # the input is not modified


def test_noise_is_applied_to_train_and_val_labels_never_to_test_and_not_by_run_seed():
    clean = data.load_dataset("digits", val_size=100, train_subset=400)
    cfg = TrainConfig(**TINY, label_noise=0.25, label_noise_kind="pairflip")
    noisy = restore.load_data(cfg)
    assert int((noisy.train_y != clean.train_y).sum()) == 100
    assert int((noisy.val_y != clean.val_y).sum()) == 25
    assert torch.equal(noisy.test_y, clean.test_y) and torch.equal(noisy.train_x, clean.train_x)
    assert "label noise 0.25 pairflip: 100 of 400 training and 25 of 100 validation" in noisy.source
    other_seed = restore.load_data(cfg.replace(seed=7))
    assert torch.equal(other_seed.train_y, noisy.train_y) and torch.equal(other_seed.val_y, noisy.val_y)
    assert restore.load_data(TrainConfig(**TINY)).train_y.equal(clean.train_y)  # default: no noise


def test_a_noisy_run_records_the_noise_in_config_json(tmp_path):
    cfg = TrainConfig(**TINY, label_noise=0.2)
    train.run(cfg, tmp_path / "r", progress="quiet")
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["label_noise"] == 0.2 and saved["label_noise_kind"] == "symmetric"
    assert "80 of 400 training and 20 of 100 validation labels changed" in saved["meta"]["data"]["source"]


def test_bad_settings_are_errors_naming_the_value():
    for rate in (1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match=rf"label_noise: must be in \[0, 1\), got {rate}"):
            TrainConfig(label_noise=rate)
    with pytest.raises(ConfigError, match="label_noise_kind: 'asym' is not one of symmetric, pairflip"):
        TrainConfig(label_noise_kind="asym")
    with pytest.raises(LabelNoiseError, match="'pairflip' needs at least 3 classes, this data set has 2"):
        noisy_labels(torch.tensor([0, 1, 1, 0]), 0.5, "pairflip", 2)
    with pytest.raises(LabelNoiseError, match=r"label_noise: must be in \[0, 1\), got 1"):
        noisy_labels(torch.tensor([0, 1]), 1, "symmetric", 2)
