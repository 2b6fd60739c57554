"""`weight-compander compare CONFIG.toml`: named variants × seeds → run folders and a summary.

The comparison file's schema is config/comparison.py; scheduling the runs (one at a time or
in worker processes) workers.py; summary.json summary.py.

Every variant runs with every seed, so differences to the baseline are paired (same data
order and init). A run is complete iff its `final.json` is valid (and its config.json is
there): re-running skips complete runs and resumes any other, so an interrupted comparison
continues where it stopped. Each run is trained under its folder's lock, so two `compare`s
of one comparison on one folder train every run once (store/runlock.py); summary.json and the
report count exactly the runs that belong to the comparison as it is now (store/membership.py).
A top-level ``robustness = true`` (or a table of suite options, config/suite.py) evaluates
each run with `robustness` right after its training, in the same worker, so a comparison
stopped part way has the robustness of every run it finished; once training is done, any
finished run still without a current entry (trained before, or its evaluation failed) is
evaluated too.
SIGTERM / SIGINT (Ctrl-C) stop a comparison cleanly: queued runs do not start, running
ones finish their step and write a checkpoint, the workers exit, and the command exits
143 / 130; a second signal kills the workers at once, and if `compare` itself dies, its
workers stop and exit on their own (parentwatch.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from weight_compander.harness.compare import workers
from weight_compander.harness.compare.summary import previous_invocations, write_summary
from weight_compander.harness.config.comparison import Comparison
from weight_compander.harness.config.settings import TrainConfig
from weight_compander.harness.config.suite import Suite
from weight_compander.harness.errors import CompareError, RunFileError
from weight_compander.harness.evaluate.robustness import evaluate_runs
from weight_compander.harness.report.write import write_report
from weight_compander.harness.store import atomic, membership, runfiles, runlock
from weight_compander.harness.store.scan import find_runs, run_dir_of

__all__ = ["run_comparison"]


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


def run_comparison(
    comparison: Comparison, out: str | Path, *, jobs: int = 1, progress: bool = True,
    report: bool = True, log: Any = print,
) -> dict[str, Any]:
    """Run every missing (variant, seed), then write summary.json (and the report).

    Several `compare`s of the same comparison may work on one folder at once: each trains
    the runs no other process is training, then waits for the rest (store/runlock.py), so every
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
    previous_invocations(out)  # a damaged summary.json stops us before any run
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

    def finished(key: tuple[str, int], result: dict[str, Any]) -> bool:
        """Log a run's outcome; False if another process is training it (wait for it later)."""
        variant, seed = key
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
            if "robustness" in result:
                log(f"    robustness: {result['robustness']}")
            elif "robustness_error" in result:
                log(f"    robustness failed ({result['robustness_error']}); retried after training")
        else:
            path = run_dir_of(out, variant, seed) / "error.log"
            log(f"{head} FAILED after {result['seconds']:.0f} s: {result['error']} (see {path})")
            failed.append({"variant": variant, "seed": seed, "error": result["error"]})
        return True

    suite = None if comparison.robustness is None else Suite.from_options(comparison.robustness)

    def job(key: tuple[str, int]) -> tuple[TrainConfig, str, Suite | None]:
        # An existing folder was interrupted: resume continues from its checkpoint (or
        # starts over if it stopped before the first one); its config was checked above.
        variant, seed = key
        return comparison.config(variant, seed), str(run_dir_of(out, variant, seed)), suite

    workers.schedule(todo, job, finished, jobs, progress, log)
    if suite is not None:  # runs finished before, or whose evaluation failed
        _robustness(comparison, suite, out, progress, log, failed)
    end_cpu = os.times()
    cpu = sum(end_cpu[:4]) - sum(start_cpu[:4])
    with runlock.write_lock(out):  # two compares finishing at once: neither record is lost
        summary = write_summary(comparison, out, failed=failed, trained=count["trained"],
                                wall_time=time.perf_counter() - start_wall, cpu_time=cpu)
    if report and summary["variants"]:
        try:
            log(f"report: {write_report(out)}")
        except (OSError, RunFileError):  # the disk or a damaged file: one line, exit 2
            raise
        except Exception as err:  # the runs are safe; say what broke and how to retry
            log(f"report failed ({type(err).__name__}: {err}); retry with "
                f"`weight-compander report {out}`")
            summary["failed"].append({"variant": None, "seed": None, "error": f"report: {err}"})
    return summary


def _robustness(comparison: Comparison, suite: Suite, out: Path, progress: bool, log: Any,
                failed: list[dict[str, Any]]) -> None:
    """Evaluate the comparison's finished runs with its robustness suite (finished ones skip);
    a failure is reported like a failed run, the training results stay."""
    runs = [r for r in find_runs(out)[0] if r.variant in comparison.variants and r.seed in comparison.seeds]
    try:
        if runs:
            evaluate_runs(runs, suite, progress=progress if progress else "quiet", log=log)
    except Exception as err:
        log(f"robustness failed ({type(err).__name__}: {err}); retry with "
            f"`weight-compander robustness {out}`")
        failed.append({"variant": None, "seed": None, "error": f"robustness: {err}"})
