"""TrainConfig: defaults, TOML/flag loading, and errors that name the offending key."""

import dataclasses
import json

import pytest

from weight_compander.harness.config.settings import DEFAULT_VAL_SIZE, TrainConfig, load_config, parse_value
from weight_compander.harness.errors import ConfigError


def test_defaults_are_valid_and_resolve_val_size_per_dataset():
    c = TrainConfig()
    assert (c.dataset, c.model, c.epochs, c.batch_size, c.optimizer) == (
        "digits", "mlp", 10, 128, "sgd"
    )
    assert c.val_size is None
    assert c.resolved().val_size == DEFAULT_VAL_SIZE["digits"]
    assert TrainConfig(dataset="fashion-mnist").resolved().val_size == 5000
    assert TrainConfig(dataset="mnist1d", val_size=7).resolved().val_size == 7


def test_every_dataset_choice_has_a_default_val_size():
    for name in DEFAULT_VAL_SIZE:
        TrainConfig(dataset=name).resolved()


def test_json_round_trip_ignores_meta():
    c = TrainConfig(reparam="wc", wc_hyper={"gain": 2, "limit": 3.5}, wc_layers=["fc.weight"],
                    train_subset=100, wc_hyper_lr=0.01)
    assert TrainConfig.from_json(c.to_json()) == c
    with_meta = json.dumps({**c.to_dict(), "meta": {"version": "x"}})
    assert TrainConfig.from_json(with_meta) == c
    assert c.wc_hyper == {"gain": 2.0, "limit": 3.5}  # ints become floats
    assert isinstance(c.to_dict()["wc_hyper"]["gain"], float)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"epochs": "3"}, "epochs"),
        ({"epochs": 2.5}, "epochs"),
        ({"lr": True}, "lr"),
        ({"augment": 1}, "augment"),
        ({"wc_hyper": {"gain": "x"}}, "wc_hyper.gain"),
        ({"wc_hyper": [1, 2]}, "wc_hyper"),
        ({"wc_layers": [1]}, "wc_layers"),
        ({"wc_layers": "all"}, "wc_layers"),
        ({"wc_layers": []}, "wc_layers"),
        ({"optimizer": "adam"}, "optimizer"),
        ({"schedule": "step"}, "schedule"),
        ({"reparam": "spectral"}, "reparam"),
        ({"dataset": "imagenet"}, "dataset"),
        ({"val_size": 0}, "val_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"dropout": 1.0}, "dropout"),
        ({"seed": -1}, "seed"),
        ({"train_subset": "all"}, "train_subset"),
    ],
)
def test_bad_values_name_the_key(changes, key):
    with pytest.raises(ConfigError, match=rf"^{key.replace('.', '[.]')}\b"):
        TrainConfig.from_dict(changes)


def test_unknown_keys_are_errors_naming_them():
    with pytest.raises(ConfigError, match=r"unknown key.*epoch_count.*valid keys"):
        TrainConfig.from_dict({"epoch_count": 3})


def test_toml_then_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        'dataset = "mnist1d"\nepochs = 3\nlr = 1\nreparam = "wc"\n'
        "wc_hyper = { gain = 2.0, limit = 3 }\n"
    )
    c = load_config(path, {"epochs": 5})
    assert (c.dataset, c.epochs, c.lr, c.reparam) == ("mnist1d", 5, 1.0, "wc")
    assert c.wc_hyper == {"gain": 2.0, "limit": 3.0}


def test_toml_errors_name_file_and_key(tmp_path):
    bad_key = tmp_path / "a.toml"
    bad_key.write_text("epochz = 3\n")
    with pytest.raises(ConfigError, match=r"a\.toml.*epochz"):
        load_config(bad_key)
    bad_type = tmp_path / "b.toml"
    bad_type.write_text('epochs = "3"\n')
    with pytest.raises(ConfigError, match=r"^epochs: expected int"):
        load_config(bad_type)
    broken = tmp_path / "c.toml"
    broken.write_text("epochs = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_parse_value_for_flags():
    assert parse_value("epochs", "3") == 3
    assert parse_value("lr", "1e-3") == 1e-3
    assert parse_value("train_subset", "none") is None
    assert parse_value("wc_hyper_lr", "0.5") == 0.5
    assert parse_value("wc_hyper", "gain=2, limit=3") == {"gain": 2.0, "limit": 3.0}
    assert parse_value("wc_layers", "default") == "default"
    assert parse_value("wc_layers", "fc1.weight,fc2") == ["fc1.weight", "fc2"]
    with pytest.raises(ConfigError, match=r"^epochs"):
        parse_value("epochs", "three")
    with pytest.raises(ConfigError, match=r"^wc_hyper.*NAME=VALUE"):
        parse_value("wc_hyper", "gain")


def test_every_field_has_help_text():
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f.name
