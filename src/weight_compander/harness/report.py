"""`weight-compander report RUNS_DIR`: a Markdown table and PNG figures from finished runs.

The compared number is always the final-epoch test accuracy from `final.json` (measured once,
after the last epoch); the best validation epoch's accuracy, robustness results and label noise
come in their own tables (robustness_report.py). Differences to the baseline are paired over the
seeds both variants have, because the same seed means the same data order and init, so the
seed-to-seed noise cancels in the difference. The figures are drawn by figures.py.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weight_compander.defaults import NEAR_ZERO  # |w| < NEAR_ZERO * s is "near zero"

from . import atomic, figures, mechanism, robustness_report, runlock
from .membership import FIX_COMPARE_JSON, ComparisonInfo, config_label, load_comparison_info
from .runfiles import (
    FIX_CONFIG,
    RUN_FILES,
    RunFileError,
    parse_config,
    read_final,
    read_json,
    read_jsonl,
)

CONFIDENCE = 0.95  # of the paired-difference intervals
MIN_SEEDS = 5  # fewer seeds than this for any variant: the table is partial, not a verdict
FIX_METRICS = ("delete {run}/final.json and resume the run (`compare` again, or `train --resume`): "
               "it rewrites metrics.jsonl from the checkpoint")


@dataclass
class Run:
    """One finished run folder (a valid final.json) and what `report` needs from it."""

    path: Path
    root: Path  # the comparison folder the run belongs to (has compare.json), or RUNS_DIR
    variant: str
    seed: int
    config: dict[str, Any]
    final: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RunScan:
    """What `scan_runs` found: the runs to report, and every other run folder with its reason."""

    runs: list[Run]
    incomplete: list[Path]  # run folders that belong but have not finished
    ignored: list[tuple[Path, str]]  # run folders that do not belong, and why
    why: dict[Path, str] = field(default_factory=dict)  # why an incomplete run is not finished


def _read_json(path: Path) -> dict[str, Any]:
    return read_json(path, FIX_COMPARE_JSON)  # compare.json


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Per-epoch rows of metrics.jsonl; the last row wins if an epoch repeats (after a resume)."""
    rows: dict[int, dict[str, Any]] = {}
    if path.exists():
        for row in read_jsonl(path, FIX_METRICS.format(run=path.parent)):
            if not isinstance(row.get("epoch"), int):
                raise RunFileError(f"{path}: a line has no epoch number; "
                                   + FIX_METRICS.format(run=path.parent))
            rows[int(row["epoch"])] = row
    return [rows[k] for k in sorted(rows)]


def _comparison_root(run_dir: Path, runs_dir: Path) -> Path:
    for parent in [run_dir, *run_dir.parents]:
        if (parent / "compare.json").exists():
            return parent
        if parent == runs_dir:
            break
    return runs_dir


def _run_folders(runs_dir: Path) -> list[Path]:
    """Every folder below `runs_dir` (itself included) that holds a run's files."""
    found = []
    for folder, dirs, files in os.walk(runs_dir):
        dirs.sort()
        if set(RUN_FILES) & set(files):
            found.append(Path(folder))
    return sorted(found)


def find_runs(runs_dir: str | Path) -> tuple[list[Run], list[Path]]:
    """The finished runs to report below `runs_dir`, and the run folders not finished yet."""
    scan = scan_runs(runs_dir)
    return scan.runs, scan.incomplete


