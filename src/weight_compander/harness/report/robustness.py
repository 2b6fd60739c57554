"""The report's robustness part: tables and figures from robustness.json, selection on validation,
and the label noise a run trained with.

`report.write.write_report` calls `section` once per comparison; `robustness` prints
`summary_table`. Statistics are report/stats.py's: mean ± std over seeds, and the paired
difference to the baseline with its 95% t-interval over the seeds both variants have.
"""

from __future__ import annotations

import collections
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weight_compander.harness.config.suite import WEIGHTS
from weight_compander.harness.evaluate import robustness
from weight_compander.harness.report.plots import pyplot
from weight_compander.harness.report.stats import diff_cell, mean_std, paired_difference, pct
from weight_compander.harness.report.tables import by_root, root_baseline, root_name, variant_order

if TYPE_CHECKING:
    from weight_compander.harness.store.scan import Run

__all__ = ["best_val_table", "entries", "section", "summary_table"]

TITLES = {
    "clean": "clean", "corruption": "input corruptions", "prune-global": "pruning, global",
    "prune-layer": "pruning, per layer", "quant-maxabs": "quantization, max-abs",
    "quant-mse": "quantization, MSE clipping", "weight-noise": "weight noise",
}
X_LABELS = {"corruption": "severity", "prune-global": "sparsity", "prune-layer": "sparsity",
            "quant-maxabs": "bits", "quant-mse": "bits", "weight-noise": "σ / tensor std"}
WEIGHT_NAMES = {"final": "last epoch's weights", "best_val": "best validation epoch's weights"}


def entries(runs: Sequence[Run], weights: str) -> tuple[list[tuple[Run, dict]], list[Run]]:
    """(run, entry) for `weights` under the most common suite, and the runs evaluated with
    another suite (listed in the report, not mixed into its numbers)."""
    found = [(r, robustness.read(r.path).get("evaluations", {}).get(weights)) for r in runs]
    found = [(r, e) for r, e in found if e]
    if not found:
        return [], []
    common = collections.Counter(e["suite"]["fingerprint"] for _, e in found).most_common(1)[0][0]
    return ([(r, e) for r, e in found if e["suite"]["fingerprint"] == common],
            [r for r, e in found if e["suite"]["fingerprint"] != common])


def _values(found: list[tuple[Run, dict]]) -> dict[tuple, dict[str, dict[int, float]]]:
    """(family, condition, level) -> variant -> seed -> accuracy; plus ("summary", family) keys."""
    out: dict[tuple, dict[str, dict[int, float]]] = collections.defaultdict(
        lambda: collections.defaultdict(dict))
    for run, e in found:
        out[("summary", "clean")][run.variant][run.seed] = e["clean"]["acc"]
        for family, acc in e["summary"].items():
            out[("summary", family)][run.variant][run.seed] = acc
        for r in e["results"]:
            out[(r["family"], r["condition"], r["level"])][run.variant][run.seed] = r["acc"]
    return out


def _cell(per_variant: dict[str, dict[int, float]], variant: str, base: str | None,
          with_delta: bool = True) -> str:
    seeds = per_variant.get(variant)
    if not seeds:
        return "—"
    mean, std = mean_std(list(seeds.values()))
    text = f"{pct(mean)} ± {pct(std)}"
    if with_delta and base is not None and variant != base and per_variant.get(base):
        text += f", Δ {diff_cell(paired_difference(seeds, per_variant[base]))[0]}"
    return text


