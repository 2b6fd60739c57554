"""`weight-compander train`: one run into a run folder (run/train.py).

The flags are generated from the `TrainConfig` fields, so a new setting is a flag and a TOML
key without touching this file. Under torchrun (``torchrun --nproc_per_node=N -m
weight_compander train ...``) `train` joins the process group and trains data-parallel; see
docs/distributed.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any

from weight_compander.harness.config.settings import TrainConfig, load_config, parse_value
from weight_compander.harness.errors import ConfigError, RunFileError
from weight_compander.harness.run import distributed, train
from weight_compander.harness.store import runfiles
from weight_compander.harness.store.membership import differences, settings_key

__all__ = ["add_config_flags", "add_parser", "config_from_args", "default_run_dir", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
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
    p.set_defaults(func=run)
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
        except (RunFileError, OSError):
            pass
    return path


def run(args: argparse.Namespace) -> int:
    """Train one run as the flags say (joining the process group under torchrun)."""
    cfg = config_from_args(args)
    out = Path(args.out) if args.out else default_run_dir(cfg)
    with distributed.process_group():  # only under torchrun; a no-op otherwise
        train.run(cfg, out, resume=args.resume, progress=not args.no_progress)
    return 0


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
