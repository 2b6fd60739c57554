"""`report`: tables with the right numbers, paired t-intervals, and the figures."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import pytest
from scipy import stats

import weight_compander as wc
from weight_compander.defaults import TANH_GAIN, TANH_LIMIT
from weight_compander.harness.cli import report
from weight_compander.harness.compare.runner import run_comparison
from weight_compander.harness.config.comparison import load_comparison
from weight_compander.harness.report.stats import paired_difference
from weight_compander.harness.report.write import write_report
from weight_compander.harness.run import restore
from weight_compander.harness.store.scan import find_runs

PNG = b"\x89PNG\r\n\x1a\n"


def row(markdown: str, variant: str) -> str:
    return next(ln for ln in markdown.splitlines() if ln.startswith(f"| {variant} |"))


def is_png(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 2000 and path.read_bytes()[:8] == PNG


# --------------------------------------------------------------- hand-built run folders

BASE = {0: 0.81, 1: 0.83, 2: 0.80, 3: 0.84, 4: 0.82}
WC = {0: 0.825, 1: 0.829, 2: 0.815, 3: 0.851}  # seed 4 missing: pairs only seeds 0-3


def fake_run(run_dir: Path, seed: int, acc: float, learnable: bool = False) -> None:
    run_dir.mkdir(parents=True)
    config = {"dataset": "digits", "model": "mlp", "seed": seed,
              "reparam": "wc" if learnable else "none", "wc_learnable": learnable}
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "final.json").write_text(json.dumps(
        {"test_acc": acc, "val_acc": acc + 0.01, "wall_time": 10.0 + seed, "cpu_time": 20.0,
         "seed": seed}))
    wc_rows = [{"fc.weight": {"gain": 2.0 + 0.1 * e, "limit": 3.0 - 0.1 * e}} for e in (1, 2)]
    (run_dir / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e, "train_loss": 1.0 / e, "val_acc": acc - 0.1 / e,
                    "wc": wc_rows[e - 1] if learnable else {}}) + "\n" for e in (1, 2)))


@pytest.fixture
def fake_runs(tmp_path) -> Path:
    root = tmp_path / "cmp"
    for seed, acc in BASE.items():
        fake_run(root / "base" / f"seed{seed}", seed, acc)
    for seed, acc in WC.items():
        fake_run(root / "wc-learn" / f"seed{seed}", seed, acc, learnable=True)
    (root / "unfinished" / "seed0").mkdir(parents=True)
    (root / "unfinished" / "seed0" / "config.json").write_text("{}")
    (root / "compare.json").write_text(json.dumps(
        {"baseline": "base", "variants": {"base": {}, "wc-learn": {}}}))
    return root


def test_paired_interval_matches_scipy(fake_runs):
    diffs = [WC[s] - BASE[s] for s in sorted(WC)]
    mean = statistics.fmean(diffs)
    lo, hi = stats.t.interval(0.95, len(diffs) - 1, loc=mean, scale=stats.sem(diffs))
    d = paired_difference(WC, BASE)
    assert d["seeds"] == [0, 1, 2, 3] and d["n"] == 4
    assert d["mean"] == pytest.approx(mean)
    assert d["ci"] == pytest.approx([lo, hi])

    text = write_report(fake_runs).read_text()
    line = row(text, "wc-learn")
    assert f"{100 * mean:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]" in line
    assert line.split("|")[2].strip() == "4"  # n seeds of this variant
    assert line.split("|")[5].strip() == "4"  # pairs with the baseline
    base_line = row(text, "base")
    base = list(BASE.values())
    assert f"{100 * statistics.fmean(base):.2f} ± {100 * statistics.stdev(base):.2f}" in base_line
    assert "(baseline)" in base_line and base_line.split("|")[2].strip() == "5"
    assert "unfinished/seed0" in text  # named, and kept out of the tables


def test_single_pair_has_no_interval_and_no_pairs_no_difference():
    assert paired_difference({0: 0.9}, {0: 0.8})["ci"] is None
    assert paired_difference({0: 0.9, 1: 0.8}, {0: 0.8, 1: 0.7})["ci"] == pytest.approx(
        [0.1, 0.1])  # identical differences: a zero-width interval, not NaN
    assert paired_difference({0: 0.9}, {1: 0.8})["n"] == 0


def test_figures_and_learned_hyperparameters_from_metrics(fake_runs):
    text = write_report(fake_runs).read_text()
    figures = fake_runs / "figures"
    assert is_png(figures / "accuracy.png") and is_png(figures / "curves.png")
    assert is_png(figures / "wc-hyper.png")  # wc-learn logged its gain and limit per epoch
    # started from the library's defaults
    assert f"| wc-learn | gain | {TANH_GAIN:g} | 2.200 (2.200–2.200) |" in text
    assert f"| wc-learn | limit | {TANH_LIMIT:g} | 2.800 (2.800–2.800) |" in text
    assert not (figures / "weights.png").exists()  # no checkpoints: no weights to show


def test_a_folder_of_comparisons_gets_a_table_and_figures_each(tmp_path):
    for name, shift in (("F-small", 0.0), ("M1D", 0.05)):
        root = tmp_path / name
        for seed, acc in BASE.items():
            fake_run(root / "base" / f"seed{seed}", seed, acc + shift)
            fake_run(root / "wc" / f"seed{seed}", seed, acc + shift + 0.01 * seed)
        (root / "compare.json").write_text(json.dumps({"name": name, "baseline": "base"}))
    text = write_report(tmp_path).read_text()
    assert "### F-small: digits / mlp" in text and "### M1D: digits / mlp" in text
    assert text.count("| base | 5 |") == 2
    assert text.count("| wc | 5 | ") == 2  # paired within its own comparison
    assert text.count("+2.00 [") == 2
    assert "**Partial**" not in text  # 5 seeds everywhere: a complete table
    for name in ("F-small", "M1D"):
        assert is_png(tmp_path / "figures" / f"{name}-accuracy.png")


def test_a_variant_below_five_seeds_makes_the_table_partial(fake_runs):
    text = write_report(fake_runs).read_text()
    assert "**Partial**: finished seeds per variant: wc-learn 4: under 5 seeds this is a progress " \
        "report, not a verdict." in text  # base has its 5
    (fake_runs / "compare.json").write_text(json.dumps(
        {"baseline": "base", "seeds": list(range(6)), "variants": {"base": {}, "wc-learn": {}}}))
    text = write_report(fake_runs).read_text()  # 5 seeds but 6 planned: partial, no verdict note
    assert "**Partial**: finished seeds per variant (of 6 planned): base 5, wc-learn 4: under 5" in text


def test_baseline_option_and_errors(fake_runs, capsys):
    text = write_report(fake_runs, baseline="wc-learn").read_text()
    assert "(baseline)" in row(text, "wc-learn") and "-" in row(text, "base").split("|")[4]
    with pytest.raises(ValueError, match="choose one of: base, wc-learn"):
        write_report(fake_runs, baseline="nope")
    parser = argparse.ArgumentParser()
    report.add_parser(parser.add_subparsers())
    ns = parser.parse_args(["report", str(fake_runs / "missing")])
    assert ns.func(ns) == 2 and "is not a folder" in capsys.readouterr().err


# --------------------------------------------------------------- real runs

TINY = """
name = "tiny"
seeds = [0, 1]
baseline = "base"
[defaults]
dataset = "digits"
model = "mlp"
train_subset = 200
val_size = 100
epochs = 2
batch_size = 50
[variants.base]
[variants.wc-fixed]
reparam = "wc"
[variants.wc-learn]
reparam = "wc"
wc_learnable = true
"""


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("real")
    (tmp / "tiny.toml").write_text(TINY)
    out = tmp / "out"
    run_comparison(load_comparison(tmp / "tiny.toml"), out, progress=False, report=False,
                   log=lambda *a: None)
    return out


def test_report_on_real_runs(real_runs, capsys):
    parser = argparse.ArgumentParser()
    report.add_parser(parser.add_subparsers())
    ns = parser.parse_args(["report", str(real_runs)])
    assert ns.func(ns) == 0
    assert str(real_runs / "report.md") in capsys.readouterr().out
    text = (real_runs / "report.md").read_text()
    for variant in ("base", "wc-fixed", "wc-learn"):
        accs = [json.loads((real_runs / variant / f"seed{s}" / "final.json").read_text())
                ["test_acc"] for s in (0, 1)]
        line = row(text, variant)
        assert f"{100 * statistics.fmean(accs):.2f} ± {100 * statistics.stdev(accs):.2f}" in line
    for name in ("accuracy", "curves", "weights", "wc-hyper"):
        assert is_png(real_runs / "figures" / f"{name}.png"), name
    # the near-zero table agrees with the library's own statistics for the pooled layers
    model = restore.load_model(real_runs / "wc-fixed" / "seed0")
    rows = wc.stats(model)
    sizes = [w.numel() for w, _ in wc.weights(model).values()]
    near = sum(r["near_zero"] * n for r, n in zip(rows, sizes, strict=True)) / sum(sizes)
    assert f"| wc-fixed | yes | 0 | {near:.3f} |" in text


def test_layer_option(real_runs):
    names = list(wc.weights(restore.load_model(real_runs / "wc-learn" / "seed0")))
    assert len(names) >= 2
    before = (real_runs / "figures" / "weights.png")
    write_report(real_runs, layer=names[-1])
    assert is_png(before)
    with pytest.raises(ValueError, match=f"choose one of: {names[0]}"):
        write_report(real_runs, layer="no.such.weight")


def test_find_runs_names_variants_by_folder(real_runs):
    runs, incomplete = find_runs(real_runs)
    assert sorted((r.variant, r.seed) for r in runs) == [
        (v, s) for v in ("base", "wc-fixed", "wc-learn") for s in (0, 1)]
    assert incomplete == []
    assert all(len(r.metrics) == 2 for r in runs)
