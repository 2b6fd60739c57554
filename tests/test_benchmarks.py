"""The benchmark scripts run end to end (one tiny round) and report positive ratios."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", ["overhead.py", "bilevel_overhead.py"])
def test_benchmark_script_runs(script, tmp_path):
    out = tmp_path / "out.json"
    extra = ["--paper-kinds"] if script == "overhead.py" else []
    command = [sys.executable, str(BENCHMARKS / script), "--rounds", "1", "--steps", "1", "--json", str(out)]
    subprocess.run([*command, *extra], check=True, capture_output=True, text=True, timeout=300)
    results = json.loads(out.read_text())
    if extra:
        assert {"arctan fixed", "arctan learnable", "powerprop fixed"} <= set(results["mlp"]["train_ratio"])
    assert "threads" in results["machine"]
    ratios = [results["ratio"]] if "ratio" in results else [results[m]["train_ratio"] for m in ("cnn", "mlp")]
    assert all(value > 0 for r in ratios for value in r.values())


@pytest.mark.slow  # torch.compile compiles for each weight shape: a minute on 2 cores
def test_kernel_choice_candidates_agree_and_are_timed(tmp_path):
    out = tmp_path / "out.json"
    command = [sys.executable, str(BENCHMARKS / "kernel_choice.py"), "--rounds", "1", "--calls", "1"]
    subprocess.run([*command, "--json", str(out)], check=True, capture_output=True, text=True, timeout=600)
    results = json.loads(out.read_text())
    for entry in results["shapes"].values():
        assert all(d < 1e-6 for d in entry["max_relative_difference_to_kernel"].values())
        assert all(ms > 0 for hyper in ("fixed", "learnable") for ms in entry[hyper].values())
