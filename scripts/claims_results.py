"""The claims headline: where weight companding pays and where it costs, paired vs base.

    python scripts/claims_results.py [STUDIES_DIR] [OUT_MD] [OUT_PNG]

Reads the committed run folders of each benchmark's stage-3 comparison and label-noise
comparisons (default ``studies/``) and writes one Markdown table per variant (default
``docs/results/claims.md``): a row per benchmark, a column per condition (clean, corruptions,
pruning, quantization, weight noise, label noise), each cell the paired difference to ``base``
in points with its 95 % t-interval and n (paper_results.py's cells: *partial* below 5 pairs).
The figure (default: OUT_MD with ``.png``) shows the same numbers as dots with whiskers, and
the last section tabulates each layer's weight kurtosis (report/mechanism.py's table), the
mechanism behind the quantization columns. Robustness numbers are robustness.json's (the
harness's suite, last epoch's weights); label-noise numbers are final.json's. A folder that
does not exist gives "not run" cells. Nothing here is typed in by hand.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from paper_results import FULL_SEEDS, cell, final_values, paired, stage3_runs  # scripts/ is sys.path[0]

# variant -> what it is; a table each, in this order
VARIANTS = {"paper-wc": "the paper's arctan WC", "wc-fixed": "the library's WC",
            "kure": "KURE, a peer (kurtosis penalty)", "weight-norm": "weight_norm, a peer"}  # fmt: skip
KURTOSIS_VARIANTS = ["base", "paper-wc", "wc-fixed", "kure"]
# column -> (robustness family, level); level None: the family's mean over all its conditions and levels
ROBUSTNESS = {
    "clean": ("clean", None),
    "corruptions": ("corruption", None),
    "prune 90 % global": ("prune-global", 0.9),
    "prune 90 % per layer": ("prune-layer", 0.9),
    "4-bit max-abs": ("quant-maxabs", 4),
    "3-bit max-abs": ("quant-maxabs", 3),
    "2-bit max-abs": ("quant-maxabs", 2),
    "4-bit MSE": ("quant-mse", 4),
    "3-bit MSE": ("quant-mse", 3),
    "2-bit MSE": ("quant-mse", 2),
    "weight noise": ("weight-noise", None),
}
# benchmark -> its name in the label-noise folders, studies/noise-<name>-<kind>/
NOISE_FOLDERS = {"F-small": "fsmall", "M1D": "m1d"}
# column -> (label-noise kind in the folder name, final.json key)
LABEL_NOISE = {
    "sym 40 % final": ("sym40", "test_acc"),
    "sym 40 % best val": ("sym40", "test_acc_best_val"),
    "pair 20 % final": ("pair20", "test_acc"),
    "pair 20 % best val": ("pair20", "test_acc_best_val"),
}
COLUMNS = [*ROBUSTNESS, *LABEL_NOISE]
NOT_RUN = "not run"
# The headline (README): the library's and the paper's WC, the columns a reader decides on.
HEADLINE_VARIANTS = {"wc-fixed": "library WC", "paper-wc": "paper's WC"}
HEADLINE_COLUMNS = ["clean", "corruptions", "prune 90 % global", "2-bit max-abs", "2-bit MSE", "weight noise",
                    *LABEL_NOISE]  # fmt: skip


def accuracy(entry: dict[str, Any], family: str, level: float | None) -> float | None:
    """One robustness.json entry's accuracy for a column (None where the suite lacks it)."""
    if family == "clean":
        return entry["clean"]["acc"]
    if level is None:
        return entry["summary"].get(family)
    hits = [r["acc"] for r in entry["results"] if r["family"] == family and r["level"] == level]
    return hits[0] if len(hits) == 1 else None


