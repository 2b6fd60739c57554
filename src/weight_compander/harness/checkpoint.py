"""Checkpoints that survive a crash and cannot run code when loaded.

A checkpoint is a dict of tensors and plain data (numbers, strings, lists, dicts), so
``torch.load(..., weights_only=True)`` loads it and a file with pickled code is refused.
It is written to a temporary file in the same folder, flushed to disk and renamed over
the old one, so a kill at any moment leaves either the old or the new checkpoint, never
a half-written one. The previous checkpoint is kept as ``checkpoint-prev.pt``: if the
latest turns out unreadable, `load_latest` falls back to it. `write_text` gives the run
folder's other files (config, metrics, final) the same all-or-nothing writes.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CHECKPOINT", "PREVIOUS", "CheckpointError", "load", "load_latest", "save", "write_json",
    "write_text",
]

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint-prev.pt"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, or holds more than tensors and plain data."""


def save(state: dict[str, Any], run_dir: str | Path) -> Path:
    """Atomically write `state` as ``run_dir/checkpoint.pt``; the old one becomes the previous.

    Why the order: temp file + fsync first, so the rename only ever publishes complete
    data; the directory is fsynced last so the renames themselves survive a power cut.
    A kill between the two renames leaves only ``checkpoint-prev.pt``, which `load_latest`
    then uses; temp files such a kill leaves behind are removed by the next save.
    """
    run_dir = Path(run_dir)
    path, prev = run_dir / CHECKPOINT, run_dir / PREVIOUS
    fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", suffix=".tmp", dir=run_dir)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            os.replace(path, prev)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(run_dir)
    for stale in run_dir.glob(".checkpoint-*.tmp"):  # left by a process killed mid-save
        stale.unlink(missing_ok=True)
    return path


def load(path: str | Path) -> dict[str, Any]:
    """Load one checkpoint on the CPU with ``weights_only=True`` (no code can run)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, foreign pickle, ...: all mean "do not trust it"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path} is not a readable plain-tensor checkpoint ({first}); "
            "it may be truncated or contain pickled code, which is refused"
        ) from err
    if not isinstance(state, dict) or "epoch" not in state:
        raise CheckpointError(f"{path} is not a weight-compander training checkpoint")
    return state


def load_latest(run_dir: str | Path) -> dict[str, Any] | None:
    """The newest readable checkpoint of a run, or None if the run has none yet.

    A corrupt ``checkpoint.pt`` is reported (warning) and the previous one is used; if
    both exist and neither loads, that is an error rather than a silent restart.
    """
    run_dir = Path(run_dir)
    paths = [p for p in (run_dir / CHECKPOINT, run_dir / PREVIOUS) if p.exists()]
    errors = []
    for p in paths:
        try:
            state = load(p)
        except CheckpointError as err:
            errors.append(str(err))
            continue
        if errors:
            warnings.warn(f"{errors[0]}; using {p.name} instead", stacklevel=2)
        return state
    if errors:
        raise CheckpointError("; ".join(errors))
    return None


def write_text(path: str | Path, text: str) -> None:
    """Atomic write: readers see the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