def scan_runs(runs_dir: str | Path) -> RunScan:
    """Sort every run folder below `runs_dir` into reported, unfinished and ignored.

    Below a compare.json only the runs that belong to that comparison as it is now count
    (membership.py); other runs are grouped by configuration (their variant name is
    `membership.config_label`), and a second folder with the same settings and seed is
    ignored as a duplicate.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"{runs_dir} is not a folder; pass the --out folder of a compare")
    scan = RunScan([], [], [])
    infos: dict[Path, ComparisonInfo | None] = {}
    seen: dict[tuple[Path, str, int], Path] = {}
    for run_dir in _run_folders(runs_dir):
        root = _comparison_root(run_dir, runs_dir)
        if root not in infos:
            infos[root] = load_comparison_info(root)
        info = infos[root]
        if not (run_dir / "config.json").exists():
            scan.incomplete.append(run_dir)
            scan.why[run_dir] = "config.json is missing; `compare` or `train --resume` restores it"
            continue
        raw = read_json(run_dir / "config.json", FIX_CONFIG)
        config = parse_config(raw, run_dir / "config.json")
        reason = info.why_not_member(run_dir, config) if info is not None else None
        if reason is not None:
            scan.ignored.append((run_dir, reason))
            continue
        final, problem = read_final(run_dir)
        if final is None:
            scan.incomplete.append(run_dir)
            if problem != "no final.json":
                scan.why[run_dir] = f"{problem}; resuming the run writes it again"
            continue
        variant = run_dir.parent.name if info is not None else config_label(config)
        key = (root, variant, config.seed)
        if key in seen:
            scan.ignored.append((run_dir, f"same settings and seed as {seen[key]}"))
            continue
        seen[key] = run_dir
        metrics = read_metrics(run_dir / "metrics.jsonl")
        scan.runs.append(Run(run_dir, root, variant, config.seed, raw, final, metrics))
    return scan


# --------------------------------------------------------------------------- statistics


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value: no spread to estimate)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def paired_difference(
    values: Mapping[int, float], baseline: Mapping[int, float], confidence: float = CONFIDENCE
) -> dict[str, Any]:
    """Mean of per-seed differences `values - baseline` over common seeds, with a t-interval.

    The interval is mean ± t(confidence, n-1) · sd / √n over the differences; it needs two
    pairs or more (otherwise `ci` is None).
    """
    from scipy import stats

    seeds = sorted(set(values) & set(baseline))
    diffs = [values[s] - baseline[s] for s in seeds]
    out: dict[str, Any] = {
        "seeds": seeds,
        "n": len(seeds),
        "diffs": diffs,
        "mean": None,
        "std": None,
        "ci": None,
        "confidence": confidence,
    }
    if not diffs:
        return out
    mean, sd = mean_std(diffs)
    out["mean"], out["std"] = mean, sd
    if sd is not None:
        half = float(stats.t.ppf(0.5 + confidence / 2, len(diffs) - 1)) * sd / math.sqrt(len(diffs))
        out["ci"] = [mean - half, mean + half]
    return out


def _mean_of(runs: Sequence[Run], source: str, key: str) -> float | None:
    values = [getattr(r, source).get(key) for r in runs]
    values = [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    return statistics.fmean(values) if values else None


def summarize(runs: Sequence[Run], baseline: str | None) -> dict[str, Any]:
    """Per variant: seeds, test_acc list, mean, std, n, mean val acc / train time, and the
    paired difference to `baseline` (runs are assumed to come from one comparison)."""
    by_variant: dict[str, list[Run]] = {}
    for run in sorted(runs, key=lambda r: (r.variant, r.seed)):
        by_variant.setdefault(run.variant, []).append(run)
    accs = {v: {r.seed: float(r.final["test_acc"]) for r in rs} for v, rs in by_variant.items()}
    variants: dict[str, Any] = {}
    for name, rs in by_variant.items():
        mean, std = mean_std(list(accs[name].values()))
        variants[name] = {
            "seeds": list(accs[name]),
            "test_acc": list(accs[name].values()),
            "mean": mean,
            "std": std,
            "n": len(rs),
            "val_acc_mean": _mean_of(rs, "final", "val_acc"),
            "wall_time_mean": _mean_of(rs, "final", "wall_time"),
            "cpu_time_total": sum(float(r.final.get("cpu_time") or 0.0) for r in rs),
        }
        if baseline is not None and baseline in accs and name != baseline:
            variants[name]["vs_baseline"] = paired_difference(accs[name], accs[baseline])
    return {"baseline": baseline, "variants": variants}


# --------------------------------------------------------------------------- Markdown


def _pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "—"
    return f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}"


def _diff_cell(d: dict[str, Any] | None) -> tuple[str, str]:
    if d is None or d["n"] == 0:
        return "—", "0"
    if d["ci"] is None:
        return f"{_pct(d['mean'], True)} (no CI: 1 pair)", str(d["n"])
    lo, hi = d["ci"]
    return f"{_pct(d['mean'], True)} [{_pct(lo, True)}, {_pct(hi, True)}]", str(d["n"])


def _table(names: Sequence[str], summary: dict[str, Any], baseline: str | None) -> list[str]:
    lines = [
        f"| variant | n | test acc % (mean ± std) | Δ vs {baseline or 'baseline'}, pp "
        "[95% CI] | pairs | val acc % | train time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        s = summary["variants"][name]
        acc = f"{_pct(s['mean'])} ± {_pct(s['std'])}"
        if name == baseline:
            diff, pairs = "(baseline)", "—"
        else:
            diff, pairs = _diff_cell(s.get("vs_baseline"))
        lines.append(
            f"| {name} | {s['n']} | {acc} | {diff} | {pairs} | "
            f"{_pct(s['val_acc_mean'])} | {_seconds(s['wall_time_mean'])} |"
        )
    return lines


def _group_title(runs: Sequence[Run]) -> str:
    c = runs[0].config
    subset = c.get("train_subset")
    extra = f", {subset} training images" if subset else ""
    extra += robustness_report.label_noise_title(runs)
    return f"{c.get('dataset', '?')} / {c.get('model', '?')}{extra}"


def _variant_order(root: Path, names: set[str], baseline: str | None) -> list[str]:
    order: list[str] = []
    compare_json = root / "compare.json"
    if compare_json.exists():
        order = [v for v in _read_json(compare_json).get("variants", {}) if v in names]
    rest = sorted(names - set(order))
    order += rest
    if baseline in order:
        order.remove(baseline)
        order.insert(0, baseline)
    return order


def _root_baseline(root: Path, names: set[str], override: str | None) -> str | None:
    if override is not None:
        return override if override in names else None
    if (root / "compare.json").exists():
        return _read_json(root / "compare.json").get("baseline")
    return "base" if "base" in names else None


def markdown_tables(runs: Sequence[Run], baseline: str | None = None) -> str:
    """The report's tables (one per comparison and dataset/model) as Markdown text."""
    out: list[str] = []
    for root, root_runs in _by_root(runs).items():
        names = {r.variant for r in root_runs}
        base = _root_baseline(root, names, baseline)
        summary = summarize(root_runs, base)
        groups: dict[tuple[str, str], list[Run]] = {}
        for r in root_runs:
            key = (str(r.config.get("dataset")), str(r.config.get("model")))
            groups.setdefault(key, []).append(r)
        for group_runs in groups.values():
            in_group = {r.variant for r in group_runs}
            order = [v for v in _variant_order(root, names, base) if v in in_group]
            out += [f"### {_root_name(root)}: {_group_title(group_runs)}", ""]
            out += _table(order, summary, base if base in names else None)
            if base is not None and base not in names:
                out.append(f"\nBaseline `{base}` has no finished run, so there is no Δ column.")
            out += partial_note(summary, order, _planned_seeds(root))
            out.append("")
    return "\n".join(out)


