"""scripts/claims_results.py: the claims table is computed from run folders, paired by seed, each
column from the right result; missing folders give "not run", few seeds "partial"."""

import importlib
import json
import math
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # claims_results imports paper_results, as when run as a script
claims_results = importlib.import_module("claims_results")

SEEDS = range(5)
CORRUPTIONS = ("gaussian_noise", "rotate")
# (family, condition, level) of every robustness result planted
RESULTS = ([("corruption", c, s) for c in CORRUPTIONS for s in (1, 2, 3)]
           + [(f, "sparsity", p) for f in ("prune-global", "prune-layer") for p in (0.5, 0.9)]
           + [(f, "bits", b) for f in ("quant-maxabs", "quant-mse") for b in (8, 4, 3, 2)]
           + [("weight-noise", "sigma", s) for s in (0.1, 0.25, 0.5)])  # fmt: skip
# the column each planted result feeds, for the expected cells: column -> results averaged
COLUMN_RESULTS = {
    "clean": [("clean",)], "corruptions": [k for k in RESULTS if k[0] == "corruption"],
    "prune 90 % global": [("prune-global", "sparsity", 0.9)],
    "prune 90 % per layer": [("prune-layer", "sparsity", 0.9)],
    "4-bit max-abs": [("quant-maxabs", "bits", 4)], "3-bit max-abs": [("quant-maxabs", "bits", 3)],
    "2-bit max-abs": [("quant-maxabs", "bits", 2)], "4-bit MSE": [("quant-mse", "bits", 4)],
    "3-bit MSE": [("quant-mse", "bits", 3)], "2-bit MSE": [("quant-mse", "bits", 2)],
    "weight noise": [k for k in RESULTS if k[0] == "weight-noise"],
}  # fmt: skip


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def plant_comparison(folder: Path, seeds: dict[str, range], rng: random.Random, robustness: bool) -> dict:
    """Write a comparison's small files with random accuracies; variant -> seed -> key -> accuracy."""
    write_json(folder / "compare.json", {"name": folder.name, "seeds": list(SEEDS), "baseline": "base",
                                         "variants": {v: {} for v in seeds}})  # fmt: skip
    planted: dict = {}
    for variant, vseeds in seeds.items():
        for seed in vseeds:
            run = folder / variant / f"seed{seed}"
            acc = {k: rng.uniform(0.2, 0.9) for k in [("clean",), ("best",), *RESULTS]}
            planted.setdefault(variant, {})[seed] = acc
            write_json(run / "config.json", {"dataset": "digits", "model": "mlp", "seed": seed})
            write_json(run / "final.json", {"test_acc": acc[("clean",)], "test_acc_best_val": acc[("best",)],
                                            "best_epoch": 1, "epochs": 2})  # fmt: skip
            rows = [{"epoch": 1, "kurtosis": {"0.weight": 9.0}},  # not the last epoch: not shown
                    {"epoch": 2, "kurtosis": {"0.weight": 3.0 + 0.1 * seed, "2.weight": 2.0}}]
            (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            if not robustness:
                continue
            results = [{"family": f, "condition": c, "level": lv, "acc": acc[(f, c, lv)]}
                       for f, c, lv in RESULTS]
            families = dict.fromkeys(k[0] for k in RESULTS)
            summary = {f: statistics.fmean(r["acc"] for r in results if r["family"] == f) for f in families}
            suite = {"version": 1, "fingerprint": "feedc0de", "families": list(families), "corruptions": None,
                     "severities": [1, 2, 3], "sparsities": [0.5, 0.9], "bits": [8, 4, 3, 2],
                     "weight_noise": [0.1, 0.25, 0.5], "dense_ends": False, "images": None}
            write_json(run / "robustness.json", {"format": 1, "evaluations": {"final": {
                "suite": suite, "weights": "final", "epoch": 2, "images": 359, "test_images": 359,
                "clean": {"acc": acc[("clean",)]}, "results": results, "summary": summary}}})
    return planted


def expected(planted: dict, variant: str, keys: list[tuple], reference: str = "base") -> str:
    """The cell claims_results should print: mean per-seed difference to `reference`, 95 % t-interval, n."""
    seeds = sorted(set(planted[variant]) & set(planted[reference]))

    def value(v: str, s: int) -> float:
        return statistics.fmean(planted[v][s][k] for k in keys)

    diffs = [100 * (value(variant, s) - value(reference, s)) for s in seeds]
    mean, half = statistics.fmean(diffs), stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs)
    half /= math.sqrt(len(diffs))
    text = f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}] n={len(seeds)}"
    return text if len(seeds) >= 5 else f"*{text}, partial*"


