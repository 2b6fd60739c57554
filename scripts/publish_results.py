"""Copy the study's reports, figures and summaries from runs/study/ to docs/results/.

    python scripts/publish_results.py [RUNS_DIR] [DOCS_DIR]

Each comparison folder's report.md, figures/ and summary.json (with its wall and CPU time) go
to docs/results/<name>/; docs/results/costs.md tabulates the CPU time of every comparison;
docs/results/headline.md and headline.png put the five benchmarks side by side (the README's
table and figure), computed from the summaries, never typed in; docs/results/convergence.md,
.json and .png show each benchmark's base validation curve and issue 10's convergence rule.
"""

import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

# The README's headline: the five benchmarks, and the variants a reader compares with base.
BENCHMARKS = {"f-full": "F-full", "f-small": "F-small", "f-resnet": "F-resnet", "m1d": "M1D", "digits": "D",
              "f-nonorm": "F-nonorm", "f-mlp": "F-mlp", "f-mlp-adamw": "F-mlp-adamw",
              "m1d-adamw": "M1D-adamw"}  # fmt: skip
# What sets each benchmark apart (issue 10): normalization after the convs, and the optimizer.
REGIME = {"f-full": "BN conv, SGD", "f-small": "BN conv, SGD", "f-resnet": "BN resnet, SGD",
          "m1d": "BN conv1d, SGD", "digits": "MLP, SGD", "f-nonorm": "no-norm conv, SGD",
          "f-mlp": "MLP, SGD", "f-mlp-adamw": "MLP, AdamW", "m1d-adamw": "BN conv1d, AdamW"}  # fmt: skip
# Issue 10's convergence rule: base's validation accuracy gains less than this over the last
# fifth of the epochs.
CONVERGED_GAIN_PP = 0.2
# `none` (no regularization at all) shows what base's standard regularization is worth.
HEADLINE = ["wc-fixed", "wc-learn", "wc-learn-val", "wc-learn-val-ls", "weight-norm", "weight-std", "none"]
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
    from weight_compander.harness.report.stats import paired_difference

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
        cells = [f"{label} ({REGIME[key]})", str(seeds), _acc(s, "base"), *deltas,
                 _interval(_paired(s, "wc-only", "none"))]  # fmt: skip
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


def last_fifth_start(epochs: int) -> int:
    """The epoch E − ⌈E/5⌉ from which the convergence rule measures the gain (1-based)."""
    return epochs - math.ceil(epochs / 5)


def base_validation_curve(folder: Path, baseline: str = "base") -> dict[str, Any] | None:
    """Mean validation accuracy per epoch of the baseline's seeds, and the convergence rule on it.

    The rule (issue 10): the gain from epoch E − ⌈E/5⌉ to the last epoch E, in points; a run
    counts as converged when it trained ≥ 15 epochs and that gain is below CONVERGED_GAIN_PP.
    """
    from weight_compander.harness.store.scan import read_metrics

    curves = [[row["val_acc"] for row in read_metrics(path)]
              for path in sorted((folder / baseline).glob("seed*/metrics.jsonl"))]  # fmt: skip
    curves = [c for c in curves if c]
    if not curves or len({len(c) for c in curves}) != 1:
        return None  # no finished baseline, or seeds at different lengths (an unfinished run)
    epochs = len(curves[0])
    mean = [sum(c[e] for c in curves) / len(curves) for e in range(epochs)]
    start = last_fifth_start(epochs)
    gain = 100 * (mean[-1] - mean[start - 1]) if start >= 1 else None
    converged = gain is not None and epochs >= 15 and gain < CONVERGED_GAIN_PP
    return {"seeds": len(curves), "epochs": epochs, "val_acc": mean, "gain_last_fifth_pp": gain,
            "converged": converged}  # fmt: skip


def convergence_table(curves: dict[str, dict[str, Any]]) -> str:
    """Markdown: per benchmark, the base validation accuracy at the start and end of the last fifth."""
    lines = ["| benchmark | epochs | seeds | base val acc %, epoch E−⌈E/5⌉ → E | gain, pp | converged "
             f"(≥ 15 epochs, gain < {CONVERGED_GAIN_PP}) |", "|---|---:|---:|---|---:|---|"]  # fmt: skip
    for key, c in curves.items():
        start = last_fifth_start(c["epochs"])
        acc = c["val_acc"]
        span = f"{100 * acc[start - 1]:.2f} → {100 * acc[-1]:.2f}" if start >= 1 else "—"
        gain = f"{c['gain_last_fifth_pp']:+.2f}" if c["gain_last_fifth_pp"] is not None else "—"
        lines.append(f"| {BENCHMARKS.get(key, key)} | {c['epochs']} | {c['seeds']} | {span} | {gain} | "
                     f"{'yes' if c['converged'] else 'no'} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def convergence_figure(curves: dict[str, dict[str, Any]], path: Path) -> None:
    """Base validation accuracy per epoch, one panel per benchmark, the last fifth shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(2.8 * len(curves) + 0.5, 2.9), squeeze=False)
    for ax, (key, c) in zip(axes[0], curves.items(), strict=True):
        epochs = range(1, c["epochs"] + 1)
        ax.plot(epochs, [100 * a for a in c["val_acc"]], color="C0")
        ax.axvspan(last_fifth_start(c["epochs"]), c["epochs"], color="grey", alpha=0.2)
        gain = c["gain_last_fifth_pp"]
        ax.set_title(f"{BENCHMARKS.get(key, key)}: +{gain:.2f} pp" if gain is not None else key, fontsize=9)
        ax.set_xlabel("epoch")
        lo = min(c["val_acc"][len(c["val_acc"]) // 3 :])  # zoom on the tail, where the rule looks
        ax.set_ylim(100 * lo - 1, 100 * max(c["val_acc"]) + 0.5)
    axes[0][0].set_ylabel("base val acc, % (mean over seeds)")
    fig.suptitle("Convergence of the baseline: gain over the last fifth of the epochs (shaded)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def publish_convergence(runs: Path, docs: Path) -> None:
    """Add the benchmarks found in `runs` to docs/results/convergence.json; redraw table and figure."""
    store = docs / "convergence.json"
    curves = json.loads(store.read_text(encoding="utf-8")) if store.exists() else {}
    for key in BENCHMARKS:
        curve = base_validation_curve(runs / key) if (runs / key).is_dir() else None
        if curve is not None:
            curves[key] = curve
    if curves:
        curves = {k: curves[k] for k in BENCHMARKS if k in curves}
        store.write_text(json.dumps(curves, indent=1) + "\n", encoding="utf-8")
        (docs / "convergence.md").write_text(convergence_table(curves), encoding="utf-8")
        convergence_figure(curves, docs / "convergence.png")


def headline_figure(summaries: dict[str, dict[str, Any]], path: Path) -> None:
    """One panel per benchmark: paired Δ to base with its 95% interval, per headline variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in BENCHMARKS if k in summaries]
    fig, axes = plt.subplots(1, len(keys), figsize=(2.6 * len(keys) + 1.5, 3.4), sharey=True, squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for i, variant in enumerate(HEADLINE):
            color = "C0" if variant.startswith("wc") else "grey" if variant == "none" else "C2"
            d = summaries[key]["variants"].get(variant, {}).get("vs_baseline")
            if d and d.get("ci") is not None:
                lo, hi = (100 * x for x in d["ci"])
                ax.errorbar(100 * d["mean"], i, xerr=[[100 * d["mean"] - lo], [hi - 100 * d["mean"]]],
                            fmt="o", color=color, capsize=3)  # fmt: skip
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
    copied = 0
    for summary_path in sorted(runs.glob("*/summary.json")):
        folder = summary_path.parent
        target = docs / folder.name
        target.mkdir(parents=True, exist_ok=True)
        for name in ("summary.json", "compare.json", "report.md"):
            if (folder / name).exists():
                shutil.copy2(folder / name, target / name)
        if (folder / "figures").is_dir():
            shutil.copytree(folder / "figures", target / "figures", dirs_exist_ok=True)
        copied += 1
    # costs of every published comparison, from docs/ (not runs/): comparisons published by an
    # earlier session, whose run folders are gone, keep their row
    rows = []
    for summary_path in sorted(docs.glob("*/summary.json")):
        s = json.loads(summary_path.read_text(encoding="utf-8"))
        runs_done = sum(len(v.get("test_acc", [])) for v in s["variants"].values())
        rows.append((summary_path.parent.name, runs_done, len(s.get("missing", [])), s["runs_cpu_time"],
                     s["wall_time"]))  # fmt: skip
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
    publish_convergence(runs, docs)
    print(f"published {copied} comparisons to {docs} ({len(rows)} there in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
