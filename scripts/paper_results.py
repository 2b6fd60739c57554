"""The paper's-method table: each benchmark x {paper-WC, its controls, its peers}, paired vs base.

    python scripts/paper_results.py [STUDIES_DIR] [OUT_MD]

Reads the committed run folders of each benchmark's stage-3 comparison (default
``studies/<name>/``), pairs every variant with ``base`` by seed, and writes the Markdown table
(default ``docs/results/paper-method.md``): mean paired difference of test accuracy in points
with its 95 % t-interval and ``n`` (the number of paired seeds). A cell with fewer than 5 pairs
is marked *partial*: no verdict is drawn from it. Final-epoch and best-validation-epoch
accuracy are reported side by side (the paper tests the best validation epoch). The paper's own
deltas stand in the last column for reference; nothing here is typed in by hand.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# benchmark id -> stage-3 comparison folder under STUDIES_DIR
BENCHMARKS = {"P-resnet": "paper-presnet", "F-small": "paper-fsmall", "F-mlp": "paper-fmlp",
              "M1D": "paper-m1d", "D": "paper-digits"}  # fmt: skip
# column -> variant name in those comparisons
COLUMNS = {
    "paper-WC": "paper-wc",
    "linear control": "linear-control",
    "lr-matched base": "base-lr-matched",
    "library WC": "wc-fixed",
    "weight_norm": "weight-norm",
    "Powerprop": "powerprop",
}
# The controls, paired directly: is paper-WC's difference its bound, or the step size of its slope?
CONTROLS = {
    "paper-WC − linear control": ("paper-wc", "linear-control"),
    "paper-WC − lr-matched base": ("paper-wc", "base-lr-matched"),
}
# The paper's own WC - base deltas (points; CIFAR, best validation epoch), for reference.
PAPER_DELTAS = "C10 R18 +0.40, C10 R50 +0.75, C100 R50 +1.56, ImageNet R50 +0.22"
FULL_SEEDS = 5


def final_values(runs: Sequence[Any], key: str) -> dict[str, dict[int, float]]:
    """variant -> seed -> final.json[key], over the runs that have it."""
    out: dict[str, dict[int, float]] = {}
    for r in runs:
        if r.final.get(key) is not None:
            out.setdefault(r.variant, {})[r.seed] = float(r.final[key])
    return out


def paired(values: Mapping[str, Mapping[int, float]], variant: str,
           base: str = "base") -> dict[str, Any] | None:
    """Paired difference (report.paired_difference's dict) of `variant` - `base` over the seeds
    both have, from variant -> seed -> value; None where either variant has no value."""
    from weight_compander.harness.report.stats import paired_difference

    if not values.get(variant) or not values.get(base):
        return None
    return paired_difference(values[variant], values[base])


def cell(d: dict[str, Any] | None) -> str:
    if not d or d["mean"] is None:
        return "—"
    text = f"{100 * d['mean']:+.2f}"
    if d["ci"] is not None:
        lo, hi = (100 * x for x in d["ci"])
        text += f" [{lo:+.2f}, {hi:+.2f}]"
    text += f" n={d['n']}"
    return text if d["n"] >= FULL_SEEDS else f"*{text}, partial*"


def stage3_runs(studies: Path) -> dict[str, list[Any] | None]:
    """bench -> the finished runs of its stage-3 comparison (None where its folder does not exist)."""
    from weight_compander.harness.store.scan import scan_runs

    return {bench: scan_runs(studies / folder).runs if (studies / folder).is_dir() else None
            for bench, folder in BENCHMARKS.items()}  # fmt: skip


def table(stage3: Mapping[str, Sequence[Any] | None], columns: Mapping[str, tuple[str, str]]) -> list[str]:
    """One row per benchmark and accuracy (final, best val); a column per (variant, reference) pair."""
    lines = [
        "| benchmark | accuracy | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for bench, runs in stage3.items():
        if runs is None:
            lines.append(f"| {bench} | not run yet |" + " |" * len(columns))
            continue
        for label, key in (("final", "test_acc"), ("best val", "test_acc_best_val")):
            values = final_values(runs, key)
            cells = [cell(paired(values, variant, reference)) for variant, reference in columns.values()]
            lines.append(f"| {bench} | {label} | " + " | ".join(cells) + " |")
    return lines


def main(argv: Sequence[str]) -> int:
    studies = Path(argv[0]) if argv else Path("studies")
    out = Path(argv[1]) if len(argv) > 1 else Path("docs/results/paper-method.md")
    if not studies.is_dir():
        print(f"{studies} is not a folder; pass the folder holding the study's comparisons", file=sys.stderr)
        return 2
    head = [
        "# The paper's method at CPU scale: paired test-accuracy difference to base (points)",
        "",
        f"Computed by `python scripts/paper_results.py {studies} {out}` from the run folders in "
        f"`{studies}/`; mean of per-seed differences, 95 % t-interval, n paired seeds "
        f"(*partial* below {FULL_SEEDS}: no verdict).",
        "",
    ]
    stage3 = stage3_runs(studies)  # each folder scanned once, for both tables
    versus_base = table(stage3, {label: (variant, "base") for label, variant in COLUMNS.items()})
    reference = f"For reference, the paper's own WC − base (CIFAR/ImageNet, best val epoch): {PAPER_DELTAS}."
    controls = [
        "",
        "## Is it the bound, or the step size?",
        "",
        "Near zero the paper's WC is the linear map `w = (a/b)·v`; under SGD that multiplies the "
        "effective learning rate of small weights by `(a/b)²`. The same pairing, paper-WC against each "
        "control directly (a difference near zero: the control explains paper-WC's effect):",
        "",
        *table(stage3, CONTROLS),
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(head + versus_base + ["", reference] + controls) + "\n", encoding="utf-8")
    print(out.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
