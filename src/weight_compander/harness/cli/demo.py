"""`weight-compander demo`: the main job, baseline vs weight compander (compare/demo.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from weight_compander.harness.compare.demo import run_demo

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    return run_demo(out=args.out, jobs=args.jobs, quick=args.quick, config=args.config)


def add_parser(subparsers: Any) -> None:
    """Register `demo [--out DIR] [--jobs N] [--quick] [--config TOML]`."""
    p = subparsers.add_parser(
        "demo", help="the main job: baseline vs WC (fixed, learnable) on Fashion-MNIST",
        description="Compare standard regularization with and without weight compander "
                    "(fixed and learnable) on a Fashion-MNIST subset, 2 seeds, and print "
                    "the table. Falls back to scikit-learn digits without Fashion-MNIST.")
    p.add_argument("--out", type=Path, help="output folder (default: runs/<name in the TOML>: "
                   "runs/demo, or runs/demo-digits(-quick))")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (default: 2)")
    p.add_argument("--quick", action="store_true",
                   help="tiny check that everything works: digits, 1 epoch")
    p.add_argument("--config", type=Path, help="run another comparison TOML instead")
    p.set_defaults(func=run)
