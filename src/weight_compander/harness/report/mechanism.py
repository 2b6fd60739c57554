"""The report's mechanism section: how fast runs memorize wrong labels, and how flat their
weights are (the per-epoch measurements are run/metrics.py's, in metrics.jsonl).

Two claims need more than an accuracy to be understood:

- **memorization** (label-noise runs): the share of flipped training examples predicted as
  their wrong label (``noisy_memorized``) and as their true one (``noisy_true``), per epoch.
  A variant that resists memorization keeps the first low and the second high for longer.
- **weight shape** (quantization): the kurtosis of each Linear/Conv layer's effective weight
  (``kurtosis``). WC and KURE both flatten the distribution (1.8 is uniform, 3 Gaussian);
  low-bit rounding hurts heavy-tailed layers most.

Both come from metrics.jsonl, so the figure and table (`section`) need nothing but the
committed run files.
"""

from __future__ import annotations

import collections
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from weight_compander.harness.report.plots import mean_curve, pyplot, save
from weight_compander.harness.run.metrics import MEMORIZATION_SAMPLE

if TYPE_CHECKING:
    from weight_compander.harness.store.scan import Run

__all__ = ["kurtosis_lines", "kurtosis_table", "memorization_lines", "section"]


# --------------------------------------------------------------------------- report


def _pm(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    if not values:
        return "—"
    mean = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def memorization_lines(runs: Sequence[Run], order: Sequence[str], figdir: Path, prefix: str) -> list[str]:
    """The memorization figure and table (label-noise runs that recorded it); [] if none."""
    have = [r for r in runs if any("noisy_memorized" in row for row in r.metrics)]
    if not have:
        return []
    shown = [v for v in order if any(r.variant == v for r in have)]
    name = f"{prefix}memorization.png"
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, v in enumerate(shown):
        rs = [r for r in have if r.variant == v]
        ep, mem = mean_curve(rs, "noisy_memorized")
        ax.plot(ep, [100 * m for m in mem], marker=".", color=f"C{i}", label=f"{v}: wrong label")
        ep, true = mean_curve(rs, "noisy_true")
        ax.plot(ep, [100 * t for t in true], ls=":", color=f"C{i}", label=f"{v}: true label")
    ax.set_xlabel("epoch")
    ax.set_ylabel("% of flipped training examples (mean over seeds)")
    ax.set_title("memorization of the wrong training labels", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the curves, not on them
    fig.tight_layout()
    save(fig, figdir / name)
    plt.close(fig)
    lines = ["#### Memorization of wrong labels", "",
             "Flipped training examples (at most "
             f"{MEMORIZATION_SAMPLE}, a fixed subset) predicted, in eval mode after each epoch, as "
             "their wrong (training) label and as their true label: % mean ± std over seeds. "
             "Lower \"wrong\" and higher \"true\" means less memorization.", "",
             f"![memorization of wrong labels](figures/{name})", "",
             "| variant | n | wrong label, last epoch % | true label, last epoch % "
             "| wrong label, best val epoch % | first epoch with wrong > true |",
             "|---|---:|---:|---:|---:|---|"]
    for v in shown:
        rs = [r for r in have if r.variant == v]
        last = [r.metrics[-1] for r in rs if "noisy_memorized" in r.metrics[-1]]
        at_best = [row["noisy_memorized"] for r in rs for row in r.metrics
                   if row.get("epoch") == r.final.get("best_epoch") and "noisy_memorized" in row]
        cross = [next((str(row["epoch"]) for row in r.metrics
                       if row.get("noisy_memorized", 0) > row.get("noisy_true", 1)), "never") for r in rs]
        lines.append(f"| {v} | {len(rs)} | {_pm([x['noisy_memorized'] for x in last], 100)} | "
                     f"{_pm([x['noisy_true'] for x in last], 100)} | {_pm(at_best, 100)} | "
                     f"{', '.join(cross)} |")
    return [*lines, ""]


def kurtosis_lines(runs: Sequence[Run], order: Sequence[str]) -> list[str]:
    """A table of each layer's weight kurtosis after the last epoch, per variant; [] if none."""
    table = kurtosis_table(runs, order)
    if not table:
        return []
    return ["#### Weight kurtosis per layer", "",
            "Kurtosis of each Linear/Conv layer's effective weight after the last epoch (mean ± std "
            "over seeds; 1.8: uniform, 3: Gaussian, more: heavy tails, which stretch a "
            "quantization grid). Rows: layers in network order; n: seeds.", "", *table, ""]


def kurtosis_table(runs: Sequence[Run], order: Sequence[str]) -> list[str]:
    """The Markdown table of `kurtosis_lines` alone: a row per layer (mean ± std over seeds of the
    last epoch's kurtosis), a column per variant of `order` that has it, and the mean over layers."""
    last = [(r.variant, r.metrics[-1]["kurtosis"]) for r in runs
            if r.metrics and r.metrics[-1].get("kurtosis")]
    if not last:
        return []
    layers = list(dict.fromkeys(name for _, k in last for name in k))
    per: dict[str, dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for variant, k in last:
        for name, value in k.items():
            per[variant][name].append(float(value))
    shown = [v for v in order if v in per]
    count = collections.Counter(v for v, _ in last)
    lines = ["| layer | " + " | ".join(f"{v} (n={count[v]})" for v in shown) + " |",
             "|---|" + "---:|" * len(shown)]
    for name in layers:
        lines.append(f"| {name} | " + " | ".join(_pm(per[v].get(name, [])) for v in shown) + " |")
    mean_row = [_pm([statistics.fmean(k.values()) for u, k in last if u == v]) for v in shown]
    lines.append("| **mean over layers** | " + " | ".join(mean_row) + " |")
    return lines


def section(runs: Sequence[Run], order: Sequence[str], figdir: Path, prefix: str = "") -> list[str]:
    """Markdown lines (and the memorization figure) for one comparison's runs."""
    return memorization_lines(runs, order, figdir, prefix) + kurtosis_lines(runs, order)
