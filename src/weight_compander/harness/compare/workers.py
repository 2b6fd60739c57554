"""The worker processes of ``compare --jobs N``, and one run of a comparison in any process.

Each worker gets cores/N torch threads, records SIGTERM / SIGINT instead of dying (so a
stopping comparison starts no new run in it) and stops on its own if `compare` dies
(parentwatch.py). `run_one` trains a run under its folder's lock and turns an ordinary
failure into a result, so one failed run stops no other.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import time
import traceback
from pathlib import Path
from typing import Any

from weight_compander.harness.compare import parentwatch
from weight_compander.harness.config.settings import TrainConfig
from weight_compander.harness.errors import RunBusyError, RunInterrupted
from weight_compander.harness.run import train
from weight_compander.harness.run.stopping import StopRequest
from weight_compander.harness.store import atomic, runfiles, runlock

__all__ = ["STOPPED", "cores", "init_worker", "run_one", "stop_workers", "stopped"]

STOPPED = ("compare stopped by {signal}; finished runs are kept and interrupted ones have a "
           "checkpoint: re-run the same command to continue")


_worker_stop: StopRequest | None = None  # in a worker process: set once a stop signal came
_running = False  # in a worker process: a run is in progress (for the parent watchdog)


def init_worker(threads: int, parent: int) -> None:
    """Split the cores between parallel runs instead of letting each take all of them.

    A worker records SIGTERM / SIGINT rather than dying, so a stopping comparison starts
    no new run in it; a run in progress has its own handler (train.run) and checkpoints.
    If the `compare` process dies however it dies, the worker stops and exits (parentwatch).
    """
    global _worker_stop
    parentwatch.watch_parent(parent, lambda: _running)  # first: also while torch imports
    import torch

    torch.set_num_threads(threads)
    _worker_stop = StopRequest().__enter__()  # for the worker's lifetime


def _check_stop(run_dir: str) -> None:
    """While waiting for another process's run: give up if this worker was told to stop."""
    if _worker_stop is not None and _worker_stop.signum is not None:
        raise RunInterrupted(_worker_stop.signum, f"{run_dir} not started: stopping")


def run_one(
    config: TrainConfig, run_dir: str, progress: bool | str, wait: bool = False
) -> dict[str, Any]:
    """Train one run under its folder's lock; never raises an ordinary exception, so one
    failed run stops no other (an OSError, e.g. a full disk, does: it is not the run's fault).

    Returns {"busy": holder} if another process trains the run and `wait` is off, and
    "trained": False if the run turned out finished (by another process) once locked.
    """
    global _running
    start = time.perf_counter()
    _check_stop(run_dir)
    try:
        with runlock.run_lock(run_dir, wait=wait, stop=lambda: _check_stop(run_dir)):
            done, _ = runfiles.read_final(run_dir)
            if done is not None and (Path(run_dir) / "config.json").exists():
                return {"ok": True, "trained": False, "test_acc": float(done["test_acc"]),
                        "seconds": time.perf_counter() - start}
            (Path(run_dir) / "error.log").unlink(missing_ok=True)  # from an earlier failed attempt
            _running = True
            try:  # resume: continues a checkpoint if there is one, else starts the run
                final = train.run(config, Path(run_dir), resume=True, progress=progress)
            finally:  # (a finished run without config.json only gets it restored)
                _running = False
    except RunBusyError as err:
        return {"busy": err.holder}
    except RunInterrupted as err:
        if _worker_stop is not None:
            _worker_stop.signum = err.signum  # this worker starts nothing else
        raise
    except OSError:
        raise
    except Exception as err:
        atomic.write_text(Path(run_dir) / "error.log", traceback.format_exc())
        return {"ok": False, "error": f"{type(err).__name__}: {err}",
                "seconds": time.perf_counter() - start}
    return {"ok": True, "trained": done is None, "test_acc": float(final["test_acc"]),
            "seconds": time.perf_counter() - start}


def stopped(signum: int, detail: str = "") -> RunInterrupted:
    text = STOPPED.format(signal=signal.Signals(signum).name)
    return RunInterrupted(signum, f"{text} ({detail})" if detail else text)


def stop_workers(pool: cf.ProcessPoolExecutor, stop: StopRequest, others: set[Any]) -> None:
    """Cancel queued runs and SIGTERM the workers until they have exited.

    Each running run finishes its step and writes a checkpoint first. The signal is
    repeated, as a run that was just starting may have missed the first; a second stop
    signal to `compare` kills the workers at once. `others`: child processes that are not
    the pool's.
    """
    pool.shutdown(wait=False, cancel_futures=True)
    workers = [p for p in multiprocessing.active_children() if p not in others]
    first = stop.count
    while any(p.is_alive() for p in workers):
        for p in workers:
            if p.is_alive():
                (p.kill if stop.count > first else p.terminate)()
        for p in workers:
            p.join(timeout=0.5 / len(workers))


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
