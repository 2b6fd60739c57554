"""Copy the study's reports, figures and summaries from runs/study/ to docs/results/.

    python scripts/publish_results.py [RUNS_DIR] [DOCS_DIR]

Each comparison folder's report.md, figures/ and summary.json (with its wall and CPU time) go
to docs/results/<name>/; docs/results/costs.md tabulates the CPU time of every comparison;
docs/results/headline.md and headline.png put the five benchmarks side by side (the README's
table and figure), computed from the summaries, never typed in.
"""

import json
import shutil
import sys
from pathlib import Path
from typing import Any

# The README's headline: the five benchmarks, and the variants a reader compares with base.
BENCHMARKS = {"f-full": "F-full", "f-small": "F-small", "f-resnet": "F-resnet", "m1d": "M1D", "digits": "D"}
HEADLINE = ["wc-fixed", "wc-learn", "wc-learn-val", "wc-learn-val-ls", "weight-norm", "weight-std"]
# Issue 6: learned hyperparameters against the best fixed setting, paired, on these benchmarks.
LEARNED = ["wc-learn", "wc-learn-val", "wc-learn-val-slow", "wc-learn-val-ls", "wc-learn-val-ls-g2",
           "wc-learn-val-limit", "wc-learn-val-gain"]  # fmt: skip


def _interval(d: dict[str, Any] | None) -> str:
    """A paired difference (report.paired_difference's dict) as "+m [lo, hi]" in points."""
    if not d or d.get("ci") is None:
        return "—"
    lo, hi = (100 * x for x in d["ci"])
    return f"{100 * d['mean']:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def _paired(summary: dict[str, Any], variant: str, reference: str) -> dict[str, Any] | None:
    """Paired difference of `variant` to `reference` over their common seeds (None if one is missing)."""
    from weight_compander.harness.report import paired_difference

    runs = summary["variants"]
    if variant not in runs or reference not in runs:
        return None
    return paired_difference(*(dict(zip(runs[v]["seeds"], runs[v]["test_acc"], strict=True))
                               for v in (variant, reference)))  # fmt: skip


def _acc(summary: dict[str, Any], variant: str) -> str:
    v = summary["variants"].get(variant)
    if not v:
        return "—"
    std = f" ± {100 * v['std']:.2f}" if v.get("std") is not None else ""
    return f"{100 * v['mean']:.2f}{std}"


def headline_table(summaries: dict[str, dict[str, Any]]) -> str:
    """Markdown: base accuracy, the paired Δ of each headline variant, and wc-only vs none."""
    head = ["benchmark", "seeds", "base, test acc %", *(f"{v}, Δ pp [95% CI]" for v in HEADLINE),
            "wc-only − none, Δ pp [95% CI]"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for key, label in BENCHMARKS.items():
        s = summaries.get(key)
        if s is None:
            lines.append(f"| {label} | not run | " + " | ".join("—" for _ in head[2:]) + " |")
            continue
        seeds = min((v["n"] for v in s["variants"].values()), default=0)
        deltas = [_interval(s["variants"].get(v, {}).get("vs_baseline")) for v in HEADLINE]
        cells = [label, str(seeds), _acc(s, "base"), *deltas, _interval(_paired(s, "wc-only", "none"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def learned_table(summaries: dict[str, dict[str, Any]], fixed: str = "wc-fixed") -> str:
    """Markdown: each learned variant's paired Δ to the fixed setting, per benchmark."""
    keys = [k for k in ("f-small", "m1d", "f-full") if k in summaries]
    head = ["variant", *(f"{BENCHMARKS[k]}: Δ vs {fixed}, pp [95% CI]" for k in keys)]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for variant in LEARNED:
        pairs = [_paired(summaries[k], variant, fixed) for k in keys]
        cells = [_interval(d) + (f" (n={d['n']})" if d and d["ci"] else "") for d in pairs]
        if any(c != "—" for c in cells):
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def headline_figure(summaries: dict[str, dict[str, Any]], path: Path) -> None:
    """One panel per benchmark: paired Δ to base with its 95% interval, per headline variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in BENCHMARKS if k in summaries]
    fig, axes = plt.subplots(1, len(keys), figsize=(2.6 * len(keys) + 1.5, 3.4), sharey=True, squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for i, variant in enumerate(HEADLINE):
            d = summaries[key]["variants"].get(variant, {}).get("vs_baseline")
            if d and d.get("ci") is not None:
                lo, hi = (100 * x for x in d["ci"])
                ax.errorbar(100 * d["mean"], i, xerr=[[100 * d["mean"] - lo], [hi - 100 * d["mean"]]],
                            fmt="o", color="C0" if variant.startswith("wc") else "C2", capsize=3)  # fmt: skip
        ax.axvline(0, color="grey", lw=1, ls="--")
        ax.set_title(f"{BENCHMARKS[key]} (base {_acc(summaries[key], 'base').split(' ')[0]} %)", fontsize=9)
        ax.set_xlabel("Δ test acc vs base, pp")
    axes[0][0].set_yticks(range(len(HEADLINE)), HEADLINE)
    axes[0][0].invert_yaxis()
    fig.suptitle("Paired difference to the tuned baseline (mean, 95% CI over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/study")
    docs = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/results")
    docs.mkdir(parents=True, exist_ok=True)
    rows = []
    for summary_path in sorted(runs.glob("*/summary.json")):
        folder = summary_path.parent
        target = docs / folder.name
        target.mkdir(parents=True, exist_ok=True)
        for name in ("summary.json", "compare.json", "report.md"):
            if (folder / name).exists():
                shutil.copy2(folder / name, target / name)
        if (folder / "figures").is_dir():
            shutil.copytree(folder / "figures", target / "figures", dirs_exist_ok=True)
        s = json.loads(summary_path.read_text())
        runs_done = sum(len(v.get("test_acc", [])) for v in s["variants"].values())
        rows.append((folder.name, runs_done, len(s.get("missing", [])), s["runs_cpu_time"], s["wall_time"]))
    lines = [
        "# CPU time of each comparison",
        "",
        "Measured by `weight-compander compare` on 2 CPU cores (`--jobs 2`); `runs_cpu_time` is the",
        "sum of the runs' own CPU time, wall time adds over all invocations.",
        "",
        "| comparison | runs finished | runs missing | CPU time (h) | wall time (h) |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {n} | {d} | {m} | {c / 3600:.2f} | {w / 3600:.2f} |" for n, d, m, c, w in rows]
    (docs / "costs.md").write_text("\n".join(lines) + "\n")
    # from docs/, not runs/: benchmarks published earlier stay in the headline when only some
    # comparisons are re-run and re-published
    summaries = {k: json.loads((docs / k / "summary.json").read_text())
                 for k in BENCHMARKS if (docs / k / "summary.json").exists()}  # fmt: skip
    if summaries:
        (docs / "headline.md").write_text(headline_table(summaries))
        (docs / "learned.md").write_text(learned_table(summaries))
        headline_figure(summaries, docs / "headline.png")
    print(f"published {len(rows)} comparisons to {docs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
