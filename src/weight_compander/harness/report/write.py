"""`weight-compander report RUNS_DIR`: a Markdown table and PNG figures from finished runs.

The compared number is always the final-epoch test accuracy from `final.json` (measured once,
after the last epoch); the best validation epoch's accuracy, robustness results and label noise
come in their own tables (robustness.py). Differences to the baseline are paired over the
seeds both variants have, because the same seed means the same data order and init, so the
seed-to-seed noise cancels in the difference. The figures are drawn by plots.py.
"""

from __future__ import annotations

from pathlib import Path

from weight_compander.defaults import NEAR_ZERO  # |w| < NEAR_ZERO * s is "near zero"
from weight_compander.harness.report import mechanism, plots, robustness
from weight_compander.harness.report.stats import summarize
from weight_compander.harness.report.tables import by_root, markdown_tables, root_baseline, variant_order
from weight_compander.harness.store import atomic, runlock
from weight_compander.harness.store.scan import RunScan, scan_runs

__all__ = ["INTRO", "ignored_line", "other_folders", "write_report"]


INTRO = (
    "Test accuracy is the final-epoch accuracy on the test set (`final.json`, measured once "
    "after the last epoch; the best validation epoch's has its own table, \"Selection on "
    "validation\", where runs have it). ± is the sample standard deviation over "
    "seeds. Δ is the mean paired difference to the baseline over the seeds both variants "
    "have (pp: percentage points), with a 95% t-interval over the per-seed differences "
    "(scipy.stats.t); an interval that includes 0 means no difference can be told apart "
    "from seed noise at this number of seeds."
)


def write_report(runs_dir: str | Path, *, baseline: str | None = None, layer: str | None = None) -> Path:
    """Write RUNS_DIR/report.md and RUNS_DIR/figures/*.png; return the path of report.md.

    Every file is replaced atomically, and two reports on one folder take turns
    (``.write.lock``), so report.md and its figures always come from one scan.
    """
    runs_dir = Path(runs_dir)
    scan = scan_runs(runs_dir)
    runs = scan.runs
    if not runs:
        raise FileNotFoundError(
            f"no finished runs (final.json) below {runs_dir}; run "
            "`weight-compander compare CONFIG.toml` first" + _ignored_note(scan, runs_dir)
        )
    names = {r.variant for r in runs}
    if baseline is not None and baseline not in names:
        raise ValueError(
            f"--baseline {baseline!r} is not a variant here; choose one of: " + ", ".join(sorted(names))
        )
    with runlock.write_lock(runs_dir):
        return _write_report(runs_dir, scan, baseline, layer)


def _write_report(runs_dir: Path, scan: RunScan, baseline: str | None, layer: str | None) -> Path:
    figdir = runs_dir / "figures"
    figdir.mkdir(exist_ok=True)
    roots = by_root(scan.runs)
    lines = [f"# Report: {runs_dir.resolve().name}", "", INTRO, ""]
    for root, rruns in roots.items():
        rel = root.relative_to(runs_dir).as_posix().replace("/", "-")
        prefix = "" if len(roots) == 1 else f"{'top' if rel == '.' else rel}-"
        rnames = {r.variant for r in rruns}
        base = root_baseline(root, rnames, baseline)
        order = variant_order(root, rnames, base)
        summary = summarize(rruns, base)
        lines += [markdown_tables(rruns, baseline), "#### Figures", ""]
        plots.accuracy_figure(order, summary, base, figdir / f"{prefix}accuracy.png")
        plots.curves_figure(order, rruns, figdir / f"{prefix}curves.png")
        lines += [
            f"![test accuracy per variant](figures/{prefix}accuracy.png)",
            "",
            f"![learning curves](figures/{prefix}curves.png)",
            "",
        ]
        rows = plots.weight_figure(rruns, order, layer, figdir / f"{prefix}weights.png")
        lines += plots.no_weights_note(rruns, order)
        if rows:
            lines += [
                f"![weight histograms](figures/{prefix}weights.png)",
                "",
                f"Weights of one run per variant, all companded layers pooled, in scale "
                f"units; near zero: share with |w| < {NEAR_ZERO}.",
                "",
                *rows,
                "",
            ]
        series = plots.hyper_series(rruns)
        if series:
            rows = plots.hyper_figure(series, figdir / f"{prefix}wc-hyper.png")
            lines += [f"![learned WC hyperparameters](figures/{prefix}wc-hyper.png)", "", *rows, ""]
        lines += robustness.section(rruns, order, base, figdir, prefix)
        lines += mechanism.section(rruns, order, figdir, prefix)
    lines += other_folders(scan, runs_dir)
    path = runs_dir / "report.md"
    atomic.write_text(path, "\n".join(lines))
    return path


def other_folders(scan: RunScan, runs_dir: Path) -> list[str]:
    """Markdown lines naming the unfinished and the ignored run folders (empty if none)."""
    lines = []
    if scan.incomplete:
        lines += [
            "Unfinished run folders (not in the tables): "
            + ", ".join(f"`{_rel(p, runs_dir)}`" + (f" ({scan.why[p]})" if p in scan.why else "")
                        for p in scan.incomplete),
            "",
        ]
    if scan.ignored:
        lines += [
            "Ignored run folders (not part of the comparison as it is now; not in the tables): "
            + ", ".join(f"`{_rel(p, runs_dir)}` ({why})" for p, why in scan.ignored),
            "",
        ]
    return lines


def ignored_line(scan: RunScan, runs_dir: Path) -> str | None:
    """One console line naming the run folders a report or summary left out, or None."""
    if not scan.ignored:
        return None
    names = ", ".join(_rel(p, runs_dir) for p, _ in scan.ignored)
    return (f"ignored {len(scan.ignored)} run folder(s) that are not part of the comparison as "
            f"it is now: {names} (reasons in {runs_dir / 'report.md'})")


def _ignored_note(scan: RunScan, runs_dir: Path) -> str:
    if not scan.ignored:
        return ""
    return "; ignored: " + ", ".join(f"{_rel(p, runs_dir)} ({why})" for p, why in scan.ignored)


def _rel(path: Path, runs_dir: Path) -> str:
    return path.relative_to(runs_dir).as_posix() if path != runs_dir else "."