def summary_table(runs: Sequence[Run], weights: str, order: Sequence[str] | None = None,
                  base: str | None = None) -> str:
    """One row per variant: clean and each family's mean accuracy (% ± std; Δ vs base, pp
    [95% CI]). Without `order`/`base`: per comparison folder, as `report` finds them."""
    if order is None:
        parts = []
        for root, rruns in by_root(runs).items():
            names = {r.variant for r in rruns}
            b = root_baseline(root, names, None)
            parts += [f"### {root_name(root)}: robustness ({WEIGHT_NAMES[weights]})", "",
                      summary_table(rruns, weights, variant_order(root, names, b), b), ""]
        return "\n".join(parts)
    found, _ = entries(runs, weights)
    if not found:
        return f"(no robustness results for the {WEIGHT_NAMES[weights]})"
    values = _values(found)
    families = [k[1] for k in values if k[0] == "summary"]
    lines = ["| variant | n | " + " | ".join(f"{TITLES[f]}, acc %" for f in families) + " |",
             "|---|---:|" + "---:|" * len(families)]
    for v in order:
        n = sum(r.variant == v for r, _ in found)
        if n:
            cells = [_cell(values[("summary", f)], v, base) for f in families]
            lines.append(f"| {v} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _family_table(values: dict, family: str, order: Sequence[str], base: str | None) -> list[str]:
    keys = [k for k in values if k[0] == family]
    others = [v for v in order if v != base]
    head = [base] if base in order else []
    lines = ["| condition | " + " | ".join(f"{v}, acc %" for v in [*head, *others]) + " |",
             "|---|" + "---:|" * (len(head) + len(others))]
    for k in [*keys, ("summary", family)]:
        label = f"**mean over {len(keys)}**" if k[0] == "summary" else (
            f"{k[1]} {k[2]}" if family == "corruption" else f"{X_LABELS[family]} {k[2]:g}")
        lines.append(f"| {label} | " + " | ".join(_cell(values[k], v, base) for v in [*head, *others]) + " |")
    return lines


def best_val_table(runs: Sequence[Run], order: Sequence[str], base: str | None) -> list[str]:
    """Final-epoch vs best-validation-epoch test accuracy per variant (if the runs have both)."""
    have = [r for r in runs if r.final.get("test_acc_best_val") is not None]
    if not have:
        return []
    final = {"final": collections.defaultdict(dict), "best": collections.defaultdict(dict)}
    epochs: dict[str, list[int]] = collections.defaultdict(list)
    for r in have:
        final["final"][r.variant][r.seed] = r.final["test_acc"]
        final["best"][r.variant][r.seed] = r.final["test_acc_best_val"]
        epochs[r.variant].append(int(r.final["best_epoch"]))
    lines = ["#### Selection on validation", "",
             "Test accuracy of the last epoch's weights and of the best validation epoch's (the first "
             "epoch with the highest validation accuracy; measured once at the end of the run).", "",
             "| variant | last epoch, acc % | best val epoch, acc % | best − last, pp [95% CI] "
             "| best epoch |",
             "|---|---:|---:|---:|---|"]
    for v in order:
        if v in final["best"]:
            gain = diff_cell(paired_difference(final["best"][v], final["final"][v]))[0]
            best = ", ".join(map(str, sorted(epochs[v])))
            lines.append(f"| {v} | {_cell(final['final'], v, base)} | {_cell(final['best'], v, base)} | "
                         f"{gain} | {best} of {have[0].final.get('epochs')} |")
    return [*lines, ""]


def _label_noise_lines(runs: Sequence[Run], order: Sequence[str]) -> list[str]:
    noisy = {r.variant: (r.config.get("label_noise"), r.config.get("label_noise_kind"))
             for r in runs if r.config.get("label_noise")}
    if not noisy:
        return []
    text = "; ".join(f"{v}: {noisy[v][0]:.0%} {noisy[v][1]}" for v in order if v in noisy)
    return [f"Label noise (training and validation labels; test labels are clean): {text}.", ""]


def section(runs: Sequence[Run], order: Sequence[str], base: str | None, figdir: Path,
            prefix: str = "") -> list[str]:
    """Markdown lines (and figures in `figdir`) for one comparison's runs; [] if there is nothing."""
    lines = _label_noise_lines(runs, order) + best_val_table(runs, order, base)
    for weights in WEIGHTS:
        found, stale = entries(runs, weights)
        if not found:
            continue
        suite = found[0][1]["suite"]
        e = found[0][1]
        tag = "" if weights == "final" else "-best-val"
        values = _values(found)
        lines += [f"#### Robustness ({WEIGHT_NAMES[weights]})", "",
                  f"Accuracy on {e['images']} of {e['test_images']} test images (a fixed subset, the same "
                  f"for every run and condition), suite v{suite['version']} {suite['fingerprint']}: "
                  "mean ± std over seeds, Δ = paired difference to the baseline in pp with its 95% "
                  "t-interval. Pruning keeps the first and last layer dense: "
                  f"{'yes' if suite['dense_ends'] else 'no'}.",
                  "", summary_table([r for r, _ in found], weights, order, base), ""]
        if stale:
            lines += ["Evaluated with another suite (not in these numbers; re-run `weight-compander "
                      "robustness`): " + ", ".join(f"`{r.variant}/seed{r.seed}`" for r in stale), ""]
        families = [k[1] for k in values if k[0] == "summary" and k[1] != "clean"]
        name = f"{prefix}robustness{tag}.png"
        robustness_figure(values, families, order, figdir / name)
        lines += [f"![accuracy vs perturbation strength](figures/{name})", ""]
        if "corruption" in families:
            name = f"{prefix}corruptions{tag}.png"
            corruption_figure(values, order, figdir / name)
            lines += [f"![accuracy per corruption](figures/{name})", ""]
        for family in families:
            lines += [f"##### {TITLES[family]}", "", *_family_table(values, family, order, base), ""]
    return lines


# --------------------------------------------------------------------------- figures


def _band(ax: Any, xs: list[int], series: list[dict[int, float]], label: str, color: str) -> None:
    """Mean over seeds as a line, mean ± std as a band (no band with one seed)."""
    means = [100 * statistics.fmean(s.values()) for s in series]
    stds = [100 * statistics.stdev(s.values()) if len(s) > 1 else 0.0 for s in series]
    ax.plot(xs, means, marker="o", ms=3, color=color, label=label)
    ax.fill_between(xs, [m - s for m, s in zip(means, stds, strict=True)],
                    [m + s for m, s in zip(means, stds, strict=True)], color=color, alpha=0.2, lw=0)


def _panel(ax: Any, values: dict, keys: list[tuple], labels: list[str], order: Sequence[str]) -> None:
    clean = values[("summary", "clean")]
    for i, v in enumerate(order):
        if v in clean and all(v in values[k] for k in keys):
            _band(ax, list(range(len(keys) + 1)), [clean[v], *(values[k][v] for k in keys)], v, f"C{i}")
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.grid(True, alpha=0.3)


def robustness_figure(values: dict, families: Sequence[str], order: Sequence[str], path: Path) -> None:
    """Accuracy vs strength per family (corruptions: mean over kinds per severity); a line per
    variant, a band over seeds; the first point of each panel is the clean accuracy."""
    plt = pyplot()
    cols = min(3, len(families))
    rows = -(-len(families) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, family in zip(axes.flat, families, strict=False):
        keys = [k for k in values if k[0] == family]
        if family == "corruption":  # mean over corruption kinds, per severity and seed
            levels = sorted({k[2] for k in keys})
            merged = {}
            for s in levels:
                per = [values[k] for k in keys if k[2] == s]
                merged[("corruption-mean", s)] = {
                    v: {seed: statistics.fmean(p[v][seed] for p in per) for seed in per[0].get(v, {})}
                    for v in per[0]}
            values = {**values, **merged}
            keys = list(merged)
        labels = ["clean", *(f"{k[-1]:g}" for k in keys)]
        _panel(ax, values, keys, labels, order)
        ax.set_title(TITLES[family], fontsize=10)
        ax.set_xlabel(X_LABELS[family] + (" (mean over corruptions)" if family == "corruption" else ""))
        ax.set_ylabel("test accuracy %")
    for ax in list(axes.flat)[len(families):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def corruption_figure(values: dict, order: Sequence[str], path: Path) -> None:
    """Small multiples: accuracy vs severity for each corruption, a line per variant."""
    names = list(dict.fromkeys(k[1] for k in values if k[0] == "corruption"))
    plt = pyplot()
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False, sharey=True)
    for ax, name in zip(axes.flat, names, strict=False):
        keys = [k for k in values if k[0] == "corruption" and k[1] == name]
        _panel(ax, values, keys, ["clean", *(str(k[2]) for k in keys)], order)
        ax.set_title(name, fontsize=9)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("test acc %")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("accuracy per corruption vs severity (mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
