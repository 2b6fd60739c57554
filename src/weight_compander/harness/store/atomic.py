"""All-or-nothing writes of harness files, as UTF-8, with the user's umask.

Every file the harness writes (config.json, metrics.jsonl, final.json, compare.json,
summary.json, report.md, figures, error.log; checkpoints in checkpoint.py) goes to a
temporary file in the same folder, is flushed to disk and renamed over the target. A
reader, a kill or a full disk therefore leaves the old file or the new one, never a
truncated one. Text is always UTF-8, whatever the locale: the files are shared between
machines and users, and a report must not depend on who wrote it.

Why not `tempfile.mkstemp`: it creates files with mode 0600 whatever the umask, so
colleagues on a shared machine could not read the results. `create_temp` opens the temp
file with mode 0666 and lets the kernel apply the umask, as `open()` does.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["create_temp", "fsync_dir", "open_atomic", "write_bytes", "write_json", "write_text"]


def create_temp(folder: str | Path, prefix: str, suffix: str = ".tmp") -> tuple[int, Path]:
    """A new, uniquely named file in `folder` opened for writing: (fd, path).

    The mode is 0666 minus the umask, like any file a program creates with ``open``.
    """
    folder = Path(folder)
    for _ in range(100):
        path = folder / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file in {folder}")  # pragma: no cover


@contextmanager
def open_atomic(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Write `path` through a file object; it replaces `path` only if the block completes.

    ``mode`` is "w" (text, UTF-8, "\\n" line ends) or "wb". An exception inside the block
    (including a full disk) leaves `path` as it was and removes the temp file.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    fd, tmp = create_temp(path.parent, prefix=f".{path.name}-")
    try:
        text = {"encoding": "utf-8", "newline": "\n"} if mode == "w" else {}
        with os.fdopen(fd, mode, **text) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno is not None and err.filename in (None, str(tmp)):  # name the user's file
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Atomic UTF-8 write: readers see the old file or the new one, never half of one."""
    with open_atomic(path, "w") as fh:
        fh.write(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    with open_atomic(path, "wb") as fh:
        fh.write(data)


def write_json(path: str | Path, obj: Any) -> None:
    """Atomic JSON, indented, ending in a newline.

    Non-ASCII characters are escaped (JSON's default), so the file is plain ASCII and reads
    the same under any locale, also for tools that forget to say "UTF-8".
    """
    write_text(path, json.dumps(obj, indent=2) + "\n")


def fsync_dir(path: str | Path) -> None:
    """Make the renames in `path` survive a power cut (a no-op where folders cannot be opened)."""
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
