"""The run folder as one run sees it: lock and check it, write its config and metrics.

A run refuses a folder that holds another run unless it resumes, and resumes only a run with
the same settings; rank 0 does the checking and the other ranks get its answer.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

import weight_compander as wc
from weight_compander.harness.config.settings import TrainConfig
from weight_compander.harness.errors import CheckpointError, ConfigError, RunFileError, RunFolderError
from weight_compander.harness.ingredients import data
from weight_compander.harness.run import distributed
from weight_compander.harness.store import checkpoint, runfiles, runlock

__all__ = ["open_shared", "run_meta", "write_config", "write_metrics"]


def open_shared(
    cfg: TrainConfig, run_dir: Path, resume: bool, rank: int, held: contextlib.ExitStack
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Rank 0 locks the run folder (until `held` closes) and checks it; every rank gets the
    result, or the error to raise, so no rank waits for a folder that was refused."""
    opened: Any = None
    if rank == 0:  # only rank 0 touches the folder; the other ranks get what it found
        try:
            held.enter_context(runlock.run_lock(run_dir))
            opened = _open_run_dir(cfg, run_dir, resume)
        except (ConfigError, CheckpointError, RunFileError, OSError) as err:
            opened = err
    opened = distributed.broadcast(opened)
    if isinstance(opened, Exception):
        raise opened
    return opened


def _open_run_dir(
    cfg: TrainConfig, run_dir: Path, resume: bool
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Check the folder against `resume`; return (checkpoint or None, final.json or None).

    A missing config.json is restored from the checkpoint (which holds the same settings);
    an empty or corrupt final.json means the run has not finished, so it is resumed.
    """
    config_path = run_dir / "config.json"
    if not resume:
        if _holds_a_run(run_dir):
            raise RunFolderError(
                f"{run_dir} already holds a run; pass --resume to continue it, or choose "
                "another --out (or delete the folder)"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        return None, None
    state = checkpoint.load_latest(run_dir) if run_dir.is_dir() else None
    if config_path.exists():
        saved = runfiles.read_config(config_path)
    elif state is not None:
        saved = TrainConfig.from_json(state["config"])
    elif _holds_a_run(run_dir):
        raise RunFolderError(
            f"cannot resume {run_dir}: its config.json is missing and it has no checkpoint to "
            "restore it from; delete the folder to train the run again"
        )
    else:  # nothing written yet: resuming is starting
        run_dir.mkdir(parents=True, exist_ok=True)
        return None, None
    differ = [k for k in saved.resolved().diff(cfg) if k != "threads"]  # threads: machine only
    if differ:
        detail = ", ".join(f"{k} ({getattr(saved, k)!r} there, {getattr(cfg, k)!r} now)"
                           for k in differ)
        raise RunFolderError(
            f"cannot resume {run_dir}: its config differs in {detail}; use the same settings "
            "or another --out"
        )
    if not config_path.exists():
        restored = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        checkpoint.write_json(config_path, {**saved.to_dict(), "meta": {
            "restored_from": checkpoint.CHECKPOINT, "restored": restored}})
    return state, runfiles.read_final(run_dir)[0]


def _holds_a_run(run_dir: Path) -> bool:
    """Any of a run's files is there (a non-resume run refuses such a folder)."""
    return any((run_dir / name).exists() for name in runfiles.RUN_FILES)


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """metrics.jsonl, rewritten whole (atomically) after every epoch: never half a line."""
    checkpoint.write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))


def write_config(run_dir: Path, cfg: TrainConfig, meta: dict[str, Any]) -> None:
    """config.json: every resolved setting and the run's provenance (`run_meta`)."""
    checkpoint.write_json(run_dir / "config.json", {**cfg.to_dict(), "meta": meta})


def run_meta(
    shape: dict[str, Any], ds: data.Dataset, companded: list[str], world: int
) -> dict[str, Any]:
    try:
        from importlib.metadata import version

        pkg_version = version("weight-compander")
    except Exception:
        pkg_version = getattr(wc, "__version__", None)
    return {
        "version": pkg_version,
        "git_commit": _git_commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.platform()} ({platform.machine()}, {os.cpu_count()} CPUs, "
                   f"{torch.get_num_threads()} torch threads)",
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "processes": world,  # torchrun ranks; the batch size is the global one
        "data": {"source": ds.source, "train": len(ds.train_y), "val": len(ds.val_y),
                 "test": len(ds.test_y), **shape},
        "reparameterized": companded,
    }


def _git_commit() -> str | None:
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 and res.stdout.strip() else None
