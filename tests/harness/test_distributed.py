"""Data-parallel training on this machine: 2 CPU processes under torchrun (gloo, loopback).

Tolerance against one process: the same global batches, augmentation and mixup draws reach
the model either way (every rank draws for the whole batch and takes its share), so with no
dropout and no BatchNorm the two differ only in floating-point rounding (the gradient is
summed over two shards, then averaged). Measured: about 1e-7 in the losses after 8 epochs,
identical accuracies; the test allows 1e-4 and one test image.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from weight_compander.harness.cli import main
from weight_compander.harness.config.settings import TrainConfig
from weight_compander.harness.errors import ConfigError
from weight_compander.harness.ingredients import data
from weight_compander.harness.run import distributed, metrics, restore, train
from weight_compander.harness.store import checkpoint

HERE = Path(__file__).parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
CONSOLE_SCRIPT = Path(sys.executable).with_name("weight-compander")
TIME_KEYS = {"time", "wall_time", "cpu_time", "images_per_second"}
# Learnable WC, augmentation, mixup, label smoothing; 6 global batches of 64 per epoch.
DDP = dict(dataset="digits", model="mlp", epochs=16, batch_size=64, train_subset=400,
           val_size=100, threads=1, eval_batch_size=256, augment=True, mixup_alpha=0.4,
           label_smoothing=0.1, reparam="wc", wc_learnable=True, schedule="onecycle")


def flags(settings: dict) -> list[str]:
    out = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        out += [flag] if value is True else [flag, str(value)]
    return out


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "CI": "1"}


def untimed(rows):
    if isinstance(rows, dict):
        return {k: v for k, v in rows.items() if k not in TIME_KEYS}
    return [untimed(r) for r in rows]


def outcome(run_dir: Path) -> tuple:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return untimed(json.loads((run_dir / "final.json").read_text())), untimed(rows)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """One uninterrupted 2-process run through ddp_probe.py, which records every rank."""
    root = tmp_path_factory.mktemp("ddp")
    argv = [*TORCHRUN, str(HERE / "ddp_probe.py"), str(root), "train", *flags(DDP),
            "--no-progress", "--out", str(root / "run")]
    res = subprocess.run(argv, capture_output=True, text=True, env=env(), timeout=600, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    return root, res.stdout


def test_two_processes_train_and_only_rank_0_writes(ddp_run):
    root, stdout = ddp_run
    run_dir = root / "run"
    assert stdout.count("train digits/mlp") == 1 and "on 2 processes" in stdout
    assert stdout.count("test_acc") == 1  # rank 1 prints nothing
    assert {p.name for p in run_dir.iterdir()} == {  # .lock: rank 0 holds the run folder
        "config.json", "metrics.jsonl", "final.json", "checkpoint.pt", "checkpoint-prev.pt", ".lock"}
    assert json.loads((run_dir / "config.json").read_text())["meta"]["processes"] == 2
    state = checkpoint.load(run_dir / "checkpoint.pt")
    assert state["world"] == 2 and state["epoch"] == 16
    assert not any(k.startswith("module.") for k in state["model"])  # the unwrapped model

    # One process rebuilds the final model from the checkpoint and measures the same.
    final = json.loads((run_dir / "final.json").read_text())
    ds = data.load_dataset("digits", val_size=100, train_subset=400)
    loss, acc = metrics.evaluate(restore.load_model(run_dir), ds.test_x, ds.test_y, 256)
    assert acc == final["test_acc"] and loss == pytest.approx(final["test_loss"], abs=1e-6)


def test_compander_hyperparameters_identical_on_every_rank_after_every_step(ddp_run):
    root, _ = ddp_run
    rank0, rank1 = (torch.load(root / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["steps"].shape == (16 * 6, 6)  # 96 steps x (gain, limit) of 3 Linear layers
    assert torch.equal(rank0["steps"], rank1["steps"])
    assert torch.equal(rank0["final_hyper"], rank1["final_hyper"])
    assert not torch.equal(rank0["steps"][0], rank0["final_hyper"])  # they did learn
    assert rank0["final"].keys() == rank1["final"].keys()
    for name, value in rank0["final"].items():
        assert torch.equal(value, rank1["final"][name]), name


def test_two_processes_match_one_process(ddp_run, tmp_path):
    root, _ = ddp_run
    train.run(TrainConfig(**DDP), tmp_path / "single", progress="quiet")
    (ddp_final, ddp_rows), (one_final, one_rows) = outcome(root / "run"), outcome(tmp_path / "single")
    print("\n2 processes - 1 process:", {k: ddp_final[k] - one_final[k] for k in
                                          ("test_acc", "test_loss", "val_loss", "train_loss")})
    for key in ("test_acc", "val_acc", "train_acc"):
        assert abs(ddp_final[key] - one_final[key]) <= 1 / 359 + 1e-12, key
    for key in ("test_loss", "val_loss", "train_loss"):
        assert ddp_final[key] == pytest.approx(one_final[key], abs=1e-4), key
    for a, b in zip(ddp_rows, one_rows, strict=True):
        assert a["step"] == b["step"] and a["lr"] == pytest.approx(b["lr"])
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-4)


def test_sigterm_to_torchrun_stops_cleanly_and_resume_under_torchrun_matches(ddp_run, tmp_path):
    run_dir = tmp_path / "run"
    argv = [*TORCHRUN, "-m", "weight_compander", "train", *flags(DDP), "--no-progress",
            "--out", str(run_dir)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env())
    end = time.monotonic() + 300
    while not (run_dir / "config.json").exists():  # written once every rank is training
        assert proc.poll() is None and time.monotonic() < end, proc.communicate()[0]
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)  # torchrun passes it on to both workers
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0 and "stopped by SIGTERM" in output, output
    assert not (run_dir / "final.json").exists()
    assert checkpoint.load_latest(run_dir)["world"] == 2

    # Resume with the console script under torchrun: the same metrics as never stopped.
    argv = [*TORCHRUN, "--no-python", str(CONSOLE_SCRIPT), "train", *flags(DDP), "--resume",
            "--no-progress", "--out", str(run_dir)]
    res = subprocess.run(argv, capture_output=True, text=True, env=env(), timeout=600, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "resume digits/mlp" in res.stdout
    assert outcome(run_dir) == outcome(ddp_run[0] / "run")


def test_batch_size_must_split_evenly_over_the_processes():
    distributed.check_batch_size(64, 2)
    with pytest.raises(ConfigError, match=r"batch_size: 50 is not divisible by the 4 processes.*"
                                          r"multiple of 4 \(e\.g\. 48\)"):
        distributed.check_batch_size(50, 4)


def test_only_train_runs_under_torchrun(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["compare", str(tmp_path / "x.toml")]) == 2
    assert "only `train` runs under torchrun" in capsys.readouterr().err
