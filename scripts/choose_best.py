"""Print a tuning comparison's variants ranked by mean validation accuracy, best first.

    python scripts/choose_best.py runs/study/tune-base-fmlp [runs/study/grid-fmlp ...]

The study's stages 1 and 2 pick the variant with the highest mean ``val_acc`` over the tuning
seeds (the test set is never looked at for a choice). This script reads the folder's
``summary.json`` and ``compare.json`` (written by ``weight-compander compare``) and prints the
ranking with each variant's overrides, so the choice that goes into the next stage's config is
a command's output, not a reading of a table by eye.
"""

import json
import sys
from pathlib import Path
from typing import Any


def ranking(folder: Path) -> list[tuple[str, float, int, dict[str, Any]]]:
    """(variant, mean val_acc, seeds, overrides), best first; variants with no finished run left out."""
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    variants = json.loads((folder / "compare.json").read_text(encoding="utf-8"))["variants"]
    rows = [
        (name, s["val_acc_mean"], s["n"], variants.get(name, {}).get("overrides", {}))
        for name, s in summary["variants"].items()
        if s.get("n") and s.get("val_acc_mean") is not None
    ]
    return sorted(rows, key=lambda row: -row[1])


def main(folders: list[str]) -> int:
    if not folders:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    for arg in folders:
        folder = Path(arg)
        if not (folder / "summary.json").is_file():
            print(f"{folder}: no summary.json; run `weight-compander compare` into it first", file=sys.stderr)
            return 2
        rows = ranking(folder)
        print(f"{folder.name}: best = {rows[0][0] if rows else '(none finished)'}")
        for name, val, n, overrides in rows:
            print(f"  {name:24s} val_acc {100 * val:6.2f} %  n={n}  {json.dumps(overrides)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
