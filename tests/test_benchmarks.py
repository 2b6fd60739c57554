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
    subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--rounds", "1", "--steps", "1", "--json", str(out)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    results = json.loads(out.read_text())
    assert "threads" in results["machine"]
    ratios = [results["ratio"]] if "ratio" in results else [results[m]["train_ratio"] for m in ("cnn", "mlp")]
    assert all(value > 0 for r in ratios for value in r.values())
