"""``python -m weight_compander ...``: the harness command line (torchrun needs a module)."""

import sys

from weight_compander.harness.console import main

if __name__ == "__main__":
    sys.exit(main())
