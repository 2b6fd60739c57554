"""`robustness`: results in the run folders, skips finished runs, re-evaluates after a suite
change, never touches training files, report tables and figures, clear errors."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from weight_compander.harness import cli
from weight_compander.harness.compare.runner import run_comparison
from weight_compander.harness.config.comparison import comparison_from_dict, load_comparison
from weight_compander.harness.config.suite import FAMILIES, SUITE_VERSION, Suite
from weight_compander.harness.errors import CompareError
from weight_compander.harness.evaluate import robustness
from weight_compander.harness.store.scan import find_runs

PNG = b"\x89PNG\r\n\x1a\n"
COMPARISON = """
name = "rob"
seeds = [0, 1]
baseline = "base"
robustness = { images = 150 }

[defaults]
dataset = "digits"
model = "mlp"
train_subset = 200
val_size = 100
epochs = 2
batch_size = 50
threads = 1

[variants.base]

[variants.wc]
reparam = "wc"

[variants.weight-norm]
reparam = "weight_norm"
"""
TRAINING_FILES = ("config.json", "metrics.jsonl", "final.json", "checkpoint.pt", "checkpoint-prev.pt")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """compare with `robustness = {...}`: 3 variants x 2 seeds, evaluated, with the report."""
    root = tmp_path_factory.mktemp("rob")
    (root / "rob.toml").write_text(COMPARISON)
    lines: list[str] = []
    summary = run_comparison(load_comparison(root / "rob.toml"), root / "out", progress=False,
                             log=lines.append)
    assert summary["failed"] == []
    (root / "out" / "compare.log").write_text("\n".join(lines))
    return root / "out"


@pytest.fixture
def folder(trained, tmp_path) -> Path:
    """A private copy, so a test may change it."""
    return Path(shutil.copytree(trained, tmp_path / "out"))


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.name in TRAINING_FILES}


def entry(run_dir: Path, weights: str = "final") -> dict:
    return json.loads((run_dir / "robustness.json").read_text())["evaluations"][weights]


def test_compare_runs_the_suite_on_every_run_and_report_shows_tables_and_figures(trained):
    runs, _ = find_runs(trained)
    assert len(runs) == 6
    for run in runs:
        e = entry(run.path)
        assert e["suite"]["version"] == SUITE_VERSION and e["weights"] == "final"
        assert e["images"] == 150 and e["test_images"] == 359 and e["epoch"] == 2
        assert set(e["summary"]) == set(FAMILIES)
        assert len(e["results"]) == 11 * 3 + 5 + 5 + 4 + 4 + 3
        assert all(0 <= r["acc"] <= 1 for r in e["results"])
    report = (trained / "report.md").read_text()
    for heading in ("#### Robustness (last epoch's weights)", "##### input corruptions",
                    "##### pruning, per layer", "##### quantization, MSE clipping",
                    "#### Selection on validation"):
        assert heading in report
    rows = [ln for ln in report.splitlines() if ln.startswith("| wc | ") and ", Δ " in ln]
    assert rows and re.search(r"\d+\.\d\d ± \d+\.\d\d, Δ [+-]\d+\.\d\d \[", rows[0])  # paired Δ, CI
    assert "| **mean over 33** |" in report and "| bits 2 |" in report and "| sparsity 0.95 |" in report
    for name in ("robustness.png", "corruptions.png"):
        path = trained / "figures" / name
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 5000 and f"(figures/{name})" in report


def test_compare_evaluates_each_run_right_after_training_it(trained):
    """So a study stopped part way has the robustness of every run it finished."""
    order = [trained / v / f"seed{s}" for s in (0, 1) for v in ("base", "wc", "weight-norm")]
    for run, later in itertools.pairwise(order):  # one at a time, seed-major
        assert (run / "robustness.json").stat().st_mtime_ns <= (later / "final.json").stat().st_mtime_ns
    log = (trained / "compare.log").read_text()
    assert log.count("    robustness: clean ") == 6
    assert "6 finished runs, 6 already evaluated, 0 to evaluate" in log  # the pass after training


def test_compare_workers_evaluate_their_runs(tmp_path):
    """--jobs 2: each worker evaluates the run it trained; a run left without robustness
    (trained before the suite was asked for) is evaluated once training is done."""
    text = COMPARISON.replace("seeds = [0, 1]", "seeds = [0]").replace("images = 150", "images = 60")
    without = comparison_from_dict({**tomllib.loads(text), "robustness": False}, source="rob")
    run_comparison(without, tmp_path, progress=False, log=lambda _: None)
    shutil.rmtree(tmp_path / "wc" / "seed0")
    shutil.rmtree(tmp_path / "weight-norm" / "seed0")
    lines: list[str] = []
    summary = run_comparison(comparison_from_dict(tomllib.loads(text), source="rob"), tmp_path, jobs=2,
                             progress=False, log=lines.append)
    assert summary["failed"] == [] and summary["invocations"][-1]["runs_trained"] == 2
    assert sum(ln.startswith("    robustness: clean ") for ln in lines) == 2
    assert "3 finished runs, 2 already evaluated, 1 to evaluate" in "\n".join(lines)
    assert all(entry(tmp_path / v / "seed0")["images"] == 60 for v in ("base", "wc", "weight-norm"))


def test_rerun_skips_finished_runs_and_a_changed_suite_reevaluates_without_touching_training_files(
        folder, capsys):
    before, saved = digests(folder), {p: p.read_bytes() for p in folder.rglob("robustness.json")}
    assert cli.main(["robustness", str(folder), "--images", "150", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "6 finished runs, 6 already evaluated, 0 to evaluate" in out
    assert {p: p.read_bytes() for p in folder.rglob("robustness.json")} == saved

    assert cli.main(["robustness", str(folder), "--images", "150", "--bits", "8,4", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "0 already evaluated, 6 to evaluate" in out and "| weight-norm |" in out
    for p in saved:
        e = entry(p.parent)
        assert e["suite"]["bits"] == [8, 4]
        assert [r["level"] for r in e["results"] if r["family"] == "quant-mse"] == [8, 4]
    assert digests(folder) == before  # config, metrics, final and checkpoints untouched
    assert not list(folder.rglob(".*.tmp"))


def test_best_val_weights_are_evaluated_on_request_and_say_so(folder, capsys):
    run = folder / "wc" / "seed0"
    code = cli.main(["robustness", str(run), "--weights", "best_val", "--families", "quant-maxabs",
                     "--images", "all", "--no-progress"])
    assert code == 0 and "best_val weights" in capsys.readouterr().out
    final, e = json.loads((run / "final.json").read_text()), entry(run, "best_val")
    assert e["epoch"] == final["best_epoch"] and e["images"] == 359
    assert e["suite"]["images"] is None  # --images all: the whole test set, as a comparison's "all"
    assert e["clean"]["acc"] == pytest.approx(final["test_acc_best_val"], abs=1e-9)
    assert entry(run)["images"] == 150  # the final-weights entry is kept beside it


def test_a_crash_mid_way_keeps_finished_results_and_leaves_no_half_written_file(folder, monkeypatch):
    for p in folder.rglob("robustness.json"):
        p.unlink()
    real, calls = robustness.evaluate_run, []

    def crash_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("power cut")
        return real(*args, **kwargs)

    monkeypatch.setattr(robustness, "evaluate_run", crash_on_second)
    with pytest.raises(RuntimeError):
        suite = Suite(images=50, families=("weight-noise",))
        robustness.evaluate_runs(find_runs(folder)[0], suite, progress="quiet")
    assert len(list(folder.rglob("robustness.json"))) == 1 and not list(folder.rglob(".*.tmp"))


@pytest.mark.parametrize("args, message", [
    (["--families", "corruption,fog"], "unknown family 'fog'; valid: corruption, prune-global"),
    (["--corruptions", "fog"], "unknown corruption 'fog'; images: gaussian_noise"),
    (["--sparsities", "0.5,1.5"], r"sparsities: 1.5 is not a fraction in \(0, 1\)"),
    (["--sparsities", "0"], r"sparsities: 0.0 is not a fraction in \(0, 1\)"),
    (["--bits", "4,1"], r"bits: 1 is not an integer in 2..16"),
    (["--severities", "4"], "severities: 4 is not one of 1, 2, 3"),
])
def test_bad_suite_settings_are_errors_naming_the_value(folder, capsys, args, message):
    assert cli.main(["robustness", str(folder), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and re.search(message, err)


def test_a_folder_without_finished_runs_is_an_error_naming_it(tmp_path, capsys):
    (tmp_path / "empty" / "run").mkdir(parents=True)
    (tmp_path / "empty" / "run" / "config.json").write_text("{}")
    assert cli.main(["robustness", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert f"no finished runs (final.json) in {tmp_path / 'empty'}; 1 unfinished" in err
    assert cli.main(["robustness", str(tmp_path / "missing")]) == 2


def test_compare_checks_its_robustness_table_before_any_run():
    base = {"seeds": [0], "variants": {"base": {}}}
    assert comparison_from_dict({**base, "robustness": True}).robustness == {}
    assert comparison_from_dict(base).robustness is None
    with pytest.raises(CompareError, match=r"\[robustness\]: unknown key\(s\) colour"):
        comparison_from_dict({**base, "robustness": {"colour": 1}})
    with pytest.raises(CompareError, match=r"bits: 1 is not an integer"):
        comparison_from_dict({**base, "robustness": {"bits": [1]}})
    with pytest.raises(CompareError, match="robustness must be true, false or a table"):
        comparison_from_dict({**base, "robustness": "yes"})


def test_a_comparison_file_can_ask_for_every_test_image():
    """TOML has no None: images = "all" is the whole test set, the same suite as --images all."""
    base = {"seeds": [0], "variants": {"base": {}}}
    options = comparison_from_dict({**base, "robustness": {"images": "all"}}).robustness
    suite = Suite.from_options(options)
    assert suite.images is None and suite.fingerprint() == Suite(images=None).fingerprint()
    with pytest.raises(CompareError, match=r"images: must be an integer >= 1 or \"all\".*'some'"):
        comparison_from_dict({**base, "robustness": {"images": "some"}})


STOP_DURING_EVALUATION = r"""
import os, signal, sys
from pathlib import Path
from weight_compander.harness.compare import workers
from weight_compander.harness.config.comparison import load_comparison
from weight_compander.harness.config.suite import Suite
from weight_compander.harness.errors import RunInterrupted
from weight_compander.harness.evaluate import robustness

comparison = load_comparison(sys.argv[1])
real = robustness.evaluate_run

def stop_first(run_dir, suite, **kw):  # `compare` is stopped just as the evaluation starts
    os.kill(os.getpid(), signal.SIGTERM)
    return real(run_dir, suite, **kw)

robustness.evaluate_run = stop_first
workers.init_worker(1, os.getppid())
try:
    suite = Suite.from_options(comparison.robustness)
    workers.run_one(comparison.config("base", 0), sys.argv[2], suite, "quiet")
except RunInterrupted as err:
    print("stopped:", err.message)
"""


def test_a_stop_ends_a_workers_evaluation_without_writing_it(tmp_path):
    """A stop signal to a worker ends the evaluation of the run it just trained after the
    current condition, as it ends training after the current step: the run stays finished,
    robustness.json is not written (a re-run of the comparison evaluates it)."""
    (tmp_path / "rob.toml").write_text(COMPARISON)
    run = tmp_path / "base" / "seed0"
    argv = [sys.executable, "-c", STOP_DURING_EVALUATION, str(tmp_path / "rob.toml"), str(run)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"stopped: {run} trained, robustness not evaluated: stopping" in done.stdout
    assert (run / "final.json").exists() and not (run / "robustness.json").exists()
