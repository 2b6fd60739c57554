"""Worker processes that end when their parent ends, however the parent ends.

`compare --jobs N` trains in a pool of worker processes. When the parent dies without
stopping them (SIGKILL, the out-of-memory killer, a closed terminal), nothing tells the
workers: they would wait for work forever, a few hundred MB each, and since they record
SIGTERM to stop cleanly, even a plain ``kill`` would not end an idle one.

A daemon thread polls ``os.getppid()``, which changes as soon as the parent is gone (the
orphan is adopted by init or a subreaper). Then the worker stops its run the way SIGTERM
does (after the current step, with a checkpoint, so re-running `compare` continues it) and
exits; an idle worker exits at once. Why not ``prctl(PR_SET_PDEATHSIG)``: it is Linux
only, and it fires when the *thread* that started the worker exits, not the process.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

__all__ = ["watch_parent"]

POLL = 0.5  # seconds between looks at the parent
GRACE = 10.0  # seconds a run in progress gets to write its checkpoint before the exit


def watch_parent(parent: int, busy: Callable[[], bool], *, poll: float = POLL,
                 grace: float = GRACE) -> threading.Thread:
    """Start the watchdog: exit this process soon after process `parent` is gone.

    `busy()` says whether a run is in progress; it gets SIGTERM and up to `grace` seconds.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        if busy():
            os.kill(os.getpid(), signal.SIGTERM)  # the run stops after its step, checkpointed
            end = time.monotonic() + grace
            while busy() and time.monotonic() < end:
                time.sleep(0.05)
        os._exit(1)

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread
