"""The report's PNG figures: accuracy per variant, learning curves, weight histograms and
learned compander hyperparameters.

Kept apart from the tables so that the numbers (statistics, tables) read without the plotting
code; `report.write.write_report` calls these. matplotlib is imported only when a figure
is drawn, with the Agg backend, so a report needs no display.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weight_compander.defaults import NEAR_ZERO  # |w| < NEAR_ZERO * s is "near zero"
from weight_compander.harness.run.restore import load_model
from weight_compander.harness.store import atomic

if TYPE_CHECKING:
    from weight_compander.harness.store.scan import Run


# --------------------------------------------------------------------------- figures


def pyplot() -> Any:
    """pyplot on the Agg backend: figures are written to files, on machines without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path) -> None:
    """Write a PNG atomically: a report never shows a half-written figure."""
    with atomic.open_atomic(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)


def accuracy_figure(order: Sequence[str], summary: dict, base: str | None, path: Path) -> None:
    """Final test accuracy per variant: mean ± std, every seed as a dot, the baseline as a line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(order) + 2), 4))
    for i, name in enumerate(order):
        s = summary["variants"][name]
        accs = [100 * a for a in s["test_acc"]]
        ax.scatter([i + 0.12] * len(accs), accs, s=12, color="grey", zorder=2)
        ax.errorbar(
            i,
            100 * s["mean"],
            yerr=100 * (s["std"] or 0.0),
            fmt="o",
            capsize=5,
            color="C3" if name == base else "C0",
            zorder=3,
        )
    if base in summary["variants"]:
        ax.axhline(100 * summary["variants"][base]["mean"], color="C3", linestyle=":", lw=1)
    ax.set_xticks(range(len(order)), order, rotation=20)
    ax.set_ylabel("final test accuracy % (mean ± std; dots: seeds)")
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)


def mean_curve(runs: Sequence[Run], key: str) -> tuple[list[int], list[float]]:
    per_epoch: dict[int, list[float]] = {}
    for r in runs:
        for row in r.metrics:
            if isinstance(row.get(key), int | float):
                per_epoch.setdefault(int(row["epoch"]), []).append(float(row[key]))
    epochs = sorted(per_epoch)
    return epochs, [statistics.fmean(per_epoch[e]) for e in epochs]


def curves_figure(order: Sequence[str], runs: Sequence[Run], path: Path) -> None:
    """Validation accuracy and training loss per epoch, averaged over each variant's seeds."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for i, name in enumerate(order):
        rs = [r for r in runs if r.variant == name]
        ep, val = mean_curve(rs, "val_acc")
        left.plot(ep, [100 * v for v in val], marker=".", color=f"C{i}", label=name)
        right.plot(*mean_curve(rs, "train_loss"), marker=".", color=f"C{i}", label=name)
    left.set_ylabel("validation accuracy % (mean over seeds)")
    right.set_ylabel("training loss (mean over seeds)")
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)


def _start_values(config: dict[str, Any]) -> dict[str, float]:
    """The hyperparameters a WC run started from: its wc_hyper, else the kind's defaults."""
    import weight_compander as wc

    try:
        kind = wc.get_kind(config.get("wc_kind", "tanh"))
    except (KeyError, ValueError):  # a kind registered only in the process that trained
        return dict(config.get("wc_hyper") or {})
    return {
        h: float((config.get("wc_hyper") or {}).get(h, spec.default))
        for h, spec in kind.hyperparameters.items()
    }


def hyper_series(runs: Sequence[Run]) -> dict[str, dict[tuple[str, str], tuple[list, list]]]:
    """variant -> (tensor, hyper) -> (epochs, mean over seeds) for runs that learned them;
    epoch 0 is the value the run started from."""
    out: dict[str, dict[tuple[str, str], tuple[list, list]]] = {}
    for name in sorted({r.variant for r in runs}):
        rs = [r for r in runs if r.variant == name and r.config.get("wc_learnable")]
        values: dict[tuple[str, str], dict[int, list[float]]] = {}
        for r in rs:
            start = _start_values(r.config)
            for row in r.metrics:
                for tensor, hypers in (row.get("wc") or {}).items():
                    for hyper, value in hypers.items():
                        per_epoch = values.setdefault((tensor, hyper), {})
                        if hyper in start and int(row["epoch"]) == 1:
                            per_epoch.setdefault(0, []).append(start[hyper])
                        per_epoch.setdefault(int(row["epoch"]), []).append(float(value))
        if values:
            out[name] = {
                k: (sorted(v), [statistics.fmean(v[e]) for e in sorted(v)]) for k, v in values.items()
            }
    return out


