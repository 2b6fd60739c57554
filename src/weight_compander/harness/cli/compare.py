"""`weight-compander compare CONFIG.toml`: run a comparison, print its tables (compare/runner.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from weight_compander.harness.compare.runner import run_comparison
from weight_compander.harness.config.comparison import load_comparison
from weight_compander.harness.config.suite import Suite
from weight_compander.harness.report.robustness import summary_table
from weight_compander.harness.report.tables import markdown_tables
from weight_compander.harness.report.write import ignored_line
from weight_compander.harness.store.scan import scan_runs

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    comparison = load_comparison(args.config)
    out = args.out or Path("runs") / comparison.name
    summary = run_comparison(comparison, out, jobs=args.jobs,
                             progress=not args.no_progress, report=not args.no_report)
    if summary["variants"]:
        scan = scan_runs(out)
        runs = [r for r in scan.runs
                if r.variant in comparison.variants and r.seed in comparison.seeds]
        print("\n" + markdown_tables(runs, comparison.baseline))
        if ignored_line(scan, Path(out)):
            print(ignored_line(scan, Path(out)))
        if comparison.robustness is not None:
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
    p.set_defaults(func=run)
