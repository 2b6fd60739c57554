"""`compare`: variants x seeds, skipping finished runs, resuming, --jobs, validation."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest

from support import held_by_another_process
from weight_compander.harness.cli import main
from weight_compander.harness.compare import workers
from weight_compander.harness.compare.runner import run_comparison
from weight_compander.harness.config.comparison import load_comparison
from weight_compander.harness.errors import CompareError
from weight_compander.harness.run import train

TINY = """
name = "tiny"
seeds = [0, 1]
baseline = "base"

[defaults]
dataset = "digits"
model = "mlp"
train_subset = 200
val_size = 100
epochs = 1
batch_size = 50
weight_decay = 5e-4

[variants.base]

[variants.wc]
reparam = "wc"
wc_hyper = { gain = 2.0, limit = 3.0 }
"""


def write_toml(tmp_path: Path, text: str = TINY, name: str = "tiny.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def cli(args: list[str]) -> int:
    """`weight-compander compare ...`: its exit code."""
    return main(["compare", *args])


def test_runs_every_variant_and_seed_then_skips_them(tmp_path, monkeypatch):
    out = tmp_path / "out"
    summary = run_comparison(load_comparison(write_toml(tmp_path)), out, report=False)
    finals = {(v, s): out / v / f"seed{s}" / "final.json" for v in ("base", "wc") for s in (0, 1)}
    assert all(p.exists() for p in finals.values())
    assert summary["failed"] == [] and summary["missing"] == []

    # summary.json holds exactly what the final.json files say, paired to the baseline
    on_disk = json.loads((out / "summary.json").read_text())
    for v in ("base", "wc"):
        accs = [json.loads(finals[v, s].read_text())["test_acc"] for s in (0, 1)]
        assert on_disk["variants"][v]["test_acc"] == accs
        assert on_disk["variants"][v]["mean"] == pytest.approx(statistics.fmean(accs))
        assert on_disk["variants"][v]["std"] == pytest.approx(statistics.stdev(accs))
        assert on_disk["variants"][v]["n"] == 2
    diffs = on_disk["variants"]["wc"]["vs_baseline"]["diffs"]
    base, wc = on_disk["variants"]["base"]["test_acc"], on_disk["variants"]["wc"]["test_acc"]
    assert diffs == pytest.approx([w - b for w, b in zip(wc, base, strict=True)])
    assert on_disk["cpu_time"] > 0 and on_disk["wall_time"] > 0
    assert on_disk["runs_cpu_time"] > 0
    resolved = json.loads((out / "compare.json").read_text())
    assert resolved["seeds"] == [0, 1] and resolved["baseline"] == "base"
    assert resolved["variants"]["wc"]["config"]["reparam"] == "wc"

    # re-running trains nothing and leaves every run untouched
    mtimes = {k: p.stat().st_mtime_ns for k, p in finals.items()}
    calls = []
    monkeypatch.setattr(train, "run", lambda *a, **k: calls.append(a) or {})
    again = run_comparison(load_comparison(write_toml(tmp_path)), out, report=False)
    assert calls == []
    assert {k: p.stat().st_mtime_ns for k, p in finals.items()} == mtimes
    assert again["variants"]["wc"]["test_acc"] == wc
    # the cost of the comparison adds up over invocations instead of being overwritten
    assert [i["runs_trained"] for i in again["invocations"]] == [4, 0]
    assert again["cpu_time"] >= on_disk["cpu_time"] and again["wall_time"] > on_disk["wall_time"]


def test_interrupted_run_is_resumed_from_its_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "out"
    comparison = load_comparison(write_toml(tmp_path))
    run_comparison(comparison, out, report=False)
    final = out / "wc" / "seed1" / "final.json"
    before = json.loads(final.read_text())
    final.unlink()  # as if the process died after the last checkpoint

    real_run, calls = train.run, []

    def spy(config, run_dir, **kw):
        calls.append((Path(run_dir), kw["resume"]))
        return real_run(config, run_dir, **kw)

    monkeypatch.setattr(train, "run", spy)
    run_comparison(comparison, out, report=False)
    assert calls == [(out / "wc" / "seed1", True)]
    assert json.loads(final.read_text())["test_acc"] == before["test_acc"]


def test_jobs_2_runs_in_parallel_processes(tmp_path, capsys):
    out = tmp_path / "out"
    # another process trains base seed 0 until wc seed 1 is done: it is left for last
    with held_by_another_process(out / "base" / "seed0", until=out / "wc" / "seed1" / "final.json"):
        assert cli([str(write_toml(tmp_path)), "--out", str(out), "--jobs", "2", "--no-report"]) == 0
    printed = capsys.readouterr().out
    assert "base seed 0: being trained by process" in printed
    lines = [ln for ln in printed.splitlines() if ln.startswith("[")]
    assert len(lines) == 4  # one line per finished run: variant, seed, test acc, time
    assert lines[-1].startswith("[4/4] base seed 0: test acc")
    assert all(" test acc " in ln and ln.rstrip().endswith(" s)") for ln in lines)
    assert "| wc | 2 | " in printed  # and the table at the end
    summary = json.loads((out / "summary.json").read_text())
    assert {v: s["n"] for v, s in summary["variants"].items()} == {"base": 2, "wc": 2}
    # each worker process got its share of the cores, as its run recorded
    meta = json.loads((out / "wc" / "seed0" / "config.json").read_text())["meta"]
    threads = int(re.search(r"(\d+) torch threads", meta["machine"]).group(1))
    assert threads == max(1, workers.cores() // 2)


def test_a_failed_run_is_reported_and_the_others_continue(tmp_path, capsys):
    text = TINY + '\n[variants.broken]\nmodel = "no-such-model"\n'
    out = tmp_path / "out"
    assert cli([str(write_toml(tmp_path, text)), "--out", str(out), "--no-report"]) == 1
    printed = capsys.readouterr().out
    assert printed.count("FAILED") == 2 and "no-such-model" in printed
    assert (out / "broken" / "seed0" / "error.log").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert sorted((f["variant"], f["seed"]) for f in summary["failed"]) == [
        ("broken", 0), ("broken", 1)]
    assert summary["variants"]["wc"]["n"] == 2  # the other variants all ran


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("seeds = [0, 1]", "seeds = []"), "seeds must be a non-empty list"),
        (("seeds = [0, 1]", "seeds = [0, 0]"), "repeat a seed"),
        (('baseline = "base"', 'baseline = "nope"'), "baseline 'nope' is not a variant"),
        (('name = "tiny"', 'name = "tiny"\nepochs = 3'), "unknown key(s) epochs"),
        (("epochs = 1", "epochs = 1\nlearning_rate = 0.1"), "unknown key(s) learning_rate"),
        (('reparam = "wc"', 'reparam = "wc"\nlr = "fast"'), "[variants.wc]"),
        (("epochs = 1", "epochs = 1\nseed = 3"), "'seed' is set by the top-level seeds"),
        (("[variants.base]", "[variants.'a b']"), "must be folder-safe"),
    ],
)
def test_config_errors_are_clear_and_stop_before_any_run(tmp_path, capsys, change, message):
    old, new = change
    assert old in TINY
    path = write_toml(tmp_path, TINY.replace(old, new))
    with pytest.raises(CompareError) as err:
        load_comparison(path)
    assert message in str(err.value) and str(path) in str(err.value)
    out = tmp_path / "out"
    assert cli([str(path), "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_changed_settings_are_refused_rather_than_mixed(tmp_path):
    out = tmp_path / "out"
    run_comparison(load_comparison(write_toml(tmp_path)), out, report=False)
    changed = write_toml(tmp_path, TINY.replace("weight_decay = 5e-4", "weight_decay = 1e-3"))
    with pytest.raises(CompareError, match=r"weight_decay: 0.0005 -> 0.001"):
        run_comparison(load_comparison(changed), out, report=False)
