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
        "variants": {"base": {}, "paper-wc": {"reparam": "wc", "wc_kind": "arctan", "wc_scale": 1.0,
                                              "wc_hyper": {"a": 1.0, "b": 0.6}, "decay_on": "effective"}},
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
    assert paper_results.main([str(tmp_path / "missing")]) == 2
