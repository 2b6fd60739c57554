"""The benchmark scripts run end to end (one tiny round) and report positive ratios."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", ["overhead.py", "bilevel_overhead.py"])
def test_benchmark_script_runs(script, tmp_path):
    out = tmp_path / "out.json"
    extra = ["--paper-kinds", "--floor"] if script == "overhead.py" else []
    command = [sys.executable, str(BENCHMARKS / script), "--rounds", "1", "--steps", "1", "--json", str(out)]
    subprocess.run([*command, *extra], check=True, capture_output=True, text=True, timeout=300)
    results = json.loads(out.read_text())
    if extra:
        want = {"arctan fixed", "arctan learnable", "powerprop fixed", "wc learn (sums free)"}
        assert want <= set(results["mlp"]["train_ratio"])
    assert "threads" in results["machine"]
    models = ("cnn", "mlp", "deep")
    ratios = [results["ratio"]] if "ratio" in results else [results[m]["train_ratio"] for m in models]
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


def test_sums_free_floor_runs_the_fixed_passes_with_learnable_hyperparameters(monkeypatch):
    """The --floor variant times the learnable step's structure around the fixed kernel passes: its w
    and dLoss/dv are the library's, and the gain and limit get (zero) gradients as learnable ones do."""
    import torch

    import weight_compander as wc

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from tanh_sums_free import KERNEL, sums_free_tanh

    if KERNEL is None:
        pytest.skip("no C kernel here")
    torch.manual_seed(0)
    v = torch.randn(64, 32, requires_grad=True)
    scale, gain, limit = (torch.tensor(x, requires_grad=x != 0.7) for x in (0.7, 1.5, 2.0))
    w = sums_free_tanh(v, scale, gain, limit)
    w_ref = wc.get_kind("tanh").fused(v, scale, gain=gain, limit=limit)
    torch.testing.assert_close(w, w_ref, rtol=0, atol=0)
    g = torch.randn_like(w)
    (grad_v,) = torch.autograd.grad(w, v, g)
    (grad_v_ref,) = torch.autograd.grad(w_ref, v, g)
    torch.testing.assert_close(grad_v, grad_v_ref, rtol=1e-6, atol=0)
    gain_grad, limit_grad = torch.autograd.grad(sums_free_tanh(v, scale, gain, limit), (gain, limit), g)
    assert gain_grad.item() == 0.0 and limit_grad.item() == 0.0


@pytest.mark.skipif(shutil.which("cc") is None and not os.environ.get("CC"), reason="needs a C compiler")
def test_float_terms_experiment_times_three_passes_and_measures_their_error(tmp_path):
    """benchmarks/float_terms.py: the library's float64 terms stay within 1e-8 of float64 arithmetic,
    the float32-terms experiment within 1e-4 (its errors are what a reader weighs against its time)."""
    out = tmp_path / "out.json"
    command = [sys.executable, str(BENCHMARKS / "float_terms.py"), "--size", "65536", "--blocks", "1"]
    subprocess.run([*command, "--json", str(out)], check=True, capture_output=True, text=True, timeout=300)
    results = json.loads(out.read_text())
    assert set(results["ms_per_million_weights"]) == {"fixed", "double", "float"}
    assert all(ms > 0 for ms in results["ms_per_million_weights"].values())
    for case in ("relative_error_random", "relative_error_cancelled"):
        assert max(results[case]["double"]) < 1e-8
        assert 0 < max(results[case]["float"]) < 1e-4
    assert max(results["relative_error_cancelled"]["sum_over_rss"]) < 0.05
