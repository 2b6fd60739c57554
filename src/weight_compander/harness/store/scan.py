"""Reading run folders: which runs are below a folder, finished or not, and what they hold.

`scan_runs` walks a folder, sorts every run folder into reported, unfinished and ignored
(below a compare.json only the runs of that comparison as it is now count, membership.py)
and reads each finished run's config.json, final.json and metrics.jsonl into a `Run`.
Everything that reads results (compare's summary, robustness, the report) starts here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weight_compander.harness.errors import RunFileError
from weight_compander.harness.store.membership import (
    FIX_COMPARE_JSON,
    ComparisonInfo,
    config_label,
    load_comparison_info,
)
from weight_compander.harness.store.runfiles import (
    FIX_CONFIG,
    RUN_FILES,
    parse_config,
    read_final,
    read_json,
    read_jsonl,
)

__all__ = ["Run", "RunScan", "comparison_file", "find_runs", "read_metrics", "run_dir_of", "scan_runs"]

FIX_METRICS = ("delete {run}/final.json and resume the run (`compare` again, or `train --resume`): "
               "it rewrites metrics.jsonl from the checkpoint")


@dataclass
class Run:
    """One finished run folder (a valid final.json) and what `report` needs from it."""

    path: Path
    root: Path  # the comparison folder the run belongs to (has compare.json), or RUNS_DIR
    variant: str
    seed: int
    config: dict[str, Any]
    final: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RunScan:
    """What `scan_runs` found: the runs to report, and every other run folder with its reason."""

    runs: list[Run]
    incomplete: list[Path]  # run folders that belong but have not finished
    ignored: list[tuple[Path, str]]  # run folders that do not belong, and why
    why: dict[Path, str] = field(default_factory=dict)  # why an incomplete run is not finished


def comparison_file(root: Path) -> dict[str, Any] | None:
    """The comparison folder's compare.json as data, or None where the folder has none."""
    path = root / "compare.json"
    return read_json(path, FIX_COMPARE_JSON) if path.exists() else None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Per-epoch rows of metrics.jsonl; the last row wins if an epoch repeats (after a resume)."""
    rows: dict[int, dict[str, Any]] = {}
    if path.exists():
        for row in read_jsonl(path, FIX_METRICS.format(run=path.parent)):
            if not isinstance(row.get("epoch"), int):
                raise RunFileError(f"{path}: a line has no epoch number; "
                                   + FIX_METRICS.format(run=path.parent))
            rows[int(row["epoch"])] = row
    return [rows[k] for k in sorted(rows)]


def _comparison_root(run_dir: Path, runs_dir: Path) -> Path:
    for parent in [run_dir, *run_dir.parents]:
        if (parent / "compare.json").exists():
            return parent
        if parent == runs_dir:
            break
    return runs_dir


def _run_folders(runs_dir: Path) -> list[Path]:
    """Every folder below `runs_dir` (itself included) that holds a run's files."""
    found = []
    for folder, dirs, files in os.walk(runs_dir):
        dirs.sort()
        if set(RUN_FILES) & set(files):
            found.append(Path(folder))
    return sorted(found)


def find_runs(runs_dir: str | Path) -> tuple[list[Run], list[Path]]:
    """The finished runs to report below `runs_dir`, and the run folders not finished yet."""
    scan = scan_runs(runs_dir)
    return scan.runs, scan.incomplete


def scan_runs(runs_dir: str | Path) -> RunScan:
    """Sort every run folder below `runs_dir` into reported, unfinished and ignored.

    Below a compare.json only the runs that belong to that comparison as it is now count
    (membership.py); other runs are grouped by configuration (their variant name is
    `membership.config_label`), and a second folder with the same settings and seed is
    ignored as a duplicate.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"{runs_dir} is not a folder; pass the --out folder of a compare")
    scan = RunScan([], [], [])
    infos: dict[Path, ComparisonInfo | None] = {}
    seen: dict[tuple[Path, str, int], Path] = {}
    for run_dir in _run_folders(runs_dir):
        root = _comparison_root(run_dir, runs_dir)
        if root not in infos:
            infos[root] = load_comparison_info(root)
        info = infos[root]
        if not (run_dir / "config.json").exists():
            scan.incomplete.append(run_dir)
            scan.why[run_dir] = "config.json is missing; `compare` or `train --resume` restores it"
            continue
        raw = read_json(run_dir / "config.json", FIX_CONFIG)
        config = parse_config(raw, run_dir / "config.json")
        reason = info.why_not_member(run_dir, config) if info is not None else None
        if reason is not None:
            scan.ignored.append((run_dir, reason))
            continue
        final, problem = read_final(run_dir)
        if final is None:
            scan.incomplete.append(run_dir)
            if problem != "no final.json":
                scan.why[run_dir] = f"{problem}; resuming the run writes it again"
            continue
        variant = run_dir.parent.name if info is not None else config_label(config)
        key = (root, variant, config.seed)
        if key in seen:
            scan.ignored.append((run_dir, f"same settings and seed as {seen[key]}"))
            continue
        seen[key] = run_dir
        metrics = read_metrics(run_dir / "metrics.jsonl")
        scan.runs.append(Run(run_dir, root, variant, config.seed, raw, final, metrics))
    return scan


def run_dir_of(out: Path, variant: str, seed: int) -> Path:
    """The folder of one run of a comparison: ``OUT/<variant>/seed<seed>``."""
    return Path(out) / variant / f"seed{seed}"
