"""Scheduling a comparison's runs: one at a time, or in the worker processes of ``--jobs N``.

`schedule` trains every run still to do. Each worker gets cores/N torch threads, records
SIGTERM / SIGINT instead of dying (so a stopping comparison starts no new run in it) and stops
on its own if `compare` dies (parentwatch.py). `run_one` trains a run under its folder's lock,
then evaluates its robustness suite if the comparison has one, and turns an ordinary failure
into a result, so one failed run stops no other.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

from weight_compander.harness.compare import parentwatch
from weight_compander.harness.config.settings import TrainConfig
from weight_compander.harness.config.suite import Suite
from weight_compander.harness.errors import RunBusyError, RunInterrupted
from weight_compander.harness.evaluate import robustness
from weight_compander.harness.run import train
from weight_compander.harness.run.loop import RESUME_HINT
from weight_compander.harness.run.stopping import StopRequest
from weight_compander.harness.store import atomic, runfiles, runlock

__all__ = ["STOPPED", "cores", "init_worker", "run_one", "schedule", "stop_workers", "stopped"]

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


def _check_stop(run_dir: str, what: str = "not started") -> None:
    """While waiting for another process's run, or evaluating one: give up if this worker was
    told to stop."""
    if _worker_stop is not None and _worker_stop.signum is not None:
        raise RunInterrupted(_worker_stop.signum, f"{run_dir} {what}: stopping")


def run_one(
    config: TrainConfig, run_dir: str, suite: Suite | None, progress: bool | str, wait: bool = False
) -> dict[str, Any]:
    """Train one run under its folder's lock, then evaluate `suite` on it (unless its
    robustness.json is current); never raises an ordinary exception, so one failed run stops
    no other (an OSError, e.g. a full disk, does: it is not the run's fault).

    Returns {"busy": holder} if another process trains the run and `wait` is off, and
    "trained": False if the run turned out finished (by another process) once locked. A
    robustness failure leaves the run finished: "robustness_error" holds the error (the
    comparison retries it after training); else "robustness" holds the new entry's log line.
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
                evaluated = _evaluate(run_dir, suite)
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
            "seconds": time.perf_counter() - start, **evaluated}


def _evaluate(run_dir: str, suite: Suite | None) -> dict[str, str]:
    """Robustness right after training, while the checkpoint is surely there; {} if none asked."""
    if suite is None or robustness.is_current(run_dir, suite):
        return {}
    # a stop signal ends the evaluation after its current condition (nothing written; a
    # re-run evaluates the run), as it ends training after the current step
    tick = functools.partial(_check_stop, run_dir, "trained, robustness not evaluated")
    try:
        return {"robustness": robustness.describe(robustness.evaluate_and_save(run_dir, suite, tick=tick))}
    except OSError:
        raise
    except Exception as err:  # the run is finished all the same; the comparison retries later
        return {"robustness_error": f"{type(err).__name__}: {err}"}


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


def schedule(
    todo: Sequence[Hashable], job: Callable[[Any], tuple[TrainConfig, str, Suite | None]],
    finished: Callable[[Any, dict[str, Any]], bool], jobs: int, progress: bool, log: Callable[[str], None],
) -> None:
    """Train the run of every key in `todo`, one at a time here (`jobs` 1) or in `jobs` workers.

    `job(key)` gives the run's settings, folder and robustness suite (or None);
    `finished(key, result)` is told each outcome (see `run_one`) and returns False for a run
    another process holds: those get a second round that waits for their lock. A stop signal
    stops the comparison cleanly (`STOPPED`); an OSError (the disk, a folder) stops it at once.
    """
    # Two rounds: first every run nobody else holds, then (wait=True) the ones others held.
    pending, wait = todo, False
    if jobs == 1:
        with StopRequest(immediate=STOPPED):  # between runs; a run stops itself (train.run)
            try:
                while pending:
                    later = [key for key in pending if not finished(
                        key, run_one(*job(key), progress if progress else "quiet", wait))]
                    pending, wait = later, True
            except RunInterrupted as err:  # from a run (after its checkpoint) or between runs
                if err.message.startswith("compare stopped"):
                    raise
                raise stopped(err.signum, err.message.removesuffix(RESUME_HINT)) from None
    elif todo:
        ctx = multiprocessing.get_context("spawn")
        threads = max(1, cores() // jobs)
        others = set(multiprocessing.active_children())
        with StopRequest(immediate=STOPPED) as stop, cf.ProcessPoolExecutor(
                jobs, mp_context=ctx, initializer=init_worker,
                initargs=(threads, os.getpid())) as pool:
            try:
                while pending:
                    futures = {pool.submit(run_one, *job(key), "quiet", wait): key
                               for key in pending}
                    pending, wait = [], True
                    for fut in cf.as_completed(futures):
                        try:
                            result = fut.result()
                        except OSError:  # the disk or a folder, not the run: stop, name the file
                            stop_workers(pool, stop, others)
                            raise
                        except Exception as err:  # the worker process died (e.g. out of memory)
                            result = {"ok": False, "error": f"worker died: {err!r}", "seconds": 0.0}
                        if not finished(futures[fut], result):
                            pending.append(futures[fut])
            except KeyboardInterrupt as err:  # RunInterrupted: a stop signal, here or in a worker
                log("stopping: running runs finish their step and write a checkpoint "
                    "(a second Ctrl-C kills them)")
                stop_workers(pool, stop, others)
                raise stopped(getattr(err, "signum", signal.SIGINT)) from None