def benchmark_values(studies: Path, bench: str, runs: list[Any] | None) -> tuple[dict[str, Any], list[Any]]:
    """column -> variant -> seed -> accuracy for one benchmark (None for a column whose folder does
    not exist), and the robustness entries found (for the header's test-set line)."""
    from weight_compander.harness.report.robustness import entries
    from weight_compander.harness.store.scan import scan_runs

    values: dict[str, Any] = dict.fromkeys(COLUMNS)
    found: list[tuple[Any, dict[str, Any]]] = []
    if runs is not None:
        found, _ = entries(runs, "final")
        for column, (family, level) in ROBUSTNESS.items():
            values[column] = {}
            for run, entry in found:
                acc = accuracy(entry, family, level)
                if acc is not None:
                    values[column].setdefault(run.variant, {})[run.seed] = float(acc)
    noisy: dict[str, list[Any]] = {}  # label-noise kind -> its runs, each folder scanned once
    for column, (kind, key) in LABEL_NOISE.items():
        folder = studies / f"noise-{NOISE_FOLDERS.get(bench)}-{kind}"
        if bench not in NOISE_FOLDERS:  # not part of the label-noise study: "—", not "not run"
            values[column] = {} if runs is not None else None
        elif folder.is_dir():
            if kind not in noisy:
                noisy[kind] = scan_runs(folder).runs
            values[column] = final_values(noisy[kind], key)
    return values, [e for _, e in found]


