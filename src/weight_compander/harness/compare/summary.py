"""summary.json of a comparison: its runs' statistics, what is missing or failed, and what it cost.

Written after every `compare` from the complete runs of the comparison's variants and seeds;
the invocation records keep the wall and CPU time of every `compare` on the folder, so a
comparison finished in several sessions still records what it cost.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from weight_compander.harness.config.comparison import Comparison
from weight_compander.harness.errors import RunFileError
from weight_compander.harness.report.stats import summarize
from weight_compander.harness.store import atomic, runfiles
from weight_compander.harness.store.scan import find_runs

__all__ = ["previous_invocations", "write_summary"]

FIX_SUMMARY = ("delete it: the next `compare` writes a new one (the record of earlier invocations "
               "and their CPU time is lost)")


def write_summary(
    comparison: Comparison, out: Path, *, failed: list[dict[str, Any]] | None = None,
    wall_time: float = 0.0, cpu_time: float = 0.0, trained: int = 0,
) -> dict[str, Any]:
    """Write <out>/summary.json from the complete runs of this comparison's variants/seeds.

    wall_time / cpu_time are totals over every `compare` invocation on this folder (each is
    listed under "invocations"), so a comparison finished in several sessions still records
    what it cost; runs_cpu_time is the training runs' own CPU time from their final.json.
    A read-modify-write: call it holding ``runlock.write_lock(out)``.
    """
    runs, _ = find_runs(out)
    runs = [r for r in runs if r.variant in comparison.variants and r.seed in comparison.seeds]
    done = {(r.variant, r.seed) for r in runs}
    invocations = previous_invocations(out)
    invocations.append({"finished": datetime.now(UTC).isoformat(timespec="seconds"),
                        "runs_trained": trained, "wall_time": wall_time, "cpu_time": cpu_time})
    summary = {
        "name": comparison.name,
        "seeds": comparison.seeds,
        **summarize(runs, comparison.baseline),
        "missing": [{"variant": v, "seed": s} for v in comparison.variants
                    for s in comparison.seeds if (v, s) not in done],
        "failed": failed or [],
        "wall_time": sum(i["wall_time"] for i in invocations),  # seconds
        "cpu_time": sum(i["cpu_time"] for i in invocations),  # incl. worker processes
        "runs_wall_time": sum(float(r.final.get("wall_time") or 0.0) for r in runs),
        "runs_cpu_time": sum(float(r.final.get("cpu_time") or 0.0) for r in runs),
        "invocations": invocations,
    }
    atomic.write_json(out / "summary.json", summary)
    return summary


def previous_invocations(out: Path) -> list[dict[str, Any]]:
    """The invocation records of summary.json (every earlier `compare` on this folder)."""
    path = out / "summary.json"
    if not path.exists():
        return []
    data = runfiles.read_json(path, FIX_SUMMARY)
    invocations = data.get("invocations", []) if isinstance(data, dict) else None
    if not isinstance(invocations, list) or not all(
            isinstance(i, dict) and isinstance(i.get("wall_time"), int | float)
            and isinstance(i.get("cpu_time"), int | float) for i in invocations):
        raise RunFileError(f"{path} is not a comparison summary; {FIX_SUMMARY}")
    return invocations
