"""scripts/grid_slope.py: the paper's grid against slope a/b, computed from the grid's run folders."""

import importlib
import json
import re
import sys
from pathlib import Path

from scipy.stats import spearmanr

from weight_compander.harness.compare.runner import run_comparison
from weight_compander.harness.config.comparison import comparison_from_dict

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))  # grid_slope imports paper_results, as when run as a script
grid_slope = importlib.import_module("grid_slope")

POINTS = {"arctan-a1-b0.5": (1.0, 0.5), "arctan-a0.5-b1": (0.5, 1.0), "arctan-a0.7-b0.7": (0.7, 0.7)}


def test_table_and_figure_come_from_the_grid_runs(tmp_path):
    arctan = {"reparam": "wc", "wc_kind": "arctan", "wc_scale": 1.0, "decay_on": "effective"}
    comparison = comparison_from_dict(
        {
            "name": "grid-paper-digits",
            "seeds": [100],
            "baseline": "base",
            "defaults": {
                "dataset": "digits",
                "model": "mlp",
                "epochs": 1,
                "batch_size": 64,
                "train_subset": 300,
                "val_size": 100,
                "threads": 1,
            },
            "variants": {
                "base": {},
                **{name: {**arctan, "wc_hyper": {"a": a, "b": b}} for name, (a, b) in POINTS.items()},
            },
        }
    )
    run_comparison(
        comparison, tmp_path / "grid-paper-digits", report=False, progress=False, log=lambda *a: None
    )
    out = tmp_path / "slope.md"
    assert grid_slope.main([str(tmp_path), str(out)]) == 0

    grid = tmp_path / "grid-paper-digits"
    finals = {name: grid / name / "seed100" / "final.json" for name in ["base", *POINTS]}
    val = {name: 100 * json.loads(path.read_text())["val_acc"] for name, path in finals.items()}
    text = out.read_text()
    assert "## D (`grid-paper-digits`)" in text and "P-resnet" not in text  # only grids that exist
    for name, (a, b) in POINTS.items():
        assert f"| {a:g} | {b:g} | {a / b:.2f} | " in text
        assert f"| {val[name] - val['base']:+.2f} | 1 |" in text
    rho = spearmanr([a / b for a, b in POINTS.values()], [val[n] - val["base"] for n in POINTS]).statistic
    assert f"ρ(slope, Δ val) = {rho:+.2f}" in text
    assert (tmp_path / "slope.png").stat().st_size > 10_000


def test_refuses_a_folder_without_grids(tmp_path, capsys):
    assert grid_slope.main([str(tmp_path)]) == 2
    assert "no grid-paper-* folder" in capsys.readouterr().err


def test_refuses_a_grid_without_base_and_writes_nothing(tmp_path, capsys):
    points = {name: {"reparam": "wc", "wc_kind": "arctan", "wc_scale": 1.0, "wc_hyper": {"a": a, "b": b}}
              for name, (a, b) in POINTS.items()}  # fmt: skip
    comparison = comparison_from_dict({
        "name": "grid-paper-digits", "seeds": [100], "baseline": "arctan-a1-b0.5",
        "defaults": {"dataset": "digits", "model": "mlp", "epochs": 1, "batch_size": 64,
                     "train_subset": 300, "val_size": 100, "threads": 1},
        "variants": points,
    })  # fmt: skip
    grid = tmp_path / "grid-paper-digits"
    run_comparison(comparison, grid, report=False, progress=False, log=lambda *a: None)
    out = tmp_path / "slope.md"
    assert grid_slope.main([str(tmp_path), str(out)]) == 2
    assert "has no finished base run" in capsys.readouterr().err
    assert not out.exists() and not out.with_suffix(".png").exists()


def test_readme_quotes_the_correlations_the_committed_grids_give(tmp_path):
    repo = SCRIPTS.parent
    out = tmp_path / "slope.md"
    assert grid_slope.main([str(repo / "studies"), str(out)]) == 0
    heading = r"## (\S+) \(`grid-paper-[a-z0-9]+`\)\n\nSpearman's ρ\(slope, Δ val\) = ([+-]\d\.\d\d)"
    computed = dict(re.findall(heading, out.read_text()))
    readme = (repo / "README.md").read_text()
    sentence = readme.split("**The grids choose a step size.**")[1].split("grid_slope.py`)")[0]
    quoted = dict(re.findall(r"(P-resnet|F-small|F-mlp|M1D|D) ([+-]\d\.\d\d)", sentence))
    assert quoted and quoted == computed
