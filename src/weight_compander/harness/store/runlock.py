"""One process per run folder: locks that the operating system releases when their holder dies.

Why `flock`: the kernel drops the lock when the holding process exits however it exits
(SIGKILL and out-of-memory included), so there is never a stale lock to clean up by hand,
and a second process finds out at once whether the holder is still alive. Lock files are
never deleted (deleting one races with a process that has just opened it); each holds the
last exclusive holder's description, for the message a second process prints.

- ``RUN/.lock`` (`run_lock`): held by the process that trains the run, for the run's whole
  life. A second `train` on the folder is refused; a second `compare` trains other runs
  first and then waits for this one.
- ``COMPARISON/.compare.lock`` (`ComparisonLock`): every `compare` working on the folder
  holds it shared; exclusively only while it checks the folder and writes compare.json,
  so a second `compare` sees the first one's compare.json and joins it only if it is the
  same comparison.
- ``FOLDER/.write.lock`` (`write_lock`): held for a moment around a read-modify-write of
  summary.json and around writing a report.

Where `fcntl` does not exist (Windows), the locks do nothing.
"""

from __future__ import annotations

import datetime
import errno
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from weight_compander.harness.errors import ConfigError, RunBusyError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "RUN_LOCK", "ComparisonLock", "FileLock", "run_lock", "write_lock",
]

RUN_LOCK = ".lock"
POLL = 0.2  # seconds between tries while waiting for a lock




class FileLock:
    """An `flock` on one file, shared or exclusive, taken without blocking or by polling.

    Polling instead of a blocking ``flock`` keeps a waiting process responsive to its stop
    signals (a blocked ``flock`` call is simply restarted after the signal handler).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._writable = False
        self.shared: bool | None = None  # None: not held

    def try_acquire(self, shared: bool = False) -> bool:
        """Take the lock if nobody holds it in a conflicting mode; never blocks."""
        if fcntl is None:  # pragma: no cover
            self.shared = shared
            return True
        if self._fd is None:
            self._open()
        try:
            fcntl.flock(self._fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self.shared = shared
        if not shared:
            self._stamp()
        return True

    def acquire(self, shared: bool = False, wait: bool = True,
                stop: Callable[[], None] | None = None) -> bool:
        """Take the lock; with `wait`, poll until it is free (`stop()` may raise to give up)."""
        while not self.try_acquire(shared):
            if not wait:
                return False
            if stop is not None:
                stop()
            time.sleep(POLL)
        return True

    def share(self) -> None:
        """Turn an exclusive lock into a shared one (never conflicts, so never waits)."""
        if fcntl is not None and self._fd is not None and self.shared is False:
            fcntl.flock(self._fd, fcntl.LOCK_SH)
        self.shared = True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the lock
            self._fd = None
        self.shared = None

    def holder(self) -> str:
        """Who took the lock exclusively last (pid, host, command, time), as it wrote it."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            text = ""
        return text or "another process"

    def _open(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies
            self._writable = True
        except OSError as err:  # a folder we may read but not write (a colleague's, read-only)
            if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS) or not self.path.exists():
                raise
            self._fd = os.open(self.path, os.O_RDONLY)  # flock needs no write access
            self._writable = False

    def _stamp(self) -> None:
        if not self._writable or self._fd is None:
            return
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "python"
        since = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        text = f"process {os.getpid()} on {socket.gethostname()} (`{command}`, since {since})\n"
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, text.encode("utf-8", "replace"), 0)
        except OSError:  # e.g. a full disk: the lock itself still holds
            pass


_held: dict[Path, FileLock] = {}  # run locks this process holds (re-entered, not re-taken)


@contextmanager
def run_lock(
    run_dir: str | Path, *, wait: bool = False, stop: Callable[[], None] | None = None
) -> Iterator[FileLock]:
    """Hold ``run_dir/.lock`` for the block; create the folder if needed.

    Re-entrant within a process (`compare` takes the lock, then `train.run` takes it
    again). Without `wait`, a folder held by another process raises `RunBusyError`.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is a file, not a run folder; choose another --out")
    key = (run_dir / RUN_LOCK).resolve()
    if key in _held:
        yield _held[key]
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(run_dir / RUN_LOCK)
    if not lock.acquire(wait=wait, stop=stop):
        lock.release()
        err = RunBusyError(f"{run_dir} is being trained by {lock.holder()}; wait for that run "
                           "to finish (or stop it), or choose another --out")
        err.holder = lock.holder()
        raise err
    _held[key] = lock
    try:
        yield lock
    finally:
        del _held[key]
        lock.release()


@contextmanager
def write_lock(folder: str | Path, stop: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold ``folder/.write.lock`` (waiting for it) for a short read-modify-write."""
    lock = FileLock(Path(folder) / ".write.lock")
    lock.acquire(wait=True, stop=stop)
    try:
        yield
    finally:
        lock.release()


class ComparisonLock:
    """``COMPARISON/.compare.lock``: exclusive while one `compare` sets the folder up, shared after.

    `others` says whether another `compare` was already working on the folder when this one
    got in; it has then written compare.json, which this one must match to join.
    """

    def __init__(self, out: str | Path) -> None:
        self.lock = FileLock(Path(out) / ".compare.lock")
        self.others = False

    def __enter__(self) -> ComparisonLock:
        while True:  # exclusive if we are alone; shared once the others have set up
            if self.lock.try_acquire(shared=False):
                self.others = False
                return self
            if self.lock.try_acquire(shared=True):
                self.others = True
                return self
            time.sleep(POLL)

    def set_up(self) -> None:
        """compare.json is written: let other `compare`s of the same comparison join."""
        self.lock.share()

    def holder(self) -> str:
        return self.lock.holder()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()
