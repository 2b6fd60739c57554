"""The report's statistics: mean ± std over seeds and the paired difference to a baseline.

Differences to the baseline are paired over the seeds both variants have, because the same
seed means the same data order and init, so the seed-to-seed noise cancels in the
difference; the interval is a t-interval over the per-seed differences.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from weight_compander.harness.store.scan import Run

__all__ = ["CONFIDENCE", "MIN_SEEDS", "diff_cell", "mean_std", "paired_difference", "pct", "summarize"]

CONFIDENCE = 0.95  # of the paired-difference intervals
MIN_SEEDS = 5  # fewer seeds than this for any variant: the table is partial, not a verdict


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


def mean_of(runs: Sequence[Run], source: str, key: str) -> float | None:
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
            "val_acc_mean": mean_of(rs, "final", "val_acc"),
            "wall_time_mean": mean_of(rs, "final", "wall_time"),
            "cpu_time_total": sum(float(r.final.get("cpu_time") or 0.0) for r in rs),
        }
        if baseline is not None and baseline in accs and name != baseline:
            variants[name]["vs_baseline"] = paired_difference(accs[name], accs[baseline])
    return {"baseline": baseline, "variants": variants}


def pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "—"
    return f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}"


def diff_cell(d: dict[str, Any] | None) -> tuple[str, str]:
    if d is None or d["n"] == 0:
        return "—", "0"
    if d["ci"] is None:
        return f"{pct(d['mean'], True)} (no CI: 1 pair)", str(d["n"])
    lo, hi = d["ci"]
    return f"{pct(d['mean'], True)} [{pct(lo, True)}, {pct(hi, True)}]", str(d["n"])
