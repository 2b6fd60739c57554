"""scripts/publish_results.py: the README's headline table and figure come from the summaries."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "publish_results.py"
spec = importlib.util.spec_from_file_location("publish_results", SCRIPT)
publish = importlib.util.module_from_spec(spec)
spec.loader.exec_module(publish)


def variant(accs, base=None):
    n = len(accs)
    mean = sum(accs) / n
    out = {"seeds": list(range(n)), "test_acc": accs, "mean": mean, "std": 0.001, "n": n}
    if base is not None:
        diffs = [a - b for a, b in zip(accs, base, strict=True)]
        d = sum(diffs) / n
        out["vs_baseline"] = {"n": n, "diffs": diffs, "mean": d, "ci": [d - 0.002, d + 0.002]}
    return out


def test_headline_from_summaries(tmp_path, monkeypatch):
    base = [0.90, 0.91, 0.92]
    summary = {"variants": {"base": variant(base), "wc-fixed": variant([0.91, 0.92, 0.93], base),
                            "none": variant([0.85] * 3), "wc-only": variant([0.86, 0.87, 0.85]),
                            "wc-learn": variant([0.92, 0.92, 0.95], base)}}  # fmt: skip
    (tmp_path / "runs" / "m1d").mkdir(parents=True)
    (tmp_path / "runs" / "m1d" / "summary.json").write_text(json.dumps({**summary, "runs_cpu_time": 36.0,
                                                                        "wall_time": 20.0}))  # fmt: skip
    docs = tmp_path / "docs"
    monkeypatch.setattr("sys.argv", ["publish", str(tmp_path / "runs"), str(docs)])
    assert publish.main() == 0
    table = (docs / "headline.md").read_text().splitlines()
    m1d = next(line for line in table if line.startswith("| M1D"))
    assert "| 3 | 91.00 ± 0.10 | +1.00 [+0.80, +1.20] |" in m1d
    # wc-only - none, paired: +1, +2, 0 pp -> +1.00 ± 4.303 * 1 / sqrt(3)
    assert m1d.endswith("| +1.00 [-1.48, +3.48] |")
    assert next(line for line in table if line.startswith("| F-full")).startswith("| F-full | not run |")
    assert (docs / "headline.png").stat().st_size > 1000
    assert "| m1d | 15 | 0 | 0.01 | 0.01 |" in (docs / "costs.md").read_text()
    # a later publish of other comparisons keeps the cost row of one published before
    (tmp_path / "runs" / "m1d" / "summary.json").rename(tmp_path / "runs" / "m1d" / "old.json")
    assert publish.main() == 0
    assert "| m1d | 15 | 0 | 0.01 | 0.01 |" in (docs / "costs.md").read_text()
    # learned vs fixed, paired per seed: diffs +0.01, 0, +0.02 -> mean +1.00 pp, t(0.975, 2) = 4.303
    learned = (docs / "learned.md").read_text()
    half = 4.303 * 1.0 / 3**0.5
    assert f"| wc-learn | +1.00 [{1 - half:+.2f}, {1 + half:+.2f}] (n=3) |" in learned


def _write_curve(folder, seed, accs):
    run = folder / "base" / f"seed{seed}"
    run.mkdir(parents=True)
    rows = [json.dumps({"epoch": e + 1, "val_acc": a}) for e, a in enumerate(accs)]
    (run / "metrics.jsonl").write_text("\n".join(rows) + "\n")


def test_convergence_rule_from_the_baseline_curves(tmp_path):
    runs, docs = tmp_path / "runs", tmp_path / "docs"
    docs.mkdir()
    # 20 epochs: the last fifth starts after epoch 16. Seed means: epoch 16 -> 0.900, epoch 20 -> 0.9015.
    flat = [0.5 + 0.02 * e for e in range(15)] + [0.900, 0.9005, 0.901, 0.9012, 0.9015]
    _write_curve(runs / "f-mlp", 0, [a - 0.001 for a in flat])
    _write_curve(runs / "f-mlp", 1, [a + 0.001 for a in flat])
    # 10 epochs, still rising: too short and a gain of 2 points over epochs 8 -> 10
    _write_curve(runs / "f-nonorm", 0, [0.80 + 0.01 * e for e in range(10)])
    publish.publish_convergence(runs, docs)
    curves = json.loads((docs / "convergence.json").read_text())
    mlp, nonorm = curves["f-mlp"], curves["f-nonorm"]
    assert mlp["seeds"] == 2 and mlp["epochs"] == 20
    assert abs(mlp["gain_last_fifth_pp"] - 0.15) < 1e-9 and mlp["converged"]
    assert abs(nonorm["gain_last_fifth_pp"] - 2.0) < 1e-9 and not nonorm["converged"]
    table = (docs / "convergence.md").read_text()
    assert "| F-mlp | 20 | 2 | 90.00 → 90.15 | +0.15 | yes |" in table
    assert "| F-nonorm | 10 | 1 | 87.00 → 89.00 | +2.00 | no |" in table
    assert (docs / "convergence.png").stat().st_size > 1000
    # a later publish with only one benchmark's runs keeps the other's curve
    (runs / "f-nonorm" / "base" / "seed0" / "metrics.jsonl").unlink()
    publish.publish_convergence(runs, docs)
    assert set(json.loads((docs / "convergence.json").read_text())) == {"f-mlp", "f-nonorm"}


def test_unfinished_baseline_gives_no_curve(tmp_path):
    _write_curve(tmp_path, 0, [0.5, 0.6, 0.7])
    _write_curve(tmp_path, 1, [0.5, 0.6])  # still training
    assert publish.base_validation_curve(tmp_path) is None