def hyper_figure(series: dict, path: Path) -> list[str]:
    """Learned hyperparameters over the epochs (from `hyper_series`); Markdown rows.

    Small multiples: one row per hyperparameter, one column per variant, one colour per tensor,
    on a log axis shared along each row, so variants compare at a glance however many there are
    and a run-away (×10, ×20) reads as such.
    """
    hypers = sorted({h for s in series.values() for (_, h) in s})
    tensors = sorted({t for s in series.values() for (t, _) in s})
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter

    plain_numbers = FuncFormatter(lambda value, _: f"{value:g}")  # 20, not 2×10¹
    sparse_numbers = FuncFormatter(lambda value, _: f"{value:g}" if f"{value:g}"[0] in "235" else "")
    fig, axes = plt.subplots(
        len(hypers), len(series), figsize=(2.6 * len(series) + 1.2, 2.4 * len(hypers) + 0.6),
        squeeze=False, sharey="row", sharex=True,
    )  # fmt: skip
    rows = [
        "| variant | hyperparameter | start | after the last epoch: mean (min–max over tensors) |",
        "|---|---|---:|---:|",
    ]
    for col, (variant, s) in enumerate(series.items()):
        for row, hyper in enumerate(hypers):
            ax = axes[row][col]
            lines = {t: v for (t, h), v in s.items() if h == hyper}
            for tensor, (ep, vals) in lines.items():
                ax.plot(ep, vals, color=f"C{tensors.index(tensor) % 10}", lw=1.2, label=tensor)
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(plain_numbers)
            ax.yaxis.set_minor_formatter(sparse_numbers)
            ax.grid(True, which="both", alpha=0.25)
            if row == 0:
                ax.set_title(variant, fontsize=9)
            if col == 0:
                ax.set_ylabel(f"{hyper} (log)")
            if row == len(hypers) - 1:
                ax.set_xlabel("epoch (0: start)")
            if lines:
                starts = sorted({round(v[0], 6) for ep, v in lines.values() if ep[0] == 0})
                lasts = [v[-1] for _, v in lines.values()]
                rows.append(
                    f"| {variant} | {hyper} | {', '.join(f'{x:g}' for x in starts)} | "
                    f"{statistics.fmean(lasts):.3f} ({min(lasts):.3f}–{max(lasts):.3f}) |"
                )
    handles, labels = axes[0][0].get_legend_handles_labels()
    if len(tensors) <= 12:  # one legend for all panels while it stays short
        legend = dict(zip(labels, handles, strict=True))
        fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=min(6, len(legend)), fontsize=7)
    fig.suptitle("learned compander hyperparameters per tensor (mean over seeds)", fontsize=10)
    fig.tight_layout(rect=(0, 0.08 if len(tensors) <= 12 else 0, 1, 1))
    save(fig, path)
    plt.close(fig)
    return rows


# --------------------------------------------------------------------------- weights


def _plain_names(model: Any) -> list[str]:
    """Qualified names of the matrix/conv weights (dim >= 2) of a model without WC."""
    import torch

    names = []
    for mname, module in model.named_modules():
        w = getattr(module, "weight", None)
        if isinstance(w, torch.Tensor) and w.dim() >= 2 and "parametrizations" not in mname:
            names.append(f"{mname}.weight" if mname else "weight")
    return names


def scaled_weights(run_dir: Path, names: Sequence[str] | None = None) -> tuple[dict, bool]:
    """name -> (effective, raw) weights of a run as flat numpy arrays in scale units; is-WC flag.

    WC runs: divided by the compander scale s of each tensor (hyperparameters are in units
    of s, so a limit L shows as ±L). Runs without WC: the plain weight tensors of the given
    names, each divided by its own std (so layers of different fan-in are comparable);
    effective and raw are then the same tensor.
    """
    import weight_compander as wc

    model = load_model(run_dir)
    pairs = wc.weights(model)
    if pairs:
        scales = {row["name"]: float(row["scale"]) for row in wc.stats(model)}
        return {
            n: ((w / scales[n]).flatten().numpy(), (v / scales[n]).flatten().numpy())
            for n, (w, v) in pairs.items()
        }, True
    out = {}
    for name in names if names is not None else _plain_names(model):
        module, _, attr = name.rpartition(".")
        try:
            t = getattr(model.get_submodule(module), attr).detach().float().flatten()
        except AttributeError:
            continue  # a different model: this tensor does not exist here
        t = (t / t.std()).numpy()
        out[name] = (t, t)
    return out, False


