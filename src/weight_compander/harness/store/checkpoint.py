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

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from weight_compander.harness.errors import CheckpointError
from weight_compander.harness.store import atomic

__all__ = [
    "CHECKPOINT", "PREVIOUS", "load", "load_latest", "save", "write_json",
    "write_text",
]

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint-prev.pt"




def save(state: dict[str, Any], run_dir: str | Path) -> Path:
    """Atomically write `state` as ``run_dir/checkpoint.pt``; the old one becomes the previous.

    Why the order: temp file + fsync first, so the rename only ever publishes complete
    data; the directory is fsynced last so the renames themselves survive a power cut.
    A kill between the two renames leaves only ``checkpoint-prev.pt``, which `load_latest`
    then uses; temp files such a kill leaves behind are removed by the next save (only the
    process holding the run's lock saves, so none of them is another process's).
    A write error (a full disk) is an ``OSError`` naming checkpoint.pt; the checkpoints on
    disk stay as they were.
    """
    run_dir = Path(run_dir)
    path, prev = run_dir / CHECKPOINT, run_dir / PREVIOUS
    fd, tmp = atomic.create_temp(run_dir, prefix=".checkpoint-")  # mode: 0666 minus the umask
    try:
        with os.fdopen(fd, "wb") as fh:
            try:
                torch.save(state, fh)
            except RuntimeError as err:  # torch reports a failed write as "unexpected pos ..."
                if isinstance(err.__context__, OSError):
                    raise err.__context__ from None
                raise
            fh.flush()
            os.fsync(fh.fileno())
        if path.exists():
            os.replace(path, prev)
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.errno is not None and err.filename in (None, str(tmp)):
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic.fsync_dir(run_dir)
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
        raise CheckpointError(
            f"{path} is not a readable plain-tensor checkpoint ({_reason(err)}); "
            "it may be truncated or contain pickled code, which is refused"
        ) from err
    if not isinstance(state, dict) or "epoch" not in state:
        raise CheckpointError(f"{path} is not a weight-compander training checkpoint")
    return state


def _reason(err: Exception) -> str:
    """torch's reason, without its advice to retry with weights_only=False.

    That advice is wrong here: it would load random bytes no better, and it would run the
    code a malicious pickle carries.
    """
    text = str(err).strip()
    if "weights_only" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else ""
        detail = next((ln.strip() for ln in detail.splitlines() if ln.strip()), "")
        return f"not plain tensors and data: {detail}" if detail else "not plain tensors and data"
    first = text.splitlines()[0] if text else type(err).__name__
    return first


def load_latest(run_dir: str | Path) -> dict[str, Any] | None:
    """The newest readable checkpoint of a run, or None if the run has none yet.

    A corrupt ``checkpoint.pt`` is reported (warning) and the previous one is used; if
    both exist and neither loads, that is an error rather than a silent restart, and the
    message says how to restart on purpose.
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
        names = " and ".join(p.name for p in paths)
        raise CheckpointError("; ".join(errors) + f". No checkpoint of {run_dir} can be read: "
                              f"delete {names} to restart the run from its first epoch "
                              "(its progress is lost)")
    return None


# The run folder's other files get the same all-or-nothing writes (UTF-8, the user's umask).
write_text = atomic.write_text
write_json = atomic.write_json
