"""Is the paper's (a, b) grid ranked by the slope a/b? Validation accuracy of every grid point.

    python scripts/grid_slope.py [STUDIES_DIR] [OUT_MD]

Near zero, ``w = a·arctan(v/b)`` is the linear map ``w = (a/b)·v``, and under SGD a slope ``k``
multiplies the step of small weights by ``k²``; the bound ``a·π/2`` only acts on large weights. If
the paper's stage-2 grid is ranked by ``a/b`` and pairs with the same slope but different bounds
agree, the grid is choosing a step size. This script reads every ``grid-paper-<bench>/`` folder
under STUDIES_DIR (default ``studies/``) and writes (default ``docs/results/paper-grid-slope.md``
and ``.png`` beside it): per benchmark, each point's mean validation accuracy minus base's (the
quantity stage 2 chooses by), its slope and bound, and Spearman's rank correlation between slope
and that difference over the grid. Nothing is typed in by hand.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

from paper_results import BENCHMARKS  # scripts/ is sys.path[0]

# benchmark id -> its stage-2 grid folder under STUDIES_DIR (stage 3's paper-<bench> is grid-paper-<bench>)
GRIDS = {bench: f"grid-{folder}" for bench, folder in BENCHMARKS.items()}
FLOOR = -5.0  # the figure's lowest Δ val (points); points below it are drawn on it with their value


@dataclass(frozen=True)
class GridPoint:
    a: float
    b: float
    delta_val: float  # mean validation accuracy minus base's, in points
    n: int  # tuning seeds finished

    @property
    def slope(self) -> float:
        return self.a / self.b

    @property
    def bound(self) -> float:
        return self.a * math.pi / 2


def grid_points(folder: Path) -> list[GridPoint]:
    """Every finished arctan point of one grid comparison, against base's mean validation accuracy."""
    from weight_compander.harness.store.scan import scan_runs

    by_variant: dict[str, list[float]] = {}
    hyper: dict[str, dict[str, float]] = {}
    for run in scan_runs(folder).runs:
        by_variant.setdefault(run.variant, []).append(100 * float(run.final["val_acc"]))
        if run.config.get("wc_kind") == "arctan":
            hyper[run.variant] = run.config["wc_hyper"]
    if "base" not in by_variant:
        raise ValueError(f"{folder} has no finished base run: the grid is compared with base")
    base = mean(by_variant["base"])
    points = [GridPoint(float(h["a"]), float(h["b"]), mean(by_variant[v]) - base, len(by_variant[v]))
              for v, h in hyper.items()]  # fmt: skip
    return sorted(points, key=lambda p: (p.slope, p.a))


def slope_correlation(points: Sequence[GridPoint]) -> tuple[float, float]:
    """Spearman's rho between slope and validation difference, and its two-sided p-value."""
    from scipy.stats import spearmanr

    result = spearmanr([p.slope for p in points], [p.delta_val for p in points])
    return float(result.statistic), float(result.pvalue)


def section(bench: str, folder_name: str, points: Sequence[GridPoint]) -> list[str]:
    rho, p = slope_correlation(points)
    lines = [
        f"## {bench} (`{folder_name}`)",
        "",
        f"Spearman's ρ(slope, Δ val) = {rho:+.2f} (p = {p:.2g}, {len(points)} points).",
        "",
        "| a | b | slope a/b | bound a·π/2 | Δ val vs base (points) | seeds |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {p.a:g} | {p.b:g} | {p.slope:.2f} | {p.bound:.2f} | {p.delta_val:+.2f} | {p.n} |" for p in points
    ]
    return [*lines, ""]


def plot(grids: dict[str, list[GridPoint]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for bench, points in grids.items():
        shown = [max(p.delta_val, FLOOR) for p in points]
        (line,) = ax.plot([p.slope for p in points], shown, "o", alpha=0.8, label=bench)
        slopes = sorted({round(p.slope, 6) for p in points})  # the line joins the mean at each slope
        at_slope = [
            mean(y for p, y in zip(points, shown, strict=True) if round(p.slope, 6) == k) for k in slopes
        ]
        ax.plot(slopes, at_slope, "-", color=line.get_color(), alpha=0.6)
        # a collapsed point would squash every other one: drawn at the floor, its value written
        for p in points:
            if p.delta_val < FLOOR:
                ax.plot(p.slope, FLOOR, "v", color=line.get_color(), ms=9)
                ax.annotate(
                    f"{p.delta_val:+.1f}", (p.slope, FLOOR), textcoords="offset points", xytext=(-32, 4)
                )
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_ylim(FLOOR - 0.5, None)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("slope at zero a/b (log scale): SGD's step on small weights × (a/b)²")
    ax.set_ylabel("validation accuracy − base (points)")
    ax.set_title("The paper's (a, b) grid, every point: mean over the tuning seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str]) -> int:
    studies = Path(argv[0]) if argv else Path("studies")
    out = Path(argv[1]) if len(argv) > 1 else Path("docs/results/paper-grid-slope.md")
    try:
        grids = {bench: grid_points(studies / name) for bench, name in GRIDS.items()
                 if (studies / name).is_dir()}  # fmt: skip
    except ValueError as err:  # a grid without its base: nothing to compare with, nothing written
        print(err, file=sys.stderr)
        return 2
    grids = {bench: points for bench, points in grids.items() if len(points) >= 3}
    if not grids:
        print(
            f"{studies} holds no grid-paper-* folder with 3 finished points; run a grid first",
            file=sys.stderr,
        )
        return 2
    figure = out.with_suffix(".png")
    lines = [
        "# The paper's (a, b) grids: ranked by the slope a/b?",
        "",
        f"Computed by `python scripts/grid_slope.py {studies} {out}` from the committed stage-2 runs. "
        "Δ val: a point's mean validation accuracy (final epoch, the tuning seeds) minus base's, the "
        "quantity stage 2 chooses by. Near zero the paper's WC is `w = (a/b)·v` (SGD's step on small "
        "weights × (a/b)²); its bound `a·π/2` acts only on large weights. Points with one slope and "
        "different bounds (e.g. (0.5, 0.5), (0.7, 0.7), (1, 1)) show what the bound does on its own.",
        "",
        f"![validation difference against slope]({figure.name})",
        "",
    ]
    for bench, points in grids.items():
        lines += section(bench, GRIDS[bench], points)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    plot(grids, figure)
    print(out.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
