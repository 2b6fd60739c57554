"""scripts/paper_results.py: the paper's-method table is computed from run folders, paired by seed."""

import importlib.util
import json
from pathlib import Path

from weight_compander.harness.compare.runner import run_comparison
from weight_compander.harness.config.comparison import comparison_from_dict

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "paper_results.py"
spec = importlib.util.spec_from_file_location("paper_results", SCRIPT)
paper_results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(paper_results)


def test_table_pairs_by_seed_and_marks_partial_cells(tmp_path):
    comparison = comparison_from_dict({
        "name": "paper-digits", "seeds": [0, 1], "baseline": "base",
        "defaults": {"dataset": "digits", "model": "mlp", "epochs": 1, "batch_size": 64,
                     "train_subset": 300, "val_size": 100, "threads": 1},
        "variants": {
            "base": {}, "base-lr-matched": {"lr": 0.1},
            "paper-wc": {"reparam": "wc", "wc_kind": "arctan", "wc_scale": 1.0,
                         "wc_hyper": {"a": 1.0, "b": 0.6}, "decay_on": "effective"},
        },
    })
    run_comparison(comparison, tmp_path / "paper-digits", report=False, progress=False, log=lambda *a: None)
    out = tmp_path / "table.md"
    assert paper_results.main([str(tmp_path), str(out)]) == 0
    text = out.read_text()
    finals = {p.parts[-3]: {} for p in (tmp_path / "paper-digits").glob("*/*/final.json")}
    for p in (tmp_path / "paper-digits").glob("*/*/final.json"):
        finals[p.parts[-3]][p.parts[-2]] = json.loads(p.read_text())["test_acc"]
    diff = sum(finals["paper-wc"][s] - finals["base"][s] for s in ("seed0", "seed1")) / 2
    row = next(line for line in text.splitlines() if line.startswith("| D | final |"))
    assert f"*{100 * diff:+.2f} [" in row and "n=2, partial*" in row  # 2 of 5 seeds: no verdict
    assert "| P-resnet | not run yet |" in text
    # the control table pairs paper-WC with the lr-matched base directly
    versus_lr = sum(finals["paper-wc"][s] - finals["base-lr-matched"][s] for s in ("seed0", "seed1")) / 2
    controls = text.split("## Is it the bound, or the step size?")[1]
    row = next(line for line in controls.splitlines() if line.startswith("| D | final |"))
    linear, lr_matched = row.split(" | ")[2:4]
    assert linear == "—"  # no linear-control runs: a dash, not a number
    assert lr_matched.startswith(f"*{100 * versus_lr:+.2f} [") and "n=2, partial*" in lr_matched
    assert paper_results.main([str(tmp_path / "missing")]) == 2


def test_readme_table_is_the_one_the_committed_runs_give(tmp_path):
    """The README's paper's-method rows are copied from the script's output: they must not drift."""
    repo = SCRIPT.parents[1]
    out = tmp_path / "paper-method.md"
    assert paper_results.main([str(repo / "studies"), str(out)]) == 0
    computed = {}
    for line in out.read_text().split("## Is it")[0].splitlines():
        parts = [p.strip() for p in line.strip("|").split("|")]
        if len(parts) > 2 and parts[1] == "final":
            computed[parts[0]] = [c.split(" n=")[0] for c in parts[2:]]
    readme = (repo / "README.md").read_text().split("## The paper's method")[1].split("\n## ")[0]
    rows = [line for line in readme.splitlines() if line.startswith("| ") and "(" in line.split("|")[1]]
    assert rows, "README has no paper's-method rows"
    for line in rows:
        parts = [p.strip() for p in line.strip("|").split("|")]
        bench = parts[0].split(" (")[0]
        assert parts[1:] == computed[bench], bench
