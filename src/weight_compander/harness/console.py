"""The installed ``weight-compander`` script and ``python -m weight_compander``.

Why a module of its own: the command line needs the ``harness`` extra (numpy, scipy, ...), which
``pip install weight-compander`` leaves out. This module imports nothing of it, so without the
extra the script says in one line what to install instead of ending in an import traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

INSTALL_HARNESS = "pip install 'weight-compander[harness]'"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line (`weight_compander.harness.cli.main`); 2 if the harness extra is missing."""
    try:
        from weight_compander.harness.cli import main as cli_main

        return cli_main(argv)
    except ModuleNotFoundError as err:
        if not err.name or err.name.split(".")[0] in ("weight_compander", "__main__"):
            raise  # a fault of this package, not a missing extra
        print(f"error: the weight-compander command needs {err.name}, which is not installed; "
              f"install the command's dependencies with: {INSTALL_HARNESS}", file=sys.stderr)
        return 2
