"""Studies that survive a session: a fresh clone of committed run files trains only what is
missing, skips finished robustness evaluations, rebuilds the same tables, and `status` says
what is left."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from support import held_by_another_process
from weight_compander.harness.cli import status as status_cli
from weight_compander.harness.compare import status
from weight_compander.harness.compare.runner import run_comparison
from weight_compander.harness.config.comparison import load_comparison
from weight_compander.harness.evaluate import robustness
from weight_compander.harness.report.write import write_report
from weight_compander.harness.run import train

ROOT = Path(__file__).resolve().parents[2]
SMALL_FILES = {"config.json", "metrics.jsonl", "final.json", "robustness.json"}

STUDY = """
name = "tiny-study"
seeds = [0, 1]
baseline = "base"

[robustness]
images = "all"
families = ["quant-maxabs", "weight-noise"]
bits = [4]
weight_noise = [0.25]

[defaults]
dataset = "digits"
model = "mlp"
train_subset = 200
val_size = 100
epochs = 2
batch_size = 50
label_noise = 0.2
threads = 1

[variants.base]

[variants.wc]
reparam = "wc"
wc_hyper = { gain = 2.0, limit = 3.0 }
"""
MORE = STUDY.replace("seeds = [0, 1]", "seeds = [0, 1, 2]") + "\n[variants.kure]\nkure = 0.5\n"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout


def tables(report: Path) -> list[str]:
    """The Markdown table lines of a report, without the weight-histogram table (its numbers
    come from checkpoints, which a study does not commit)."""
    out, skip = [], False
    for line in report.read_text().splitlines():
        if line.startswith("| variant | WC | seed |"):
            skip = True
        if not line.startswith("|"):
            skip = False
        if line.startswith("|") and not skip:
            out.append(line)
    return out


@pytest.fixture(scope="module")
def committed(tmp_path_factory):
    """A repository with one finished study committed under studies/ (the project's .gitignore),
    its report with checkpoints present, and a fresh clone of it."""
    tmp = tmp_path_factory.mktemp("study")
    lab = tmp / "lab"
    (lab / "configs").mkdir(parents=True)
    shutil.copy(ROOT / ".gitignore", lab / ".gitignore")
    (lab / "configs" / "study.toml").write_text(STUDY)
    out = lab / "studies" / "tiny-study"
    summary = run_comparison(load_comparison(lab / "configs" / "study.toml"), out, progress=False,
                             log=lambda _: None)
    assert summary["failed"] == [] and len(list(out.glob("*/seed*/checkpoint.pt"))) == 4
    before = tables(write_report(out))
    git(lab, "init", "-q")
    git(lab, "add", "-A")
    git(lab, "commit", "-qm", "study")
    git(tmp, "clone", "-q", str(lab), "clone")
    return lab, tmp / "clone", before


def test_a_clone_holds_the_small_files_of_every_run_and_no_checkpoint(committed):
    _, clone, _ = committed
    runs = sorted((clone / "studies" / "tiny-study").glob("*/seed*"))
    assert [f"{p.parent.name}/{p.name}" for p in runs] == ["base/seed0", "base/seed1", "wc/seed0", "wc/seed1"]
    for run in runs:
        assert {p.name for p in run.iterdir()} == SMALL_FILES
        entry = json.loads((run / "robustness.json").read_text())["evaluations"]["final"]
        assert entry["images"] == entry["test_images"] == 359  # images = "all" in the TOML
    assert not list(clone.rglob("checkpoint*.pt")) and not list(clone.rglob(".*lock"))
    assert (clone / "studies" / "tiny-study" / "compare.json").exists()


def test_report_from_the_committed_files_has_the_same_tables(committed):
    _, clone, before = committed
    folder = clone / "studies" / "tiny-study"
    after = tables(write_report(folder))
    assert after == before
    text = (folder / "report.md").read_text()
    assert "Weight histograms: no checkpoint for base, wc" in text
    assert "#### Weight kurtosis per layer" in text and "#### Memorization of wrong labels" in text
    assert "**Partial**: finished seeds per variant (of 2 planned): base 2, wc 2: under 5 seeds" in text


def test_status_of_the_clone_with_a_larger_plan(committed, capsys):
    _, clone, _ = committed
    folder = clone / "studies" / "tiny-study"
    (clone / "configs" / "more.toml").write_text(MORE)
    st = status.study_status(folder, clone / "configs" / "more.toml")
    states = {(r.variant, r.seed): r.state for r in st.runs}
    assert states == {**{(v, s): "finished" for v in ("base", "wc") for s in (0, 1)},
                      ("base", 2): "missing", ("wc", 2): "missing",
                      **{("kure", s): "missing" for s in (0, 1, 2)}}
    cpu = {v: [json.loads((folder / v / f"seed{s}" / "final.json").read_text())["cpu_time"]
               for s in (0, 1)] for v in ("base", "wc")}
    evaluation = {v: [json.loads((folder / v / f"seed{s}" / "robustness.json").read_text())
                      ["evaluations"]["final"]["cpu_time"] for s in (0, 1)] for v in ("base", "wc")}
    assert min(evaluation["base"]) > 0
    # one missing run at the mean, trained and evaluated; kure: three at the study's means
    assert st.to_go("base") == pytest.approx((sum(cpu["base"]) + sum(evaluation["base"])) / 2)
    assert st.to_go("kure") == pytest.approx(
        3 * (sum(cpu["base"] + cpu["wc"]) + sum(evaluation["base"] + evaluation["wc"])) / 4)
    so_far = sum(cpu["base"] + cpu["wc"] + evaluation["base"] + evaluation["wc"])
    assert sum(r.cpu_time + r.robust_cpu for r in st.runs) == pytest.approx(so_far)
    assert all(r.robust for r in st.runs if r.state == "finished")

    # without --config, the plan is the folder's compare.json
    assert {(r.variant, r.seed) for r in status.study_status(folder).runs} == set(
        (v, s) for v in ("base", "wc") for s in (0, 1))

    parser = argparse.ArgumentParser()
    status_cli.add_parser(parser.add_subparsers())
    ns = parser.parse_args(["status", str(folder), "--config", str(clone / "configs" / "more.toml")])
    assert ns.func(ns) == 0
    text = capsys.readouterr().out
    assert "3 variants x 3 seeds = 9 runs" in text
    assert "4 finished, 0 running, 0 interrupted, 5 missing" in text
    row = next(line.split() for line in text.splitlines() if line.startswith("kure "))
    assert row[1:6] == ["0/3", "0", "0", "3", "0/3"]  # finished running interrupted missing robustness


def test_status_tells_running_and_interrupted_runs(tmp_path):
    folder = tmp_path / "s"
    (tmp_path / "c.toml").write_text(STUDY)
    half = folder / "base" / "seed0"
    half.mkdir(parents=True)
    cfg = load_comparison(tmp_path / "c.toml").config("base", 0)
    (half / "config.json").write_text(cfg.resolved().to_json())
    (half / "metrics.jsonl").write_text(json.dumps({"epoch": 1}) + "\n")  # 1 of 2 epochs
    with held_by_another_process(folder / "wc" / "seed1"):
        st = status.study_status(folder, tmp_path / "c.toml")
        states = {(r.variant, r.seed): (r.state, r.done) for r in st.runs}
    assert states[("base", 0)] == ("interrupted", 0.5)
    assert states[("wc", 1)] == ("running", 0.0)
    assert states[("base", 1)] == ("missing", 0.0)
    assert st.to_go("base") is None  # nothing finished: no basis for an estimate
    assert "?: no finished run yet" in status.format_status(st)
    assert not (folder / "base" / "seed1").exists()  # status writes nothing


def test_compare_in_the_clone_trains_and_evaluates_only_the_missing_runs(committed, monkeypatch):
    _, clone, _ = committed
    folder = clone / "studies" / "tiny-study"
    small = {p: p.read_bytes() for p in folder.glob("*/seed*/*")}
    trained, evaluated = [], []
    real_run, real_eval = train.run, robustness.evaluate_run

    def counting_run(config, run_dir, **kw):
        trained.append(Path(run_dir).relative_to(folder).as_posix())
        return real_run(config, run_dir, **kw)

    def counting_eval(run_dir, suite, **kw):
        evaluated.append(Path(run_dir).relative_to(folder).as_posix())
        return real_eval(run_dir, suite, **kw)

    monkeypatch.setattr(train, "run", counting_run)
    monkeypatch.setattr(robustness, "evaluate_run", counting_eval)
    (clone / "configs" / "more.toml").write_text(MORE)
    summary = run_comparison(load_comparison(clone / "configs" / "more.toml"), folder, progress=False,
                             log=lambda _: None)
    new = ["base/seed2", "kure/seed0", "kure/seed1", "kure/seed2", "wc/seed2"]
    assert sorted(trained) == new and sorted(evaluated) == new
    assert summary["failed"] == [] and summary["missing"] == []
    assert {p: p.read_bytes() for p in small} == small  # the committed runs are untouched
    st = status.study_status(folder)
    assert all(r.state == "finished" and r.robust for r in st.runs) and len(st.runs) == 9


def test_a_changed_suite_skips_committed_runs_without_a_checkpoint(committed, tmp_path):
    """Robustness with another suite cannot evaluate runs that kept no checkpoint: compare says
    which and goes on (no failure), instead of stopping the study."""
    _, clone, _ = committed
    folder = tmp_path / "tiny-study"
    shutil.copytree(clone / "studies" / "tiny-study", folder)
    (tmp_path / "other.toml").write_text(STUDY.replace("bits = [4]", "bits = [3]"))
    lines: list[str] = []
    summary = run_comparison(load_comparison(tmp_path / "other.toml"), folder, progress=False,
                             report=False, log=lines.append)
    assert summary["failed"] == []
    note = next(line for line in lines if "have no checkpoint" in line)
    assert "4 run(s)" in note and "base/seed0" in note and "wc/seed1" in note
