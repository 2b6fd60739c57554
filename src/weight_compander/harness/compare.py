"""`weight-compander compare CONFIG.toml`: named variants × seeds → run folders and a summary.

A comparison TOML names the seeds, the baseline, the settings shared by all variants
(`[defaults]`) and each variant's changes (`[variants.NAME]`)::

    name = "demo"
    seeds = [0, 1]
    baseline = "base"
    [defaults]
    dataset = "fashion-mnist"
    model = "cnn"
    [variants.base]
    [variants.wc-learn]
    reparam = "wc"
    wc_learnable = true

Every variant runs with every seed, so differences to the baseline are paired (same data
order and init). A run is complete iff its `final.json` is valid (and its config.json is
there): re-running skips complete runs and resumes any other, so an interrupted comparison
continues where it stopped. Each run is trained under its folder's lock, so two `compare`s
of one comparison on one folder train every run once (runlock.py); summary.json and the
report count exactly the runs that belong to the comparison as it is now (membership.py).
A top-level ``robustness = true`` (or a table of suite options, see robustness.py) evaluates
every finished run with `robustness` after training (evaluated runs are skipped too).
SIGTERM / SIGINT (Ctrl-C) stop a comparison cleanly: queued runs do not start, running
ones finish their step and write a checkpoint, the workers exit, and the command exits
143 / 130; a second signal kills the workers at once, and if `compare` itself dies, its
workers stop and exit on their own (parentwatch.py).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing
import os
import re
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import atomic, membership, parentwatch, runfiles, runlock
from .config import ConfigError, TrainConfig, read_toml
from .stopping import RunInterrupted, StopRequest

STOPPED = ("compare stopped by {signal}; finished runs are kept and interrupted ones have a "
           "checkpoint: re-run the same command to continue")

FIX_SUMMARY = ("delete it: the next `compare` writes a new one (the record of earlier invocations "
               "and their CPU time is lost)")
TOP_KEYS = ("name", "description", "seeds", "baseline", "defaults", "variants", "robustness")
VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class CompareError(ValueError):
    """The comparison TOML (or an existing run folder) does not fit; the message says why."""


@dataclass
class Comparison:
    """A validated comparison: one resolved TrainConfig per variant (seed set per run)."""

    name: str
    seeds: list[int]
    baseline: str
    variants: dict[str, TrainConfig]
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    source: str = "comparison"
    description: str = ""
    robustness: dict[str, Any] | None = None  # `robustness` suite options after training; None: off

    def config(self, variant: str, seed: int) -> TrainConfig:
        return self.variants[variant].replace(seed=seed)

    def to_dict(self) -> dict[str, Any]:
        """The resolved comparison, as written to compare.json."""
        return {
            "name": self.name, "description": self.description, "source": self.source,
            "seeds": self.seeds, "baseline": self.baseline, "defaults": self.defaults,
            "variants": {v: {"overrides": self.overrides.get(v, {}),
                             "config": {k: x for k, x in c.to_dict().items() if k != "seed"}}
                         for v, c in self.variants.items()},
            **({"robustness": self.robustness} if self.robustness is not None else {}),
        }


def comparison_from_dict(data: dict[str, Any], *, source: str = "comparison") -> Comparison:
    """Check a parsed comparison TOML; every problem is a CompareError naming the key."""
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise CompareError(f"{source}: unknown key(s) {', '.join(unknown)}; valid top-level "
                           f"keys: {', '.join(TOP_KEYS)} (training settings go in [defaults] "
                           "or [variants.NAME])")
    name = data.get("name", Path(source).stem)
    if not isinstance(name, str) or not VARIANT_NAME.match(name):
        raise CompareError(f"{source}: name must be a folder-safe string, got {name!r}")
    seeds = data.get("seeds")
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise CompareError(f"{source}: seeds must be a non-empty list of integers >= 0, "
                           f"e.g. seeds = [0, 1, 2]; got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise CompareError(f"{source}: seeds {seeds} repeat a seed; list each seed once")
    defaults = data.get("defaults", {})
    variants = data.get("variants")
    if not isinstance(defaults, dict):
        raise CompareError(f"{source}: [defaults] must be a table of training settings")
    if not isinstance(variants, dict) or not variants:
        raise CompareError(f"{source}: no variants; add at least one [variants.NAME] table "
                           "(an empty table runs the defaults)")
    for vname, overrides in variants.items():
        if not VARIANT_NAME.match(vname):
            raise CompareError(f"{source}: variant name {vname!r} must be folder-safe "
                               "(letters, digits, _ . + -)")
        if not isinstance(overrides, dict):
            raise CompareError(f"{source}: variants.{vname} must be a table, got {overrides!r}")
    fields = set(TrainConfig.__dataclass_fields__)
    for where, table in [("[defaults]", defaults), *((f"[variants.{k}]", v)
                                                     for k, v in variants.items())]:
        unknown = sorted(set(table) - fields)
        if unknown:
            raise CompareError(f"{source} {where}: unknown key(s) {', '.join(unknown)}; valid "
                               f"keys are the TrainConfig fields: {', '.join(sorted(fields))}")
    baseline = data.get("baseline", next(iter(variants)))
    if baseline not in variants:
        raise CompareError(f"{source}: baseline {baseline!r} is not a variant; variants: "
                           f"{', '.join(variants)}")
    configs: dict[str, TrainConfig] = {}
    for vname, overrides in variants.items():
        settings = {**defaults, **overrides}
        if "seed" in settings:
            raise CompareError(f"{source}: 'seed' is set by the top-level seeds list; remove it "
                               f"from {'[defaults]' if 'seed' in defaults else vname}")
        try:
            configs[vname] = TrainConfig.from_dict(settings, source=f"{source} [variants.{vname}]")
        except ConfigError as err:
            msg = str(err)
            if not msg.startswith(source):
                msg = f"{source} [variants.{vname}]: {msg}"
            raise CompareError(msg) from None
    return Comparison(name, list(seeds), baseline, configs, dict(variants), dict(defaults),
                      source, str(data.get("description", "")), _robustness_options(data, source))


def _robustness_options(data: dict[str, Any], source: str) -> dict[str, Any] | None:
    """``robustness = true`` (the default suite) or a table of suite options; checked now."""
    value = data.get("robustness", False)
    if value is False:
        return None
    if value is not True and not isinstance(value, dict):
        raise CompareError(f"{source}: robustness must be true, false or a table of suite options, "
                           f"got {value!r}")
    from .robustness import Suite

    options = {} if value is True else dict(value)
    try:
        Suite.from_options(options, source=f"{source} [robustness]")
    except ConfigError as err:
        raise CompareError(str(err)) from None
    return options


def load_comparison(path: str | Path) -> Comparison:
    """Read and check a comparison TOML file."""
    return comparison_from_dict(read_toml(path, CompareError, "comparison file"), source=str(path))


def run_dir_of(out: Path, variant: str, seed: int) -> Path:
    return Path(out) / variant / f"seed{seed}"


def _check_existing(comparison: Comparison, out: Path) -> None:
    """Refuse to mix runs made with other settings into this comparison's folders."""
    for variant in comparison.variants:
        for seed in comparison.seeds:
            path = run_dir_of(out, variant, seed) / "config.json"
            if not path.exists():
                continue
            want = comparison.config(variant, seed).resolved()
            have = runfiles.read_config(path).resolved()
            changed = membership.differences(have, want)
            if changed:
                what = ", ".join(f"{k}: {getattr(have, k)!r} -> {getattr(want, k)!r}"
                                 for k in changed)
                raise CompareError(f"{path.parent} was made with other settings ({what}); "
                                   "delete that folder to re-run it, or pass another --out")