def deltas(studies: Path, stage3: dict[str, list[Any] | None]) -> tuple[dict[str, Any], dict[str, list[Any]],
                                                                       dict[str, dict[str, Any]]]:
    """bench -> column -> variant -> paired difference (None: no pair; NOT_RUN: no folder),
    bench -> the robustness entries found, and bench -> column -> variant -> seed -> accuracy."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    evaluated, values = {}, {}
    for bench, runs in stage3.items():
        values[bench], evaluated[bench] = benchmark_values(studies, bench, runs)
        out[bench] = {c: {v: NOT_RUN if values[bench][c] is None else paired(values[bench][c], v)
                          for v in VARIANTS} for c in COLUMNS}  # fmt: skip
    return out, evaluated, values


# Comparisons the verdict draws that are not "variant − base": (title, variant, reference, columns as
# (the variant's column, the reference's column)), paired by seed like every other cell.
PEER_COMPARISONS = [
    ("library WC − KURE", "wc-fixed", "kure", [("2-bit max-abs",) * 2, ("2-bit MSE",) * 2]),
    ("library WC − KURE at λ = 10 (`kure-l10`: where the KURE grid's best on validation was λ = 10)",
     "wc-fixed", "kure-l10", [("2-bit max-abs",) * 2, ("2-bit MSE",) * 2]),
    ("Powerprop − base", "powerprop", "base",
     [("clean",) * 2, ("prune 90 % global",) * 2, ("prune 90 % per layer",) * 2]),
    ("library WC alone − no regularization (`wc-only` − `none`)", "wc-only", "none",
     [(c, c) for c in LABEL_NOISE]),
    ("paper's WC alone − no regularization (`paper-wc-only` − `none`)", "paper-wc-only", "none",
     [(c, c) for c in LABEL_NOISE]),
    ("library WC alone at the last epoch − no regularization stopped early", "wc-only", "none",
     [("sym 40 % final", "sym 40 % best val"), ("pair 20 % final", "pair 20 % best val")]),
]


def peer_section(values: dict[str, dict[str, Any]]) -> list[str]:
    """A table per PEER_COMPARISONS entry: a row per benchmark that has both variants."""
    lines = ["## Against a peer or a control", ""]
    for title, variant, reference, columns in PEER_COMPARISONS:
        head = [a if a == b else f"{a} − {b}" for a, b in columns]
        rows = []
        for bench, by_column in values.items():
            cells = []
            for mine, theirs in columns:
                a, b = by_column[mine] or {}, by_column[theirs] or {}
                cells.append(cell(paired({"a": a.get(variant, {}), "b": b.get(reference, {})}, "a", "b")))
            if any(c != "—" for c in cells):
                rows.append(f"| {bench} | " + " | ".join(cells) + " |")
        if rows:
            lines += [f"### {title}", "", "| benchmark | " + " | ".join(head) + " |",
                      "|---|" + "---|" * len(head), *rows, ""]
    return lines


def tables(diffs: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    lines = []
    for variant, about in VARIANTS.items():
        lines += [f"## {variant} ({about}) − base", "",
                  "| benchmark | " + " | ".join(COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
        for bench, columns in diffs.items():
            cells = [d if d == NOT_RUN else cell(d) for d in (columns[c][variant] for c in COLUMNS)]
            lines.append(f"| {bench} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def short(d: Any) -> str:
    """A headline cell: as in the full tables, without "n=5" where every seed is there."""
    if d == NOT_RUN:
        return NOT_RUN
    text = cell(d)
    return text.replace(f" n={FULL_SEEDS}", "") if d and d["n"] >= FULL_SEEDS else text


def headline(diffs: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """One compact table: a row per benchmark with results and WC variant, Δ [95% CI] per headline
    column (n only where it is below 5); benchmarks not run at all are left out."""
    lines = ["| benchmark | WC | " + " | ".join(HEADLINE_COLUMNS) + " |",
             "|---|---|" + "---|" * len(HEADLINE_COLUMNS)]  # fmt: skip
    for bench, columns in diffs.items():
        if all(columns[c][v] == NOT_RUN for c in HEADLINE_COLUMNS for v in HEADLINE_VARIANTS):
            continue
        for variant, label in HEADLINE_VARIANTS.items():
            cells = [short(columns[c][variant]) for c in HEADLINE_COLUMNS]
            lines.append(f"| {bench} | {label} | " + " | ".join(cells) + " |")
    return lines


def kurtosis_section(stage3: dict[str, list[Any] | None]) -> list[str]:
    from weight_compander.harness.report.mechanism import kurtosis_table

    lines = ["## Mechanism: weight kurtosis per layer", "",
             "Kurtosis of each Linear/Conv layer's effective weight after the last epoch (metrics.jsonl; "
             "mean ± std over seeds; 1.8: uniform, 3: Gaussian, more: heavy tails, which stretch a "
             "max-abs quantization grid). Rows: layers in network order; n: seeds.", ""]
    for bench, runs in stage3.items():
        table = NOT_RUN if runs is None else kurtosis_table(runs, KURTOSIS_VARIANTS) or "no kurtosis recorded"
        lines += [f"### {bench}", "", *([table] if isinstance(table, str) else table), ""]
    return lines


def header(studies: Path, out: Path, png: Path, evaluated: dict[str, list[dict[str, Any]]]) -> list[str]:
    suites = {bench: e[0] for bench, e in evaluated.items() if e}
    images = "; ".join(f"{bench}: {e['images']} of {e['test_images']} (suite {e['suite']['fingerprint']})"
                       for bench, e in suites.items())
    levels = next(iter(suites.values()))["suite"] if suites else None
    levels_text = "" if levels is None else (
        f" The suite's levels: corruption severities {levels['severities']}, sparsities "
        f"{levels['sparsities']}, bits {levels['bits']}, weight-noise σ {levels['weight_noise']} "
        "(fractions of each tensor's std).")
    return [
        "# Claims: where weight companding pays and where it costs",
        "",
        f"Computed by `python scripts/claims_results.py {studies} {out} {png}` from the run folders in "
        f"`{studies}/`; every number below comes from those files, nothing is typed in by hand.",
        "",
        "Each cell: the variant's test accuracy minus base's, paired by seed (same data order and "
        "init), in points: mean of the per-seed differences, its 95 % t-interval, and n paired seeds. "
        f"*partial*: fewer than {FULL_SEEDS} pairs, no verdict. \"not run\": the benchmark's folder "
        "does not exist yet; —: the folder has no runs of this variant (or no such result).",
        "",
        "Columns, all on the last epoch's weights unless marked best val: **clean** test accuracy; "
        "**corruptions**, the mean over every input corruption and severity; **prune 90 %**, the "
        "90 % smallest-magnitude weights of every Linear/Conv layer set to zero, with one threshold "
        "over all layers (global) or the same share of each layer (per layer); **k-bit**, every "
        "Linear/Conv weight rounded to k bits, symmetric per output channel, the range set by the "
        "channel's largest |w| (max-abs) or by the clipping that gives the least squared error "
        "(MSE); **weight noise**, Gaussian noise of σ times each tensor's std added to the weights, "
        "the mean over the σ levels; **sym 40 %** "
        "and **pair 20 %**, training on 40 % symmetric or 20 % pair-flip label noise (clean test "
        "labels), the last epoch's (final) or the best validation epoch's (best val) test accuracy, "
        f"from the label-noise comparisons.{levels_text}",
        "",
        f"Images the robustness columns were measured on, of the test set's: {images or 'none yet'}.",
        "",
    ]


def figure(diffs: dict[str, dict[str, dict[str, Any]]], path: Path) -> None:
    """Dot and whisker per column: x = Δ pp vs base with its 95 % interval, a row per benchmark ×
    variant that has any result; a hollow dot is partial (n < FULL_SEEDS)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(b, v) for b in diffs for v in VARIANTS
            if any(isinstance(diffs[b][c][v], dict) and diffs[b][c][v]["mean"] is not None for c in COLUMNS)]
    cols = 5
    nrows = -(-len(COLUMNS) // cols)
    height = max(2.5, 0.28 * len(rows) + 1.2)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, height * nrows), squeeze=False, sharey=True)
    colors = {v: f"C{i}" for i, v in enumerate(VARIANTS)}
    for ax, column in zip(axes.flat, COLUMNS, strict=False):
        for y, (bench, variant) in enumerate(rows):
            d = diffs[bench][column][variant]
            if not isinstance(d, dict) or d["mean"] is None:
                continue
            lo, hi = (100 * x for x in d["ci"]) if d["ci"] else (100 * d["mean"],) * 2
            full = d["n"] >= FULL_SEEDS
            ax.plot([lo, hi], [y, y], color=colors[variant], lw=1.5)
            ax.plot(100 * d["mean"], y, "o", ms=5, color=colors[variant],
                    mfc=colors[variant] if full else "white")
        if not ax.lines:
            ax.text(0.5, 0.5, "not run yet", ha="center", va="center", color="grey", transform=ax.transAxes)
            ax.set_xticks([])
        ax.axvline(0, color="black", lw=0.8)
        for y in range(1, len(rows)):
            if rows[y][0] != rows[y - 1][0]:  # between benchmarks
                ax.axhline(y - 0.5, color="grey", lw=0.5, alpha=0.5)
        ax.set_title(column, fontsize=10)
        ax.set_xlabel("Δ test acc vs base, pp", fontsize=8)
        ax.grid(True, axis="x", alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(COLUMNS):]:
        ax.axis("off")
    axes[0, 0].set_yticks(range(len(rows)), [f"{b} · {v}" for b, v in rows])
    if rows:
        axes[0, 0].set_ylim(len(rows) - 0.5, -0.5)
    for ax in axes[:, 0]:
        ax.tick_params(labelleft=True)
    fig.suptitle("Paired difference to base (mean, 95 % CI over seeds; hollow: fewer than "
                 f"{FULL_SEEDS} seeds, no verdict; benchmarks not run are left out)", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str]) -> int:
    studies = Path(argv[0]) if argv else Path("studies")
    out = Path(argv[1]) if len(argv) > 1 else Path("docs/results/claims.md")
    png = Path(argv[2]) if len(argv) > 2 else out.with_suffix(".png")
    if not studies.is_dir():
        print(f"{studies} is not a folder; pass the folder holding the study's comparisons", file=sys.stderr)
        return 2
    stage3 = stage3_runs(studies)
    diffs, evaluated, values = deltas(studies, stage3)
    figure(diffs, png)
    picture = Path(os.path.relpath(png, out.parent)).as_posix()
    lines = [*header(studies, out, png, evaluated),
             "## Headline", "", "The library's WC (`wc-fixed`) and the paper's (`paper-wc`) on the columns a "
             "reader decides on (the README's table; every column for every variant below).", "",
             *headline(diffs), "", *tables(diffs), *peer_section(values),
             "## Figure", "", f"![paired difference to base per condition]({picture})", "",
             *kurtosis_section(stage3)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")
    print(out.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
