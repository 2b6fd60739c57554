"""The command line: every parser and subcommand (the console script is `main`)."""

from weight_compander.harness.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
