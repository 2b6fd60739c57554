"""The report's Markdown tables: one per comparison and data set / model, in the variant
order of compare.json with the baseline first, and the note that marks a table partial.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from weight_compander.harness.report.stats import MIN_SEEDS, diff_cell, pct, summarize
from weight_compander.harness.store.scan import Run, comparison_file

__all__ = [
    "by_root", "label_noise_title", "markdown_tables", "partial_note", "root_baseline", "root_name",
    "variant_order",
]


def _table(names: Sequence[str], summary: dict[str, Any], baseline: str | None) -> list[str]:
    lines = [
        f"| variant | n | test acc % (mean ± std) | Δ vs {baseline or 'baseline'}, pp "
        "[95% CI] | pairs | val acc % | train time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        s = summary["variants"][name]
        acc = f"{pct(s['mean'])} ± {pct(s['std'])}"
        if name == baseline:
            diff, pairs = "(baseline)", "—"
        else:
            diff, pairs = diff_cell(s.get("vs_baseline"))
        lines.append(
            f"| {name} | {s['n']} | {acc} | {diff} | {pairs} | "
            f"{pct(s['val_acc_mean'])} | {_seconds(s['wall_time_mean'])} |"
        )
    return lines


def _group_title(runs: Sequence[Run]) -> str:
    c = runs[0].config
    subset = c.get("train_subset")
    extra = f", {subset} training images" if subset else ""
    extra += label_noise_title(runs)
    return f"{c.get('dataset', '?')} / {c.get('model', '?')}{extra}"


def variant_order(root: Path, names: set[str], baseline: str | None) -> list[str]:
    info = comparison_file(root)
    order = [v for v in info.get("variants", {}) if v in names] if info is not None else []
    rest = sorted(names - set(order))
    order += rest
    if baseline in order:
        order.remove(baseline)
        order.insert(0, baseline)
    return order


def root_baseline(root: Path, names: set[str], override: str | None) -> str | None:
    if override is not None:
        return override if override in names else None
    info = comparison_file(root)
    if info is not None:
        return info.get("baseline")
    return "base" if "base" in names else None


def markdown_tables(runs: Sequence[Run], baseline: str | None = None) -> str:
    """The report's tables (one per comparison and dataset/model) as Markdown text."""
    out: list[str] = []
    for root, root_runs in by_root(runs).items():
        names = {r.variant for r in root_runs}
        base = root_baseline(root, names, baseline)
        summary = summarize(root_runs, base)
        groups: dict[tuple[str, str], list[Run]] = {}
        for r in root_runs:
            key = (str(r.config.get("dataset")), str(r.config.get("model")))
            groups.setdefault(key, []).append(r)
        for group_runs in groups.values():
            in_group = {r.variant for r in group_runs}
            order = [v for v in variant_order(root, names, base) if v in in_group]
            out += [f"### {root_name(root)}: {_group_title(group_runs)}", ""]
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
    seeds = (comparison_file(root) or {}).get("seeds")
    return seeds if isinstance(seeds, list) else None


def root_name(root: Path) -> str:
    info = comparison_file(root)
    if info is not None:
        return str(info.get("name") or root.name)
    return root.resolve().name


def _seconds(t: float | None) -> str:
    return "—" if t is None else f"{t:.1f}" if t < 10 else f"{t:.0f}"


def by_root(runs: Sequence[Run]) -> dict[Path, list[Run]]:
    roots: dict[Path, list[Run]] = {}
    for r in runs:
        roots.setdefault(r.root, []).append(r)
    return roots


def label_noise_title(runs: Sequence[Run]) -> str:
    """", 20% symmetric label noise" when every run trained with the same noise; "" without."""
    kinds = {(float(r.config.get("label_noise") or 0), r.config.get("label_noise_kind")) for r in runs}
    if len(kinds) == 1:
        rate, kind = next(iter(kinds))
        return f", {rate:.0%} {kind} label noise (train + val; test clean)" if rate else ""
    return ", label noise differs by variant (see below)"