def partial_note(summary: dict[str, Any], order: Sequence[str], planned: list[int] | None) -> list[str]:
    """A line saying the table is partial when a variant has fewer than `MIN_SEEDS` seeds or
    fewer than the comparison plans; [] when every variant is complete."""
    n = {v: summary["variants"][v]["n"] for v in order}
    want = max(MIN_SEEDS, len(planned or []))
    short = [f"{v} {n[v]}" for v in order if n[v] < want]
    if not short:
        return []
    plan = f" (of {len(planned)} planned)" if planned else ""
    few = min(n.values()) < MIN_SEEDS
    why = f": under {MIN_SEEDS} seeds this is a progress report, not a verdict" if few else ""
    return [f"\n**Partial**: finished seeds per variant{plan}: {', '.join(short)}{why}."]


def _planned_seeds(root: Path) -> list[int] | None:
    if (root / "compare.json").exists():
        seeds = _read_json(root / "compare.json").get("seeds")
        return seeds if isinstance(seeds, list) else None
    return None


def _root_name(root: Path) -> str:
    if (root / "compare.json").exists():
        return str(_read_json(root / "compare.json").get("name") or root.name)
    return root.resolve().name


def _seconds(t: float | None) -> str:
    return "—" if t is None else f"{t:.1f}" if t < 10 else f"{t:.0f}"