# --------------------------------------------------------------------------- running


_worker_stop: StopRequest | None = None  # in a worker process: set once a stop signal came
_running = False  # in a worker process: a run is in progress (for the parent watchdog)


def _init_worker(threads: int, parent: int) -> None:
    """Split the cores between parallel runs instead of letting each take all of them.

    A worker records SIGTERM / SIGINT rather than dying, so a stopping comparison starts
    no new run in it; a run in progress has its own handler (train.run) and checkpoints.
    If the `compare` process dies however it dies, the worker stops and exits (parentwatch).
    """
    global _worker_stop
    parentwatch.watch_parent(parent, lambda: _running)  # first: also while torch imports
    import torch

    from . import train  # noqa: F401  (imported here, so a run's time is the run's own)

    torch.set_num_threads(threads)
    _worker_stop = StopRequest().__enter__()  # for the worker's lifetime


def _check_stop(run_dir: str) -> None:
    """While waiting for another process's run: give up if this worker was told to stop."""
    if _worker_stop is not None and _worker_stop.signum is not None:
        raise RunInterrupted(_worker_stop.signum, f"{run_dir} not started: stopping")


def _run_one(
    config: TrainConfig, run_dir: str, progress: bool | str, wait: bool = False
) -> dict[str, Any]:
    """Train one run under its folder's lock; never raises an ordinary exception, so one
    failed run stops no other (an OSError, e.g. a full disk, does: it is not the run's fault).

    Returns {"busy": holder} if another process trains the run and `wait` is off, and
    "trained": False if the run turned out finished (by another process) once locked.
    """
    from . import train

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
    except runlock.RunBusyError as err:
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


