"""`demo`: the built-in comparison is valid and the quick version runs end to end."""

from __future__ import annotations

import argparse
import json

import pytest

from weight_compander.harness.cli import demo as demo_cli
from weight_compander.harness.compare import demo
from weight_compander.harness.config.comparison import comparison_from_dict, load_comparison


@pytest.mark.parametrize("toml", ["demo.toml", "demo-digits.toml"])
def test_demo_comparisons_are_baseline_vs_wc_on_standard_regularization(toml):
    c = load_comparison(demo.CONFIGS / toml)
    assert list(c.variants) == ["base", "wc-fixed", "wc-learn"] and c.baseline == "base"
    assert len(c.seeds) == 2
    base, fixed, learn = (c.variants[v] for v in ("base", "wc-fixed", "wc-learn"))
    assert base.reparam == "none"
    assert base.weight_decay > 0 and base.augment and base.label_smoothing > 0
    assert base.dropout > 0
    assert (fixed.reparam, fixed.wc_kind, fixed.wc_learnable) == ("wc", "tanh", False)
    assert fixed.wc_hyper == {"gain": 1.5, "limit": 2.0}
    assert (learn.reparam, learn.wc_learnable) == ("wc", True)
    # WC is added on top of the base regularization, which stays the same
    keep = [k for k in base.to_dict() if not k.startswith("wc_") and k != "reparam"]
    for other in (fixed, learn):
        assert {k: getattr(other, k) for k in keep} == {k: getattr(base, k) for k in keep}


def test_without_fashion_mnist_the_demo_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(demo, "fashion_mnist_present", lambda folder=None: False)
    data, path, note = demo.demo_config()
    assert path.name == "demo-digits.toml" and data["defaults"]["dataset"] == "digits"
    assert "sudo apt-get install dataset-fashion-mnist" in note
    monkeypatch.setattr(demo, "fashion_mnist_present", lambda folder=None: True)
    data, path, note = demo.demo_config()
    assert path.name == "demo.toml" and "Fashion-MNIST" in note


def test_quick_demo_runs_end_to_end_and_prints_the_table(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    demo_cli.add_parser(parser.add_subparsers())
    out = tmp_path / "demo"
    ns = parser.parse_args(["demo", "--quick", "--jobs", "1", "--out", str(out)])
    assert ns.func(ns) == 0
    printed = capsys.readouterr().out
    assert "scikit-learn digits" in printed
    for variant in ("base", "wc-fixed", "wc-learn"):
        final = json.loads((out / variant / "seed1" / "final.json").read_text())
        assert final["epochs"] == 1
        assert f"| {variant} | 2 | " in printed
        assert (out / variant / "seed1" / "robustness.json").exists()
    # the robustness summary of its own runs, one row per variant
    assert "### demo-digits-quick: robustness (last epoch's weights)" in printed
    assert "| variant | n | clean, acc % | input corruptions, acc % |" in printed
    assert "| wc-learn | 2 | " in printed.split("robustness (last epoch's weights)")[1]
    assert f"{out / 'report.md'}" in printed and (out / "report.md").exists()
    # and the same comparison is what `compare` resolves
    data, path, _ = demo.demo_config(quick=True)
    assert json.loads((out / "compare.json").read_text())["variants"].keys() == (
        comparison_from_dict(data, source=str(path)).variants.keys())
