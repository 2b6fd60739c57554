"""The ``weight-compander`` command: train, compare, report, demo, robustness, status.

Each subcommand module of this folder exposes ``add_parser(subparsers)``, which registers
its options and sets ``func`` (args -> exit code). Every error the harness raises on purpose
is an `errors.HarnessError` carrying its exit code, mapped here in one place: a bad setting,
folder, data file or damaged harness file, a folder another process is training, and any OS
error (a full disk, a read-only folder) print one line naming the file
and what to do, and exit 2; console output never fails on the locale; a diverged run exits 1;
a run stopped by SIGTERM / SIGINT writes a checkpoint and exits 143 / 130. Under torchrun
(``torchrun --nproc_per_node=N -m weight_compander train ...``) `train` joins the process
group and trains data-parallel; see docs/distributed.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from weight_compander.harness.cli import compare, demo, report, robustness, status, train
from weight_compander.harness.errors import HarnessError, RunInterrupted
from weight_compander.harness.run import distributed
from weight_compander.harness.store import runfiles

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    0 ok, 1 run failed, 2 usage/config/data, 130 / 143 stopped by SIGINT / SIGTERM.
    """
    _safe_console()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse's usage errors and --help
        return exit_.code if isinstance(exit_.code, int) else 2
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    if distributed.launched() and args.func is not train.run:
        print("error: only `train` runs under torchrun; start compare, report and demo "
              "without it (compare --jobs N runs in parallel)", file=sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():  # e.g. a corrupt checkpoint: one line, not a code trace
            warnings.showwarning = _show_warning
            return int(args.func(args) or 0)
    except RunInterrupted as err:
        _error(str(err), every_rank=False, label=None)  # "stopped by SIGTERM ..."
        return err.exit_code
    except HarnessError as err:  # a setting, a file or folder, a failed run: errors.py
        _error(str(err), every_rank=not err.same_on_every_rank)
        return err.exit_code
    except OSError as err:  # a full disk, a read-only folder, ...: which file, and what to do
        _error(runfiles.os_error_message(err, args.command))
        return 2
    except KeyboardInterrupt:
        again = "continue the run with --resume" if args.command == "train" else (
            "re-run the same command to continue")
        print(f"\ninterrupted; {again}", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weight-compander",
        description="Measure what weight compander does: train runs, compare variants x seeds, "
        "report mean ± std and paired differences.",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")
    train.add_parser(subparsers)
    compare.add_parser(subparsers)
    report.add_parser(subparsers)
    demo.add_parser(subparsers)
    robustness.add_parser(subparsers)
    status.add_parser(subparsers)
    return parser



def _safe_console() -> None:
    """Never crash on the locale: characters the console cannot encode are escaped instead.

    Under ``LC_ALL=C PYTHONUTF8=0`` (or a Latin-1 locale) stdout is ASCII (Latin-1), and the
    tables' "±" and "Δ" would raise UnicodeEncodeError after all the work is done.
    """
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if encoding != "utf8" and hasattr(stream, "reconfigure"):
            with contextlib.suppress(ValueError, OSError):  # a stream that cannot be reconfigured
                stream.reconfigure(errors="backslashreplace")


def _error(message: str, *, every_rank: bool = True, label: str | None = "error") -> None:
    """Print one line to stderr; under torchrun errors every rank shares come from rank 0 only."""
    rank = int(os.environ.get("RANK", "0")) if distributed.launched() else 0
    line = f"{label}: {message}" if label else message
    if rank == 0:
        print(line, file=sys.stderr)
    elif every_rank:
        print(f"[rank {rank}] {line}", file=sys.stderr)


def _show_warning(message: Any, category: Any, filename: str, lineno: int, *args: Any,
                  **kwargs: Any) -> None:
    print(f"warning: {message}", file=sys.stderr)