def row(text: str, variant: str, bench: str) -> dict[str, str]:
    """column -> cell of `bench`'s row in `variant`'s table."""
    section = text.split(f"## {variant} (")[1].split("\n## ")[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    line = next(line for line in lines if line.startswith(f"| {bench} |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    return dict(zip(head[1:], cells[1:], strict=True))


def fake_studies(root: Path) -> dict:
    rng = random.Random(3)
    full = {"base": SEEDS, "paper-wc": SEEDS, "wc-fixed": SEEDS, "kure": SEEDS}
    return {
        "F-mlp": plant_comparison(root / "paper-fmlp", full, rng, robustness=True),
        "D": plant_comparison(root / "paper-digits", {"base": SEEDS, "paper-wc": range(2)}, rng,
                              robustness=True),
        "sym40": plant_comparison(root / "noise-fsmall-sym40", {"base": SEEDS, "paper-wc": SEEDS,
                                                                "wc-fixed": range(3)}, rng, robustness=False),
    }


def test_cells_are_paired_differences_of_the_right_results(tmp_path):
    planted = fake_studies(tmp_path / "studies")
    out, png = tmp_path / "docs" / "claims.md", tmp_path / "docs" / "claims.png"
    assert claims_results.main([str(tmp_path / "studies"), str(out), str(png)]) == 0
    text = out.read_text(encoding="utf-8")
    for variant in ("paper-wc", "wc-fixed", "kure"):
        cells = row(text, variant, "F-mlp")
        for column, keys in COLUMN_RESULTS.items():
            assert cells[column] == expected(planted["F-mlp"], variant, keys), (variant, column)
        assert {cells[c] for c in claims_results.LABEL_NOISE} == {"—"}  # not in the label-noise study
    assert {row(text, "weight-norm", "F-mlp")[c] for c in claims_results.ROBUSTNESS} == {"—"}  # not in it

    d = row(text, "paper-wc", "D")  # 2 of 5 seeds: partial, no verdict
    assert d["2-bit MSE"] == expected(planted["D"], "paper-wc", COLUMN_RESULTS["2-bit MSE"])
    assert d["2-bit MSE"].startswith("*") and d["2-bit MSE"].endswith("n=2, partial*")

    fsmall = row(text, "paper-wc", "F-small")  # label noise run, stage 3 not
    assert fsmall["sym 40 % final"] == expected(planted["sym40"], "paper-wc", [("clean",)])
    assert fsmall["sym 40 % best val"] == expected(planted["sym40"], "paper-wc", [("best",)])
    assert fsmall["clean"] == fsmall["pair 20 % final"] == "not run"
    assert row(text, "wc-fixed", "F-small")["sym 40 % final"].endswith("n=3, partial*")
    assert set(row(text, "paper-wc", "P-resnet").values()) == {"not run"}
    assert set(row(text, "kure", "M1D").values()) == {"not run"}

    headline = text.split("## Headline")[1].split("\n## ")[0]  # the README's table: n only below 5
    library = next(line for line in headline.splitlines() if line.startswith("| F-mlp | library WC |"))
    clean = expected(planted["F-mlp"], "wc-fixed", COLUMN_RESULTS["clean"])
    assert library.split(" | ")[2] == clean.replace(" n=5", "")
    assert "| F-small | paper's WC |" in headline and "| P-resnet |" not in headline  # not run: left out

    peers = text.split("## Against a peer or a control")[1].split("\n## ")[0]
    versus_kure = peers.split("### library WC − KURE")[1].split("###")[0]
    f_mlp = next(line for line in versus_kure.splitlines() if line.startswith("| F-mlp |")).split(" | ")
    wc_minus_kure = expected(planted["F-mlp"], "wc-fixed", COLUMN_RESULTS["2-bit MSE"], "kure")
    assert f_mlp[2].rstrip(" |") == wc_minus_kure

    kurtosis = text.split("### F-mlp")[1].split("###")[0]  # last epoch, mean ± std over 5 seeds
    assert "| 0.weight | 3.20 ± 0.16 | 3.20 ± 0.16 | 3.20 ± 0.16 | 3.20 ± 0.16 |" in kurtosis
    assert "| base (n=5) | paper-wc (n=5) | wc-fixed (n=5) | kure (n=5) |" in kurtosis
    assert "9.00" not in kurtosis
    assert "D: 359 of 359" in text and "](claims.png)" in text
    assert png.stat().st_size > 10_000
    assert claims_results.main([str(tmp_path / "missing")]) == 2


def test_command_line_defaults_and_empty_studies(tmp_path):
    """Run as a script: default outputs under docs/results/, every benchmark "not run"."""
    (tmp_path / "studies").mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, str(ROOT / "scripts" / "claims_results.py")], cwd=tmp_path, env=env,
                   check=True, capture_output=True)  # fmt: skip
    text = (tmp_path / "docs" / "results" / "claims.md").read_text(encoding="utf-8")
    assert set(row(text, "paper-wc", "D").values()) == {"not run"}
    assert "python scripts/claims_results.py studies docs/results/claims.md docs/results/claims.png" in text
    assert (tmp_path / "docs" / "results" / "claims.png").stat().st_size > 0


def test_the_committed_studies(tmp_path):
    out = tmp_path / "claims.md"
    assert claims_results.main([str(ROOT / "studies"), str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    cells = row(text, "paper-wc", "F-mlp")
    assert all(cells[c].endswith("n=5") for c in claims_results.ROBUSTNESS)
    at_l10 = text.split("### library WC − KURE at λ = 10")[1].split("###")[0]  # F-mlp's grid chose λ = 10
    f_mlp = next(line for line in at_l10.splitlines() if line.startswith("| F-mlp |"))
    assert f_mlp.count("n=5") == 2
    assert (tmp_path / "claims.png").stat().st_size > 0


def test_the_readme_headline_is_the_one_the_committed_runs_give(tmp_path):
    """The README's verdict table is copied from the script's headline: it must not drift."""
    out = tmp_path / "claims.md"
    assert claims_results.main([str(ROOT / "studies"), str(out)]) == 0
    computed = {line for line in out.read_text(encoding="utf-8").split("## Headline")[1].split("\n## ")[0]
                .splitlines() if line.startswith("| ")}  # fmt: skip
    verdict = (ROOT / "README.md").read_text(encoding="utf-8").split("## The verdict")[1].split("\n## ")[0]
    rows = [line for line in verdict.splitlines() if line.startswith("| ")]
    assert len(rows) >= 3, "the README's verdict has no table"
    assert set(rows) == computed
