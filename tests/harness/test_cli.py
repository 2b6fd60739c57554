"""The command line: `train` end to end, its error exits, and the console output modes."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from weight_compander.harness.cli import main
from weight_compander.harness.cli.main import build_parser
from weight_compander.harness.cli.train import config_from_args, default_run_dir
from weight_compander.harness.config.settings import TrainConfig
from weight_compander.harness.run import train
from weight_compander.harness.run.progress import Progress, resolve_mode

TINY = ["--dataset", "digits", "--model", "mlp", "--epochs", "2", "--batch-size", "64",
        "--train-subset", "300", "--val-size", "100", "--threads", "1"]


def test_train_end_to_end_with_config_file_and_flag_override(tmp_path, capsys):
    toml = tmp_path / "run.toml"
    toml.write_text('reparam = "wc"\nepochs = 5\nwc_hyper = { gain = 1.5 }\n')
    out = tmp_path / "run"
    code = main(["train", "--config", str(toml), *TINY, "--wc-learnable", "--no-progress",
                 "--out", str(out)])
    assert code == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["epochs"], saved["reparam"], saved["wc_learnable"]) == (2, "wc", True)
    assert saved["wc_hyper"] == {"gain": 1.5} and saved["val_size"] == 100
    assert (out / "final.json").exists()
    console = capsys.readouterr().out
    assert "\r" not in console
    assert "train_loss" in console and "test_acc" in console
    table = [line for line in console.splitlines() if line.strip()[:1].isdigit()]
    assert len(table) == 2 and len({len(line) for line in table}) == 1  # fixed width


def test_default_run_dirs_never_collide_and_resume_finds_them(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["train", *TINY, "--epochs", "1", "--seed", "3", "--no-progress"]
    assert main(argv) == 0
    (first,) = (tmp_path / "runs").glob("digits-mlp-none-seed3-*")
    assert (first / "final.json").exists()
    # other settings never land in the same folder; the same settings find it again
    assert main([*argv, "--lr", "0.1"]) == 0
    assert len(list((tmp_path / "runs").glob("digits-mlp-none-seed3-*"))) == 2
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0
    assert f"{first.relative_to(tmp_path)} is complete" in capsys.readouterr().out
    # a run made under the older scheme (no settings key) keeps resuming from its folder
    legacy = first.rename(tmp_path / "runs" / "digits-mlp-none-seed3")
    cfg = config_from_args(build_parser().parse_args(argv[:-1]))
    assert default_run_dir(cfg) == Path("runs") / legacy.name
    assert default_run_dir(cfg.replace(lr=0.1)) != Path("runs") / legacy.name


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lr", "fast"], "lr: expected a number"),
        (["--optimizer", "adam"], "optimizer: 'adam' is not one of"),
        (["--val-size", "5000"], "val_size"),  # more than digits has
        (["--wc-hyper", "gain"], "NAME=VALUE"),
        (["--dataset", "mnist"], "needs a folder with its IDX files"),  # data error
        (["--reparam", "weight_std"], "weight_std"),  # an MLP has no conv weights
    ],
)
def test_bad_settings_exit_2_with_one_line(tmp_path, capsys, argv, message):
    assert main(["train", *TINY, *argv, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unknown_toml_key_exits_2_naming_it(tmp_path, capsys):
    toml = tmp_path / "bad.toml"
    toml.write_text("learning_rate = 0.1\n")
    assert main(["train", "--config", str(toml), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "learning_rate" in err and "bad.toml" in err


def test_resume_with_other_config_exits_2(tmp_path, capsys):
    out = ["--out", str(tmp_path / "r"), "--no-progress"]
    assert main(["train", *TINY, "--epochs", "1", *out]) == 0
    assert main(["train", *TINY, "--epochs", "1", "--lr", "0.2", "--resume", *out]) == 2
    assert "config differs in lr" in capsys.readouterr().err
    assert main(["train", *TINY, "--epochs", "1", "--resume", *out]) == 0


def test_non_finite_loss_exits_1(tmp_path, capsys):
    argv = ["train", *TINY, "--lr", "1e12", "--momentum", "0", "--out", str(tmp_path / "r")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "non-finite training loss" in err and "epoch 1, step" in err
    assert "Traceback" not in err


def test_help_lists_every_setting(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--wc-hyper", "--no-augment", "--train-subset", "--eval-batch-size", "--resume"):
        assert flag in text


def test_python_dash_m_train(tmp_path):
    env = {**os.environ, "CI": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "weight_compander", "train", *TINY, "--out", str(tmp_path / "r")],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert res.returncode == 0, res.stderr
    assert "\r" not in res.stdout and "test_acc" in res.stdout
    assert json.loads((tmp_path / "r" / "final.json").read_text())["epochs"] == 2


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_modes(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert resolve_mode(True, io.StringIO()) == "plain"
    assert resolve_mode(True, FakeTTY()) == "bars"
    assert resolve_mode(False, FakeTTY()) == "plain"
    assert resolve_mode("quiet", FakeTTY()) == "quiet"
    monkeypatch.setenv("CI", "true")
    assert resolve_mode(True, FakeTTY()) == "plain"
    with pytest.raises(ValueError, match="progress must be"):
        resolve_mode("loud")


def test_bars_on_a_terminal_and_quiet_prints_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    tty = FakeTTY()
    p = Progress(True, stream=tty)
    bar = p.bar(1, 2, 5)
    for _ in range(5):
        bar.update(1)
    bar.close()
    p.row({"epoch": 1, "step": 5, "train_loss": 1.0, "train_acc": 0.5, "val_loss": None})
    assert "\r" in tty.getvalue() and "train_loss" in tty.getvalue()

    quiet = io.StringIO()
    monkeypatch.setattr("sys.stdout", quiet)
    train.run(TrainConfig(**{"epochs": 1, "train_subset": 200, "val_size": 50}),
              tmp_path / "q", progress="quiet")
    assert quiet.getvalue() == ""
