"""Stop cleanly on SIGTERM / SIGINT (Ctrl-C) instead of dying where the signal lands.

While a `StopRequest` is active, the two signals are only recorded; the training loop
looks at the record after every step, writes a checkpoint and raises `RunInterrupted`,
which the command line turns into exit code 143 (SIGTERM) or 130 (SIGINT). Schedulers
(SLURM, Kubernetes, torchrun) send SIGTERM and wait a grace period before SIGKILL, so
stopping at the next step boundary keeps all work done so far.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

from weight_compander.harness.errors import RunInterrupted

__all__ = ["SIGNALS", "StopRequest", "signal_name"]

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class StopRequest:
    """Context manager: SIGTERM / SIGINT are recorded in `signum` instead of ending the process.

    `signum` is the first signal received, `count` how many arrived (a second Ctrl-C can
    mean "stop now").

    Args:
        immediate: raise `RunInterrupted` with this message from the first signal at once
            (for code that waits rather than computes, e.g. `compare` waiting on workers).
            Further signals are only recorded, so a second Ctrl-C cannot break the clean-up.

    Outside the main thread signal handlers cannot be installed; then nothing changes.
    Nested requests work: leaving one restores the handlers that were there before.
    """

    def __init__(self, immediate: str | None = None) -> None:
        self.immediate = immediate
        self.signum: int | None = None
        self.count = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._record) for s in SIGNALS}
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        first = self.signum is None
        if first:
            self.signum = signum
        if first and self.immediate is not None:
            raise RunInterrupted(signum, self.immediate.format(signal=signal_name(signum)))