def _stopped(signum: int, detail: str = "") -> RunInterrupted:
    text = STOPPED.format(signal=signal.Signals(signum).name)
    return RunInterrupted(signum, f"{text} ({detail})" if detail else text)


def _stop_workers(pool: cf.ProcessPoolExecutor, stop: StopRequest, others: set[Any]) -> None:
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


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_comparison(
    comparison: Comparison, out: str | Path, *, jobs: int = 1, progress: bool = True,
    report: bool = True, log: Any = print,
) -> dict[str, Any]:
    """Run every missing (variant, seed), then write summary.json (and the report).

    Several `compare`s of the same comparison may work on one folder at once: each trains
    the runs no other process is training, then waits for the rest (runlock.py), so every
    run is trained once. A different comparison on a folder in use is refused.

    Returns the summary; its "failed" list names the runs that raised.
    """
    out = Path(out)
    if jobs < 1:
        raise CompareError(f"--jobs must be >= 1, got {jobs}")
    if out.exists() and not out.is_dir():
        raise CompareError(f"--out {out} is a file, not a folder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    with runlock.ComparisonLock(out) as session:
        _set_up(comparison, out, session)
        return _run_comparison(comparison, out, jobs, progress, report, log)


def _set_up(comparison: Comparison, out: Path, session: runlock.ComparisonLock) -> None:
    """Check the folder before any run, then publish the comparison as compare.json."""
    if session.others:  # another compare works here: join it only for the same comparison
        theirs = membership.load_comparison_info(out)
        mine = membership.comparison_info(comparison.to_dict(), out / "compare.json")
        why = theirs.differs_from(mine) if theirs is not None else None
        if why:
            raise CompareError(f"{out} is in use by another compare of a different comparison "
                               f"({why}), started by {session.holder()}; wait for it to finish, "
                               "or pass another --out")
    _check_existing(comparison, out)
    _previous_invocations(out)  # a damaged summary.json stops us before any run
    atomic.write_json(out / "compare.json", comparison.to_dict())
    session.set_up()


def _finished(run_dir: Path) -> bool:
    """A valid final.json and a config.json (a missing one is restored by resuming)."""
    return runfiles.read_final(run_dir)[0] is not None and (run_dir / "config.json").exists()


def _run_comparison(
    comparison: Comparison, out: Path, jobs: int, progress: bool, report: bool, log: Any
) -> dict[str, Any]:
    # Seed-major order: an interrupted comparison has complete paired sets early.
    every = [(v, s) for s in comparison.seeds for v in comparison.variants]
    todo = [(v, s) for v, s in every if not _finished(run_dir_of(out, v, s))]
    jobs = min(jobs, max(1, len(todo)))
    log(f"compare {comparison.name}: {len(comparison.variants)} variants x "
        f"{len(comparison.seeds)} seeds = {len(every)} runs; {len(every) - len(todo)} already "
        f"finished, {len(todo)} to run ({jobs} at a time) in {out}")
    start_wall, start_cpu = time.perf_counter(), os.times()
    failed: list[dict[str, Any]] = []
    count = {"done": 0, "trained": 0}

    def finished(variant: str, seed: int, result: dict[str, Any]) -> bool:
        """Log a run's outcome; False if another process is training it (wait for it later)."""
        if "busy" in result:
            log(f"{variant} seed {seed}: being trained by {result['busy']}; waiting for it "
                "after the other runs")
            return False
        count["done"] += 1
        head = f"[{count['done']}/{len(todo)}] {variant} seed {seed}:"
        if result["ok"] and not result["trained"]:
            log(f"{head} already finished (by another process), test acc {100 * result['test_acc']:.2f}%")
        elif result["ok"]:
            count["trained"] += 1
            log(f"{head} test acc {100 * result['test_acc']:.2f}%  ({result['seconds']:.0f} s)")
        else:
            path = run_dir_of(out, variant, seed) / "error.log"
            log(f"{head} FAILED after {result['seconds']:.0f} s: {result['error']} (see {path})")
            failed.append({"variant": variant, "seed": seed, "error": result["error"]})
        return True

    def job(variant: str, seed: int) -> tuple[TrainConfig, str]:
        # An existing folder was interrupted: resume continues from its checkpoint (or
        # starts over if it stopped before the first one); its config was checked above.
        return comparison.config(variant, seed), str(run_dir_of(out, variant, seed))

    # Two rounds: first every run nobody else holds, then (wait=True) the ones others held.
    pending, wait = todo, False
    if jobs == 1:
        with StopRequest(immediate=STOPPED):  # between runs; a run stops itself (train.run)
            try:
                while pending:
                    later = [(v, s) for v, s in pending if not finished(
                        v, s, _run_one(*job(v, s), progress if progress else "quiet", wait))]
                    pending, wait = later, True
            except RunInterrupted as err:  # from a run (after its checkpoint) or between runs
                if err.message.startswith("compare stopped"):
                    raise
                from .train import RESUME_HINT  # compare has no --resume: re-running continues

                raise _stopped(err.signum, err.message.removesuffix(RESUME_HINT)) from None
    elif todo:
        ctx = multiprocessing.get_context("spawn")
        threads = max(1, _cores() // jobs)
        others = set(multiprocessing.active_children())
        with StopRequest(immediate=STOPPED) as stop, cf.ProcessPoolExecutor(
                jobs, mp_context=ctx, initializer=_init_worker,
                initargs=(threads, os.getpid())) as pool:
            try:
                while pending:
                    futures = {pool.submit(_run_one, *job(v, s), "quiet", wait): (v, s)
                               for v, s in pending}
                    pending, wait = [], True
                    for fut in cf.as_completed(futures):
                        try:
                            result = fut.result()
                        except OSError:  # the disk or a folder, not the run: stop, name the file
                            _stop_workers(pool, stop, others)
                            raise
                        except Exception as err:  # the worker process died (e.g. out of memory)
                            result = {"ok": False, "error": f"worker died: {err!r}", "seconds": 0.0}
                        if not finished(*futures[fut], result):
                            pending.append(futures[fut])
            except KeyboardInterrupt as err:  # RunInterrupted: a stop signal, here or in a worker
                log("stopping: running runs finish their step and write a checkpoint "
                    "(a second Ctrl-C kills them)")
                _stop_workers(pool, stop, others)
                raise _stopped(getattr(err, "signum", signal.SIGINT)) from None
    if comparison.robustness is not None:
        _robustness(comparison, out, progress, log, failed)
    end_cpu = os.times()
    cpu = sum(end_cpu[:4]) - sum(start_cpu[:4])
    with runlock.write_lock(out):  # two compares finishing at once: neither record is lost
        summary = write_summary(comparison, out, failed=failed, trained=count["trained"],
                                wall_time=time.perf_counter() - start_wall, cpu_time=cpu)
    if report and summary["variants"]:
        from .report import write_report

        try:
            log(f"report: {write_report(out)}")
        except (OSError, runfiles.RunFileError):  # the disk or a damaged file: one line, exit 2
            raise
        except Exception as err:  # the runs are safe; say what broke and how to retry
            log(f"report failed ({type(err).__name__}: {err}); retry with "
                f"`weight-compander report {out}`")
            summary["failed"].append({"variant": None, "seed": None, "error": f"report: {err}"})
    return summary


def _previous_invocations(out: Path) -> list[dict[str, Any]]:
    """The invocation records of summary.json (every earlier `compare` on this folder)."""
    path = out / "summary.json"
    if not path.exists():
        return []
    data = runfiles.read_json(path, FIX_SUMMARY)
    invocations = data.get("invocations", []) if isinstance(data, dict) else None
    if not isinstance(invocations, list) or not all(
            isinstance(i, dict) and isinstance(i.get("wall_time"), int | float)
            and isinstance(i.get("cpu_time"), int | float) for i in invocations):
        raise runfiles.RunFileError(f"{path} is not a comparison summary; {FIX_SUMMARY}")
    return invocations
def _robustness(comparison: Comparison, out: Path, progress: bool, log: Any,
                failed: list[dict[str, Any]]) -> None:
    """Evaluate the comparison's finished runs with its robustness suite (finished ones skip);
    a failure is reported like a failed run, the training results stay."""
    from .report import find_runs
    from .robustness import Suite, evaluate_runs

    runs = [r for r in find_runs(out)[0] if r.variant in comparison.variants and r.seed in comparison.seeds]
    try:
        if runs:
            evaluate_runs(runs, Suite.from_options(comparison.robustness or {}),
                          progress=progress if progress else "quiet", log=log)
    except Exception as err:
        log(f"robustness failed ({type(err).__name__}: {err}); retry with "
            f"`weight-compander robustness {out}`")
        failed.append({"variant": None, "seed": None, "error": f"robustness: {err}"})


def write_summary(
    comparison: Comparison, out: Path, *, failed: list[dict[str, Any]] | None = None,
    wall_time: float = 0.0, cpu_time: float = 0.0, trained: int = 0,
) -> dict[str, Any]:
    """Write <out>/summary.json from the complete runs of this comparison's variants/seeds.

    wall_time / cpu_time are totals over every `compare` invocation on this folder (each is
    listed under "invocations"), so a comparison finished in several sessions still records
    what it cost; runs_cpu_time is the training runs' own CPU time from their final.json.
    A read-modify-write: call it holding ``runlock.write_lock(out)``.
    """
    from .report import find_runs, summarize

    runs, _ = find_runs(out)
    runs = [r for r in runs if r.variant in comparison.variants and r.seed in comparison.seeds]
    done = {(r.variant, r.seed) for r in runs}
    invocations = _previous_invocations(out)
    invocations.append({"finished": datetime.now(UTC).isoformat(timespec="seconds"),
                        "runs_trained": trained, "wall_time": wall_time, "cpu_time": cpu_time})
    summary = {
        "name": comparison.name,
        "seeds": comparison.seeds,
        **summarize(runs, comparison.baseline),
        "missing": [{"variant": v, "seed": s} for v in comparison.variants
                    for s in comparison.seeds if (v, s) not in done],
        "failed": failed or [],
        "wall_time": sum(i["wall_time"] for i in invocations),  # seconds
        "cpu_time": sum(i["cpu_time"] for i in invocations),  # incl. worker processes
        "runs_wall_time": sum(float(r.final.get("wall_time") or 0.0) for r in runs),
        "runs_cpu_time": sum(float(r.final.get("cpu_time") or 0.0) for r in runs),
        "invocations": invocations,
    }
    atomic.write_json(out / "summary.json", summary)
    return summary


def _main(args: argparse.Namespace) -> int:
    try:
        comparison = load_comparison(args.config)
        out = args.out or Path("runs") / comparison.name
        summary = run_comparison(comparison, out, jobs=args.jobs,
                                 progress=not args.no_progress, report=not args.no_report)
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if summary["variants"]:
        from .report import ignored_line, markdown_tables, scan_runs

        scan = scan_runs(out)
        runs = [r for r in scan.runs
                if r.variant in comparison.variants and r.seed in comparison.seeds]
        print("\n" + markdown_tables(runs, comparison.baseline))
        if ignored_line(scan, Path(out)):
            print(ignored_line(scan, Path(out)))
        if comparison.robustness is not None:
            from .robustness import Suite
            from .robustness_report import summary_table

            print("\n" + summary_table(runs, Suite.from_options(comparison.robustness).weights))
    if summary["failed"]:
        print(f"{len(summary['failed'])} run(s) failed; fix the cause and re-run the same "
              "command: finished runs are skipped")
        return 1
    return 0


def add_parser(subparsers: Any) -> None:
    """Register `compare CONFIG.toml [--out DIR] [--jobs N] [--no-progress] [--no-report]`."""
    p = subparsers.add_parser(
        "compare", help="run named variants x seeds (skips finished runs) and summarize",
        description="Run every variant of CONFIG.toml with every seed; finished runs are "
                    "skipped and interrupted ones resumed, so re-running continues.")
    p.add_argument("config", type=Path, help="comparison TOML (seeds, baseline, [defaults], "
                   "[variants.NAME])")
    p.add_argument("--out", type=Path, help="output folder (default: runs/<name>)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs in parallel processes (each gets cores/N torch threads)")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch progress")
    p.add_argument("--no-report", action="store_true", help="skip report.md and figures")
    p.set_defaults(func=_main)
