"""`weight-compander status RUNS_DIR [--config CONFIG.toml]`: how far a study is, and what is left.

A long study is trained over many sessions (its finished runs committed under ``studies/``),
so before each one you want to know: per variant, which runs are finished, running (another
process holds the run's lock), interrupted (started, not finished, nobody training it) or
missing, the CPU time the finished runs took (``cpu_time`` of their final.json, plus their
robustness evaluation's ``cpu_time`` (older entries: seconds × threads) when the comparison
has a suite: on the whole test set it can cost as much as the training) and an estimate of
the CPU time the rest will take: the mean CPU time of the variant's finished runs (of all
finished runs while the variant has none) for each missing run, and the part not yet done
(from metrics.jsonl's epochs) of each started one; likewise the mean evaluation for each run
not yet evaluated.

The plan (variants × seeds) comes from ``--config`` (the comparison TOML, e.g. with seeds
added since the last `compare`) or else from RUNS_DIR/compare.json; without either, only the
run folders present are counted. Nothing is written.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from weight_compander.harness.config.comparison import load_comparison
from weight_compander.harness.config.suite import Suite
from weight_compander.harness.errors import CompareError, RunFileError
from weight_compander.harness.evaluate.robustness import is_current, read
from weight_compander.harness.store import runfiles, runlock
from weight_compander.harness.store.membership import FIX_COMPARE_JSON
from weight_compander.harness.store.scan import read_metrics, run_dir_of

__all__ = ["RunState", "StudyStatus", "format_status", "study_status"]

STATES = ("finished", "running", "interrupted", "missing")


@dataclass
class RunState:
    """One planned run: where it is, what state it is in, its CPU time so far, its share done."""

    variant: str
    seed: int
    path: Path
    state: str  # one of STATES
    cpu_time: float = 0.0  # finished runs: final.json's cpu_time
    done: float = 0.0  # share of the epochs done (1 for a finished run)
    robust: bool | None = None  # evaluated with the comparison's robustness suite (None: no suite)
    robust_cpu: float = 0.0  # that evaluation's CPU seconds (0 if not evaluated)


@dataclass
class StudyStatus:
    """Every planned run's state, by variant, and where the plan came from."""

    name: str
    folder: Path
    plan: str  # what said which runs there should be
    variants: list[str]
    seeds: list[int]
    runs: list[RunState] = field(default_factory=list)

    def of(self, variant: str) -> list[RunState]:
        return [r for r in self.runs if r.variant == variant]

    def mean_cpu(self, variant: str | None = None, *, robustness: bool = False) -> float | None:
        """Mean CPU seconds of a finished run of `variant` (None: of the study), or of its
        robustness evaluation; None if none."""
        times = [r.robust_cpu if robustness else r.cpu_time for r in self.runs
                 if r.state == "finished" and (variant is None or r.variant == variant)]
        times = [t for t in times if t > 0]
        return statistics.fmean(times) if times else None

    def to_go(self, variant: str) -> float | None:
        """Estimated CPU seconds for the variant's unfinished runs and evaluations (0 if none;
        None: no basis)."""
        runs = self.of(variant)
        left = sum(1.0 - r.done for r in runs if r.state != "finished")
        unevaluated = sum(r.robust is False for r in runs)  # unfinished runs included
        total = 0.0
        for count, robustness in ((left, False), (unevaluated, True)):
            if count:
                mean = self.mean_cpu(variant, robustness=robustness) or self.mean_cpu(robustness=robustness)
                if mean is None:
                    return None
                total += mean * count
        return total


def _plan(folder: Path, config: Path | None) -> tuple[str, list[str], list[int], dict | None, str]:
    """(name, variants, seeds, robustness options or None, where the plan came from)."""
    if config is not None:
        c = load_comparison(config)
        return c.name, list(c.variants), list(c.seeds), c.robustness, str(config)
    path = folder / "compare.json"
    if path.exists():
        data = runfiles.read_json(path, FIX_COMPARE_JSON)
        variants, seeds = data.get("variants"), data.get("seeds")
        if not isinstance(variants, dict) or not isinstance(seeds, list):
            raise RunFileError(f"{path} names no variants and seeds; {FIX_COMPARE_JSON}")
        return str(data.get("name") or folder.name), list(variants), seeds, data.get("robustness"), str(path)
    found = sorted({(p.parent.name, p.name) for p in folder.glob("*/seed*") if p.is_dir()})
    variants = list(dict.fromkeys(v for v, _ in found))
    seeds = sorted({int(s[4:]) for _, s in found if s[4:].isdigit()})
    return folder.name, variants, seeds, None, "the run folders present (no compare.json; pass --config)"


