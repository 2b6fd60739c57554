"""`weight-compander` with slow checkpoint writes, so a test's SIGKILL can land inside one.

    python fault_worker.py train ...   one run, exactly `python -m weight_compander train ...`
    python fault_worker.py --serve     fork server: imports torch once, then for each JSON line
                                       [argv, env, log] on stdin forks a run (output to log),
                                       prints "pid N", and "exit CODE" when it ends

With WC_FAULT_MARKS set, checkpoint.save pauses WC_FAULT_DELAY seconds at three points:
"write" (half the temp file written), "between" (checkpoint.pt renamed to
checkpoint-prev.pt, the new one not yet in place) and "published" (new checkpoint in
place, directory not yet synced). Before each pause it creates the empty file
WC_FAULT_MARKS/<WC_FAULT_TAG>-<phase>-<count>, so the test knows where the run is when it
kills it. Only the timing changes; what is written is what checkpoint.save writes.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path

import torch

from weight_compander.harness import cli
from weight_compander.harness.store import checkpoint

_counts: dict[str, int] = {}


def _pause(phase: str) -> None:
    marks = os.environ.get("WC_FAULT_MARKS")
    if not marks:
        return
    _counts[phase] = _counts.get(phase, 0) + 1
    tag = os.environ.get("WC_FAULT_TAG", "0")
    (Path(marks) / f"{tag}-{phase}-{_counts[phase]}").touch()
    time.sleep(float(os.environ.get("WC_FAULT_DELAY", "0.2")))


class _SlowTorch:
    def __getattr__(self, name: str):
        return getattr(torch, name)

    def save(self, obj, f) -> None:
        buf = io.BytesIO()
        torch.save(obj, buf)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        _pause("write")
        f.write(data[len(data) // 2:])


class _SlowOS:
    def __getattr__(self, name: str):
        return getattr(os, name)

    def replace(self, src, dst) -> None:
        os.replace(src, dst)
        if Path(dst).name == checkpoint.PREVIOUS:
            _pause("between")
        elif Path(dst).name == checkpoint.CHECKPOINT:
            _pause("published")


checkpoint.torch = _SlowTorch()
checkpoint.os = _SlowOS()


def serve() -> None:
    for line in sys.stdin:
        argv, env, log = json.loads(line)
        pid = os.fork()
        if pid == 0:  # the run: fresh process state except the imports
            code = 1
            try:
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                os.environ.update(env)
                code = cli.main(argv)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exit {os.waitstatus_to_exitcode(status)}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        import sklearn.datasets  # noqa: F401  (the slow imports, done once before forking)
        import torch._dynamo  # (imported by the first optimizer step)

        from weight_compander.harness.run import train  # noqa: F401

        serve()
    else:
        sys.exit(cli.main(sys.argv[1:]))