def _has_weights(run: Run) -> bool:
    return any(run.path.glob("checkpoint*.pt"))  # the weights live in the checkpoint


def no_weights_note(runs: Sequence[Run], order: Sequence[str]) -> list[str]:
    """Markdown lines naming the variants the weight histograms leave out because none of their
    runs has a checkpoint (a study's committed run folders keep none); [] if every one has."""
    missing = [v for v in order if not any(_has_weights(r) for r in runs if r.variant == v)]
    if not missing:
        return []
    return [f"Weight histograms: no checkpoint for {', '.join(missing)} (committed study runs keep "
            "only their small files; `compare` re-creates a checkpoint only by training the run "
            "again), so the histograms leave them out.", ""]


def weight_figure(runs: Sequence[Run], order: Sequence[str], layer: str | None, path: Path) -> list[str]:
    """Histograms of effective and raw weights per variant (one seed each); Markdown rows."""
    import numpy as np

    first = {}  # one run per variant; the lowest seed, so variants show the same seed
    rank = {v: i for i, v in enumerate(order)}
    for r in sorted(runs, key=lambda r: (rank.get(r.variant, len(rank)), r.seed)):
        if _has_weights(r):
            first.setdefault(r.variant, r)
    if not first:
        return []
    loaded = {v: scaled_weights(r.path) for v, r in first.items() if r.config.get("reparam") == "wc"}
    wc_names = next((list(ws) for ws, is_wc in loaded.values() if is_wc), None)
    for v, r in first.items():
        if v not in loaded or not loaded[v][1]:
            loaded[v] = scaled_weights(r.path, wc_names)
    names = wc_names if wc_names is not None else list(next(iter(loaded.values()))[0])
    if not names:
        return []
    layer = layer or names[0]
    if layer not in names:
        raise ValueError(
            f"--layer {layer!r} is not a weight of these runs; choose one of: " + ", ".join(names)
        )
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    data = {}
    for v in first:
        ws, is_wc = loaded[v]
        pooled = [ws[n] for n in names if n in ws]
        if not pooled:
            continue
        data[v] = (
            is_wc,
            ws.get(layer),
            (np.concatenate([p[0] for p in pooled]), np.concatenate([p[1] for p in pooled])),
        )
    every = np.concatenate([d[2][k] for d in data.values() for k in (0, 1)])
    edge = float(np.percentile(np.abs(every), 99.9)) * 1.05
    n_layer = max((d[1][0].size for d in data.values() if d[1] is not None), default=0)
    bins = [np.linspace(-edge, edge, n + 1) for n in (int(np.clip(n_layer**0.5, 15, 80)), 80)]
    rows = [
        "| variant | WC | seed | near zero, effective | max abs, effective | near zero, raw | max abs, raw |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for v, (is_wc, one, pooled) in data.items():
        style = {
            "histtype": "step",
            "density": True,
            "linewidth": 1.4,
            "label": f"{v} ({'WC' if is_wc else 'no WC'})",
            "linestyle": "-" if is_wc else "--",
        }
        for col in (0, 1):
            if one is not None:
                axes[0, col].hist(np.clip(one[col], -edge, edge), bins=bins[0], **style)
            axes[1, col].hist(np.clip(pooled[col], -edge, edge), bins=bins[1], **style)
        eff, raw = pooled
        rows.append(
            f"| {v} | {'yes' if is_wc else 'no'} | {first[v].seed} | "
            f"{np.mean(np.abs(eff) < NEAR_ZERO):.3f} | {np.abs(eff).max():.2f} | "
            f"{np.mean(np.abs(raw) < NEAR_ZERO):.3f} | {np.abs(raw).max():.2f} |"
        )
    unit = "weight / scale   (WC: compander scale s; no WC: the tensor's std)"
    for row, where in enumerate((f"layer {layer}", f"all {len(names)} layers pooled")):
        for col, what in enumerate(("effective weight w", "raw weight v (WC) / weight (no WC)")):
            ax = axes[row, col]
            ax.set_title(f"{where}: {what}", fontsize=10)
            ax.set_xlabel(unit, fontsize=8)
            ax.set_ylabel("density")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)
    return rows