def _running(run_dir: Path) -> bool:
    """Another process holds the run's lock (a shared try, released at once; creates nothing)."""
    if not (run_dir / runlock.RUN_LOCK).exists():
        return False
    lock = runlock.FileLock(run_dir / runlock.RUN_LOCK)
    try:
        free = lock.try_acquire(shared=True)
    except OSError:
        return False
    finally:
        lock.release()
    return not free


def _epochs_done(run_dir: Path) -> float:
    """Share of a started run's epochs in its metrics.jsonl (0 if it cannot tell)."""
    try:
        rows = read_metrics(run_dir / "metrics.jsonl")
        epochs = runfiles.read_config(run_dir / "config.json").epochs
    except (RunFileError, OSError):
        return 0.0
    return min(1.0, len(rows) / epochs) if rows else 0.0


def study_status(folder: str | Path, config: str | Path | None = None) -> StudyStatus:
    """The state of every planned run of the study in `folder` (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CompareError(f"{folder} is not a folder; pass the --out folder of a compare "
                           "(e.g. studies/NAME)")
    name, variants, seeds, options, plan = _plan(folder, Path(config) if config else None)
    suite = None
    if options is not None:
        suite = Suite.from_options(options)
    out = StudyStatus(name, folder, plan, variants, seeds)
    for v in variants:
        for s in seeds:
            path = run_dir_of(folder, v, s)
            final, _ = runfiles.read_final(path)
            if final is not None and (path / "config.json").exists():
                run = RunState(v, s, path, "finished", float(final.get("cpu_time") or 0.0), 1.0)
            elif _running(path):
                run = RunState(v, s, path, "running", done=_epochs_done(path))
            elif path.is_dir() and any((path / n).exists() for n in runfiles.RUN_FILES):
                run = RunState(v, s, path, "interrupted", done=_epochs_done(path))
            else:
                run = RunState(v, s, path, "missing")
            if suite is not None:
                run.robust = run.state == "finished" and is_current(path, suite)
                if run.robust:
                    entry = read(path)["evaluations"][suite.weights]
                    run.robust_cpu = float(entry.get("cpu_time")  # older entries: wall x threads
                                           or entry.get("seconds", 0.0) * entry.get("threads", 1))
            out.runs.append(run)
    return out


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_status(st: StudyStatus) -> str:
    """A fixed-width table: one row per variant and a total row."""
    count = {k: sum(r.state == k for r in st.runs) for k in STATES}
    lines = [f"study {st.name} in {st.folder}: {len(st.variants)} variants x {len(st.seeds)} seeds "
             f"= {len(st.runs)} runs (plan: {st.plan}); "
             + ", ".join(f"{count[k]} {k}" for k in STATES)]
    robust = any(r.robust is not None for r in st.runs)
    head = ["variant", "finished", "running", "interrupted", "missing", "CPU so far", "CPU to go (est.)"]
    if robust:
        head.insert(5, "robustness")
    rows = [head]
    for v in st.variants:
        runs = st.of(v)
        cells = [v, f"{sum(r.state == 'finished' for r in runs)}/{len(runs)}",
                 *(str(sum(r.state == k for r in runs)) for k in STATES[1:]),
                 _time(sum(r.cpu_time + r.robust_cpu for r in runs)), _time(st.to_go(v))]
        if robust:
            cells.insert(5, f"{sum(bool(r.robust) for r in runs)}/{len(runs)}")
        rows.append(cells)
    go = [st.to_go(v) for v in st.variants]
    total = ["total", f"{count['finished']}/{len(st.runs)}", *(str(count[k]) for k in STATES[1:]),
             _time(sum(r.cpu_time + r.robust_cpu for r in st.runs)),
             _time(None if None in go else sum(g for g in go if g is not None))]
    if robust:
        total.insert(5, f"{sum(bool(r.robust) for r in st.runs)}/{len(st.runs)}")
    rows.append(total)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for row in rows:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w)
                               in enumerate(zip(row, widths, strict=True))).rstrip())
    if any(g is None for g in go):
        lines.append("?: no finished run yet to estimate from")
    lines.append("CPU time: the runs' own (final.json cpu_time, all threads)"
                 + (", plus each robustness evaluation's" if robust else "")
                 + "; the estimate is the mean per finished run of the variant (of the study while "
                 "it has none) times the runs left, started ones counted by the epochs they still need")
    return "\n".join(lines)
