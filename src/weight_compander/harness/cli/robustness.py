"""`weight-compander robustness RUNS_DIR`: evaluate finished runs beyond clean accuracy
(evaluate/robustness.py); the flags are the suite's settings (config/suite.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from weight_compander.harness.config.suite import WEIGHTS, Suite
from weight_compander.harness.errors import RobustnessError
from weight_compander.harness.evaluate.robustness import THREADS, evaluate_runs
from weight_compander.harness.ingredients import corruptions
from weight_compander.harness.report.robustness import summary_table
from weight_compander.harness.store.scan import find_runs

__all__ = ["add_parser", "run"]


def run(args: argparse.Namespace) -> int:
    options = {k: getattr(args, k) for k in ("families", "corruptions", "severities", "sparsities", "bits",
                                              "weight_noise", "images") if getattr(args, k) is not None}
    suite = Suite(**options, dense_ends=args.dense_ends, weights=args.weights)
    try:
        runs, incomplete = find_runs(args.runs_dir)
    except FileNotFoundError as err:
        raise RobustnessError(str(err)) from None
    if not runs:
        raise RobustnessError(f"no finished runs (final.json) in {args.runs_dir}"
                              f"{f'; {len(incomplete)} unfinished' if incomplete else ''}: train or "
                              "compare first, then evaluate")
    evaluate_runs(runs, suite, progress=not args.no_progress, force=args.force, threads=args.threads)
    print()
    print(summary_table(runs, suite.weights))
    return 0


def _list(kind: type) -> Callable[[str], list]:
    def parse(text: str) -> list:
        try:
            return [kind(s.strip()) for s in text.split(",") if s.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {kind.__name__}s, got {text!r}") from None

    return parse


def _images(text: str) -> int | str:
    if text == "all":  # "all", not None: None means "not given" to run(), which would keep the default
        return "all"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'all', got {text!r}") from None


def add_parser(subparsers: Any) -> None:
    """Register `robustness RUNS_DIR [options]`."""
    d = Suite()
    p = subparsers.add_parser(
        "robustness", help="accuracy under input corruptions, pruning, quantization and weight noise",
        description="Evaluate every finished run below RUNS_DIR (a comparison or one run folder) "
        "without retraining; results go to each run's robustness.json (runs evaluated with the "
        "same suite are skipped); `report` tables and plots them.")
    p.add_argument("runs_dir", type=Path, help="a compare --out folder, or one run folder")
    p.add_argument("--weights", choices=WEIGHTS, default=d.weights,
                   help="the last epoch's weights, or those of the best validation epoch [final]")
    p.add_argument("--families", type=_list(str), help=f"[{','.join(d.families)}]")
    p.add_argument("--corruptions", type=_list(str),
                   help=f"[all that fit the data: {','.join(corruptions.corruption_names())}]")
    p.add_argument("--severities", type=_list(int), help="corruption severities 1..3 [1,2,3]")
    p.add_argument("--sparsities", type=_list(float), help=f"[{','.join(map(str, d.sparsities))}]")
    p.add_argument("--bits", type=_list(int), help=f"[{','.join(map(str, d.bits))}]")
    p.add_argument("--weight-noise", type=_list(float),
                   help=f"noise std / each tensor's std [{','.join(map(str, d.weight_noise))}]")
    p.add_argument("--dense-ends", action="store_true", help="pruning keeps the first and last layer dense")
    p.add_argument("--images", type=_images, help=f"test images per condition, or 'all' [{d.images}]")
    p.add_argument("--force", action="store_true", help="re-evaluate runs that are up to date")
    p.add_argument("--threads", type=int, default=THREADS,
                   help=f"torch threads (one is fastest on a busy machine) [{THREADS}]")
    p.add_argument("--no-progress", action="store_true", help="plain lines instead of progress bars")
    p.set_defaults(func=run)
