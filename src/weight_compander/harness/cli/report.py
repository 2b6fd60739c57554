"""`weight-compander report RUNS_DIR`: report.md and figures from finished runs (report/write.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from weight_compander.harness.report.tables import markdown_tables
from weight_compander.harness.report.write import ignored_line, write_report
from weight_compander.harness.store.scan import scan_runs

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    try:
        path = write_report(args.runs_dir, baseline=args.baseline, layer=args.layer)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    scan = scan_runs(args.runs_dir)
    print(markdown_tables(scan.runs, args.baseline))
    if ignored_line(scan, Path(args.runs_dir)):
        print(ignored_line(scan, Path(args.runs_dir)))
    print(f"report: {path}")
    return 0


def add_parser(subparsers: Any) -> None:
    """Register `report RUNS_DIR [--baseline NAME] [--layer NAME]`."""
    p = subparsers.add_parser(
        "report",
        help="Markdown table and PNG figures from the runs of a comparison",
        description="Write RUNS_DIR/report.md and RUNS_DIR/figures/*.png from finished runs.",
    )
    p.add_argument("runs_dir", type=Path, help="the --out folder of a compare (or a parent)")
    p.add_argument("--baseline", help="variant to pair against (default: from compare.json)")
    p.add_argument(
        "--layer",
        help="weight tensor for the one-layer histogram, e.g. "
        "'features.0.weight' (default: the first companded layer)",
    )
    p.set_defaults(func=run)