def _by_root(runs: Sequence[Run]) -> dict[Path, list[Run]]:
    roots: dict[Path, list[Run]] = {}
    for r in runs:
        roots.setdefault(r.root, []).append(r)
    return roots


# --------------------------------------------------------------------------- report

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
    roots = _by_root(scan.runs)
    lines = [f"# Report: {runs_dir.resolve().name}", "", INTRO, ""]
    for root, rruns in roots.items():
        rel = root.relative_to(runs_dir).as_posix().replace("/", "-")
        prefix = "" if len(roots) == 1 else f"{'top' if rel == '.' else rel}-"
        rnames = {r.variant for r in rruns}
        base = _root_baseline(root, rnames, baseline)
        order = _variant_order(root, rnames, base)
        summary = summarize(rruns, base)
        lines += [markdown_tables(rruns, baseline), "#### Figures", ""]
        figures.accuracy_figure(order, summary, base, figdir / f"{prefix}accuracy.png")
        figures.curves_figure(order, rruns, figdir / f"{prefix}curves.png")
        lines += [
            f"![test accuracy per variant](figures/{prefix}accuracy.png)",
            "",
            f"![learning curves](figures/{prefix}curves.png)",
            "",
        ]
        rows = figures.weight_figure(rruns, order, layer, figdir / f"{prefix}weights.png")
        lines += figures.no_weights_note(rruns, order)
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
        series = figures.hyper_series(rruns)
        if series:
            rows = figures.hyper_figure(series, figdir / f"{prefix}wc-hyper.png")
            lines += [f"![learned WC hyperparameters](figures/{prefix}wc-hyper.png)", "", *rows, ""]
        lines += robustness_report.section(rruns, order, base, figdir, prefix)
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


def _main(args: argparse.Namespace) -> int:
    try:
        path = write_report(args.runs_dir, baseline=args.baseline, layer=args.layer)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    scan = scan_runs(args.runs_dir)
    print(markdown_tables(scan.runs, args.baseline))
    if ignored_line(scan, Path(args.runs_dir)):
        print(ignored_line(scan, Path(args.runs_dir)))
    print(f"report: {path}")
    return 0


def add_parser(subparsers: Any) -> None:
    """Register `report RUNS_DIR [--baseline NAME] [--layer NAME]`."""
    p = subparsers.add_parser(
        "report",
        help="Markdown table and PNG figures from the runs of a comparison",
        description="Write RUNS_DIR/report.md and RUNS_DIR/figures/*.png from finished runs.",
    )
    p.add_argument("runs_dir", type=Path, help="the --out folder of a compare (or a parent)")
    p.add_argument("--baseline", help="variant to pair against (default: from compare.json)")
    p.add_argument(
        "--layer",
        help="weight tensor for the one-layer histogram, e.g. "
        "'features.0.weight' (default: the first companded layer)",
    )
    p.set_defaults(func=_main)
