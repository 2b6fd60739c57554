"""The ``weight-compander`` command: train, compare, report, demo, robustness, status.

Each subcommand module exposes ``add_parser(subparsers)``, which registers its options
and sets ``func`` (args -> exit code). The ``train`` flags are generated from the
`TrainConfig` fields, so a new setting is a flag and a TOML key without touching this file.
A bad setting, folder, data file or damaged harness file, a folder another process is
training, and any OS error (a full disk, a read-only folder) print one line naming the file
and what to do, and exit 2; console output never fails on the locale; a diverged run exits 1;
a run stopped by SIGTERM / SIGINT writes a checkpoint and exits 143 / 130. Under torchrun
(``torchrun --nproc_per_node=N -m weight_compander train ...``) `train` joins the process
group and trains data-parallel; see docs/distributed.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import typing
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from weight_compander.harness import checkpoint, data, distributed, runfiles
from weight_compander.harness.config import ConfigError, TrainConfig, load_config, parse_value
from weight_compander.harness.membership import differences, settings_key
from weight_compander.harness.stopping import RunInterrupted

__all__ = ["add_config_flags", "build_parser", "config_from_args", "default_run_dir", "main"]


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
    if distributed.launched() and args.func is not _train:
        print("error: only `train` runs under torchrun; start compare, report and demo "
              "without it (compare --jobs N runs in parallel)", file=sys.stderr)
        return 2
    from weight_compander.harness.train import NonFiniteLossError

    try:
        with warnings.catch_warnings():  # e.g. a corrupt checkpoint: one line, not a code trace
            warnings.showwarning = _show_warning
            return int(args.func(args) or 0)
    except RunInterrupted as err:
        _error(str(err), every_rank=False, label=None)  # "stopped by SIGTERM ..."
        return err.exit_code
    except NonFiniteLossError as err:
        _error(str(err))
        return 1
    except ConfigError as err:
        _error(str(err), every_rank=False)
        return 2
    except (data.DataError, checkpoint.CheckpointError, runfiles.RunFileError) as err:
        _error(str(err))
        return 2
    except OSError as err:  # a full disk, a read-only folder, ...: which file, and what to do
        _error(runfiles.os_error_message(err, args.command))
        return 2
    except KeyboardInterrupt:
        again = "continue the run with --resume" if args.command == "train" else (
            "re-run the same command to continue")
        print(f"\ninterrupted; {again}", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    from weight_compander.harness import compare, demo, report, robustness, status

    parser = argparse.ArgumentParser(
        prog="weight-compander",
        description="Measure what weight compander does: train runs, compare variants x seeds, "
        "report mean ± std and paired differences.",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")
    add_train_parser(subparsers)
    compare.add_parser(subparsers)
    report.add_parser(subparsers)
    demo.add_parser(subparsers)
    robustness.add_parser(subparsers)
    status.add_parser(subparsers)
    return parser


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train one run into a run folder",
        description="Train one model; settings come from defaults, then --config, then flags.",
    )
    p.add_argument("--config", metavar="FILE.toml", help="TOML file with TrainConfig keys")
    p.add_argument(
        "--out", metavar="RUN_DIR",
        help="run folder (default: runs/<dataset>-<model>-<reparam>-seed<seed>-<settings key>; "
        "the key, a hash of the settings, keeps runs with other settings apart)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument(
        "--no-progress", action="store_true", help="plain lines instead of progress bars"
    )
    add_config_flags(p.add_argument_group("settings (override --config)"))
    p.set_defaults(func=_train)
    return p


def add_config_flags(parser: Any) -> None:
    """One ``--flag`` per TrainConfig field; unset flags stay out of the namespace."""
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_ = f"{f.metadata.get('help', '')} [default: {_show(default)}]"
        if hints[f.name] is bool:
            parser.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS, help=help_,
            )
        else:
            parser.add_argument(
                flag, dest=f.name, type=_parser_for(f.name), default=argparse.SUPPRESS,
                metavar=_metavar(hints[f.name]), help=help_,
            )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then ``--config FILE``, then the flags given on the command line."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in names}
    return load_config(getattr(args, "config", None), overrides)


def default_run_dir(cfg: TrainConfig, root: str | Path = "runs") -> Path:
    """``runs/<dataset>-<model>-<reparam>-seed<seed>-<settings key>`` (membership.settings_key).

    The same settings and seed give the same folder (so ``--resume`` finds it), other
    settings another one, so runs never collide. A folder of the older scheme (no key)
    that holds this very run is used instead, so runs started before keep resuming.
    """
    name = f"{cfg.dataset}-{cfg.model}-{cfg.reparam}-seed{cfg.seed}"
    path, legacy = Path(root) / f"{name}-{settings_key(cfg)}", Path(root) / name
    if not path.exists() and (legacy / "config.json").exists():
        try:
            if not differences(runfiles.read_config(legacy / "config.json"), cfg):
                return legacy
        except (runfiles.RunFileError, OSError):
            pass
    return path


def _train(args: argparse.Namespace) -> int:
    from weight_compander.harness.train import run

    cfg = config_from_args(args)
    out = Path(args.out) if args.out else default_run_dir(cfg)
    with distributed.process_group():  # only under torchrun; a no-op otherwise
        run(cfg, out, resume=args.resume, progress=not args.no_progress)
    return 0


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


def _parser_for(key: str) -> Any:
    def parse(text: str) -> Any:
        try:
            return parse_value(key, text)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = key
    return parse


def _metavar(tp: Any) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    names = {int: "INT", float: "FLOAT", str: "STR"}
    if typing.get_origin(tp) is dict:
        return "NAME=VALUE,..."
    if any(typing.get_origin(a) is list for a in args):
        return "default|NAME,..."
    return names.get(args[0], "VALUE")


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "{}"
    return str(value)
