"""Reading the harness's own files, and one clear line when a file or the disk is the problem.

Run folders and comparison folders are the user's database: a `report` or a `compare` reads
many files written by earlier processes, some possibly damaged (a full disk, a hand edit, a
crash under an older version). Each reader here names the file and says what to do, as a
`RunFileError` (exit 2 on the command line), instead of a bare ``JSONDecodeError``.
`final.json` is special: empty, corrupt or without a test accuracy, it only means "this run
has not finished", and resuming the run writes it again.
"""

from __future__ import annotations

import errno
import json
import math
from pathlib import Path
from typing import Any

from weight_compander.harness.config.settings import TrainConfig
from weight_compander.harness.errors import ConfigError, RunFileError

__all__ = [
    "FIX_CONFIG", "RUN_FILES", "os_error_message", "parse_config", "read_config",
    "read_final", "read_json", "read_jsonl", "read_text",
]

# The files that make a folder a run folder.
RUN_FILES = ("config.json", "final.json", "metrics.jsonl", "checkpoint.pt", "checkpoint-prev.pt")

# What to do about a damaged config.json: the run's checkpoint holds the same settings.
FIX_CONFIG = ("delete it: `compare` (or `train --resume` with the run's settings) restores it "
              "from the run's checkpoint; or delete the run folder to train the run again")




def read_text(path: Path, fix: str) -> str:
    """A harness file's text (UTF-8); a file that is not UTF-8 is a RunFileError."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise RunFileError(f"{path} is not UTF-8 text (byte {err.object[err.start]:#04x} at "
                           f"position {err.start}); {fix}") from None


def read_json(path: str | Path, fix: str) -> Any:
    """Parse a JSON file; empty or invalid JSON is a RunFileError naming `path` and `fix`."""
    path = Path(path)
    text = read_text(path, fix)
    if not text.strip():
        raise RunFileError(f"{path} is empty; {fix}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise RunFileError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column "
                           f"{err.colno}); {fix}") from None


def read_jsonl(path: str | Path, fix: str) -> list[dict[str, Any]]:
    """One JSON object per line (blank lines skipped); a bad line is named by its number."""
    path = Path(path)
    rows = []
    for number, line in enumerate(read_text(path, fix).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise RunFileError(f"{path}, line {number}, is not valid JSON ({err.msg}); {fix}") from None
        if not isinstance(row, dict):
            raise RunFileError(f"{path}, line {number}, is not a JSON object; {fix}")
        rows.append(row)
    return rows


def read_config(path: str | Path) -> TrainConfig:
    """A run's config.json as a TrainConfig (its "meta" entry ignored; missing keys: defaults)."""
    return parse_config(read_json(path, FIX_CONFIG), path)


def parse_config(data: Any, path: str | Path) -> TrainConfig:
    """The TrainConfig in a parsed config.json; anything else is a RunFileError naming `path`."""
    if not isinstance(data, dict):
        raise RunFileError(f"{path} does not hold a run's settings (a JSON object); {FIX_CONFIG}")
    try:
        return TrainConfig.from_dict({k: v for k, v in data.items() if k != "meta"},
                                     source=str(path))
    except ConfigError as err:
        raise RunFileError(f"{err}; {FIX_CONFIG}") from None


def read_final(run_dir: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """(final metrics, None) for a finished run, else (None, why it does not count as finished).

    A run is finished iff its final.json is a JSON object with a finite test accuracy; an
    empty or corrupt one (a crash, a full disk, a hand edit) is an unfinished run, which a
    resume completes from its last checkpoint.
    """
    path = Path(run_dir) / "final.json"
    if not path.exists():
        return None, "no final.json"
    try:
        final = read_json(path, "")
    except RunFileError as err:
        return None, str(err).removesuffix("; ")
    acc = final.get("test_acc") if isinstance(final, dict) else None
    if not isinstance(acc, int | float) or isinstance(acc, bool) or not math.isfinite(acc):
        return None, f"{path} has no test accuracy"
    return final, None


def os_error_message(err: OSError, command: str | None = None) -> str:
    """One line for an OS error: which file, what went wrong, and what to do about it.

    `command` ("train", "compare", "report", ...) picks the advice on how to continue.
    """
    name = err.filename or "a file"
    if err.filename2:
        name = f"{err.filename} -> {err.filename2}"
    again = {
        "train": "then continue the run with `train --resume` (same settings and --out); its "
                 "last checkpoint is kept",
        "report": "then run the report again",
    }.get(command or "", "then re-run the same command: finished runs are skipped and "
                         "interrupted ones continue from their last checkpoint")
    where = "choose a folder you can write to (--out)" if command != "report" else (
        "`report` writes report.md and figures/ into RUNS_DIR; copy the folder somewhere writable")
    code = err.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"disk full while writing {name} ({err.strerror}); free some space, {again}"
    if code in (errno.EACCES, errno.EPERM):
        return f"no permission to access {name}; fix its permissions or {where}"
    if code == errno.EROFS:
        return f"{name} is on a read-only file system; {where}"
    if code == errno.ENOTDIR:
        return f"{name}: part of this path is a file, not a folder; choose another path"
    if code == errno.EISDIR:
        return f"{name} is a folder, not a file; pass a file"
    if code == errno.ENOENT:
        return f"{name} does not exist; check the path"
    return f"{name}: {err.strerror or err}; fix that, {again}"
