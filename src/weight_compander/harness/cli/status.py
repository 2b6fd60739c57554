"""`weight-compander status RUNS_DIR`: how far a study is, and what is left (compare/status.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from weight_compander.harness.compare.status import format_status, study_status

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    print(format_status(study_status(args.runs_dir, args.config)))
    return 0


def add_parser(subparsers: Any) -> None:
    """Register `status RUNS_DIR [--config CONFIG.toml]`."""
    p = subparsers.add_parser(
        "status", help="finished / running / missing runs of a study and the CPU time left",
        description="Per variant: finished, running, interrupted and missing runs, the CPU time "
                    "so far and an estimate for the rest. Writes nothing.")
    p.add_argument("runs_dir", type=Path, help="the --out folder of a compare, e.g. studies/NAME")
    p.add_argument("--config", type=Path,
                   help="the comparison TOML (default: the folder's compare.json)")
    p.set_defaults(func=run)
