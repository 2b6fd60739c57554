"""Run folders as the user's database (issue 13), in one process: locks, atomic UTF-8 files
with the user's umask, which runs belong to a comparison, and one clear line for every broken
file or OS error. The tests with several processes are in test_run_folders_processes.py."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from support import held_by_another_process
from weight_compander.harness.cli import main
from weight_compander.harness.compare.runner import run_comparison
from weight_compander.harness.config.comparison import load_comparison
from weight_compander.harness.config.settings import TrainConfig
from weight_compander.harness.errors import CheckpointError, CompareError, RunInterrupted
from weight_compander.harness.report.tables import markdown_tables
from weight_compander.harness.run import distributed, train
from weight_compander.harness.store import atomic, checkpoint
from weight_compander.harness.store.scan import scan_runs

TINY = dict(dataset="digits", model="mlp", epochs=1, batch_size=100, train_subset=200,
            val_size=100, threads=1, eval_batch_size=256)
FLAGS = ["--dataset", "digits", "--model", "mlp", "--epochs", "1", "--batch-size", "100",
         "--train-subset", "200", "--val-size", "100", "--threads", "1", "--no-progress"]

CMP = """
name = "cmp"
seeds = [0, 1]
baseline = "base"

[defaults]
dataset = "digits"
model = "mlp"
train_subset = 200
val_size = 100
epochs = 1
batch_size = 100
threads = 1

[variants.base]

[variants.wc]
reparam = "wc"
"""


def quiet(*args):
    pass


def one_line_error(err: str) -> str:
    """stderr of a command that failed cleanly: exactly one line, no traceback."""
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """A finished comparison (2 variants x 2 seeds, 1 epoch each), copied by `cmp`."""
    tmp = tmp_path_factory.mktemp("made")
    (tmp / "cmp.toml").write_text(CMP)
    run_comparison(load_comparison(tmp / "cmp.toml"), tmp / "out", report=False, log=quiet)
    return tmp


@pytest.fixture
def cmp(made, tmp_path) -> Path:
    """A private copy of the finished comparison: tmp_path/out, its TOML at tmp_path/cmp.toml."""
    shutil.copytree(made, tmp_path, dirs_exist_ok=True)
    return tmp_path / "out"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes (lock files aside: they only say who held them last)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


# ----------------------------------------------------------------- atomic files, umask


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def test_files_follow_the_umask_and_are_utf8(tmp_path, umask):
    umask(0o027)
    atomic.write_text(tmp_path / "report.md", "Δ ± µ\n")
    assert (tmp_path / "report.md").read_bytes() == "Δ ± µ\n".encode()
    checkpoint.save({"epoch": 1}, tmp_path)
    for name in ("report.md", "checkpoint.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o640, name

    umask(0o002)  # a whole run: every file readable by the group, as the umask says
    train.run(TrainConfig(**TINY), tmp_path / "run", progress="quiet")
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "run").iterdir()}
    assert modes and set(modes.values()) == {0o664}, modes


# ----------------------------------------------------------------- locks


def test_a_run_folder_in_use_is_refused_and_freed_when_its_holder_dies(tmp_path, capsys):
    run_dir = tmp_path / "r"
    with held_by_another_process(run_dir) as holder:
        assert main(["train", *FLAGS, "--out", str(run_dir)]) == 2
        err = one_line_error(capsys.readouterr().err)
        assert f"is being trained by process {holder.pid} (test holder)" in err
        assert "choose another --out" in err
        assert {p.name for p in run_dir.iterdir()} == {".lock"}  # nothing else written
        holder.kill()  # SIGKILL: the operating system drops the lock
        holder.wait()
        assert main(["train", *FLAGS, "--out", str(run_dir)]) == 0
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1


def test_compare_trains_the_free_runs_first_then_waits_for_a_held_one(tmp_path):
    (tmp_path / "cmp.toml").write_text(CMP)
    out, lines = tmp_path / "out", []
    with held_by_another_process(out / "base" / "seed0") as holder:

        def log(line):
            lines.append(line)
            if "being trained by" in line:  # the other process ends a moment later
                threading.Timer(0.5, holder.kill).start()

        summary = run_comparison(load_comparison(tmp_path / "cmp.toml"), out, report=False, log=log)
    assert summary["failed"] == [] and summary["missing"] == []
    waited = [i for i, ln in enumerate(lines) if "base seed 0: being trained by process" in ln]
    assert waited == [1], lines  # said at once, and trained after the three free runs
    assert lines[-1].startswith("[4/4] base seed 0: test acc")
    assert summary["invocations"][-1]["runs_trained"] == 4


def test_a_different_comparison_on_a_folder_in_use_is_refused(cmp):
    """Two TOMLs on one --out at once would mix 2- and 3-epoch runs; the second is refused."""
    toml = cmp.parent / "cmp.toml"
    other = cmp.parent / "other.toml"
    other.write_text(CMP.replace("epochs = 1", "epochs = 2"))
    with held_by_another_process(cmp, name=".compare.lock", shared=True):  # a compare of cmp.toml
        with pytest.raises(CompareError, match=r"in use by another compare of a different "
                           r"comparison \(variant base differs in epochs\), started by process"):
            run_comparison(load_comparison(other), cmp, report=False, log=quiet)
        summary = run_comparison(load_comparison(toml), cmp, report=False, log=quiet)  # joins
    assert summary["failed"] == [] and summary["invocations"][-1]["runs_trained"] == 0


# ----------------------------------------------------------------- membership


def test_an_edited_comparison_reports_exactly_the_runs_it_has_now(cmp, capsys):
    toml = cmp.parent / "cmp.toml"
    old_config = cmp / "base" / "seed0" / "config.json"
    # a run made before a TrainConfig field existed (here: two keys missing) still belongs
    saved = json.loads(old_config.read_text())
    del saved["wc_hyper_loss"], saved["eval_batch_size"]
    assert "meta" in saved
    old_config.write_text(json.dumps(saved))
    before = (cmp / "base" / "seed0" / "final.json").stat().st_mtime_ns

    edited = CMP.replace("seeds = [0, 1]", "seeds = [0]").replace(
        '[variants.wc]\nreparam = "wc"', '[variants.wc2]\nreparam = "wc"\nwc_hyper = { gain = 2.0 }')
    toml.write_text(edited)
    assert main(["compare", str(toml), "--out", str(cmp), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "2 runs; 1 already finished, 1 to run" in out  # base seed 0 was not trained again
    assert (cmp / "base" / "seed0" / "final.json").stat().st_mtime_ns == before
    summary = json.loads((cmp / "summary.json").read_text())
    assert {v: s["n"] for v, s in summary["variants"].items()} == {"base": 1, "wc2": 1}
    text = (cmp / "report.md").read_text(encoding="utf-8")
    assert "| base | 1 |" in text and "| wc2 | 1 |" in text and "| wc |" not in text
    for folder, why in [("base/seed1", "seed 1 is not in the comparison's seeds [0]"),
                        ("wc/seed0", "variant wc is not in the comparison")]:
        assert f"`{folder}` ({why})" in text
    assert "ignored 3 run folder(s)" in out and "base/seed1, wc/seed0, wc/seed1" in out

    # a run whose settings were changed by hand no longer counts, and report says so
    changed = cmp / "wc2" / "seed0" / "config.json"
    changed.write_text(changed.read_text().replace('"lr": 0.05', '"lr": 0.1'))
    scan = scan_runs(cmp)
    assert [r.variant for r in scan.runs] == ["base"]
    assert (cmp / "wc2" / "seed0", "made with other settings (lr)") in scan.ignored


def test_plain_train_runs_are_grouped_by_configuration_not_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argv in (["--seed", "0"], ["--seed", "1"], ["--seed", "0", "--lr", "0.1"]):
        assert main(["train", *FLAGS, *argv]) == 0
    assert len(list((tmp_path / "runs").iterdir())) == 3  # no two runs share a folder
    first = next((tmp_path / "runs").glob("digits-*seed0-*"))
    shutil.copytree(first, tmp_path / "runs" / "copy")
    scan = scan_runs(tmp_path / "runs")
    groups = {}
    for r in scan.runs:
        groups.setdefault(r.variant, []).append(r.seed)
    assert sorted(map(sorted, groups.values())) == [[0], [0, 1]]  # by settings, not by folder
    assert all(v.startswith("digits-mlp-none-") for v in groups)
    (ignored, why), = scan.ignored  # the copy, or the original: one of the two counts
    assert {ignored, Path(why.removeprefix("same settings and seed as "))} == {
        first, tmp_path / "runs" / "copy"}
    table = markdown_tables(scan.runs)
    rows = [ln for ln in table.splitlines() if ln.startswith("| digits-mlp-none-")]
    assert sorted(ln.split("|")[2].strip() for ln in rows) == ["1", "2"]


def test_resume_restores_a_missing_config_json(cmp, tmp_path, capsys):
    run_dir = tmp_path / "r"
    assert main(["train", *FLAGS, "--out", str(run_dir)]) == 0
    (run_dir / "config.json").unlink()
    assert main(["train", *FLAGS, "--out", str(run_dir), "--resume"]) == 0
    restored = json.loads((run_dir / "config.json").read_text())
    assert restored["meta"]["restored_from"] == "checkpoint.pt"
    assert len(scan_runs(run_dir).runs) == 1  # visible to report again
    # without a checkpoint there is nothing to restore it from: refused, naming the way out
    for name in ("config.json", "checkpoint.pt", "checkpoint-prev.pt"):
        (run_dir / name).unlink(missing_ok=True)
    capsys.readouterr()
    assert main(["train", *FLAGS, "--out", str(run_dir), "--resume"]) == 2
    err = one_line_error(capsys.readouterr().err)
    assert "config.json is missing and it has no checkpoint" in err and "delete the folder" in err

    # inside a comparison the run does not silently drop out: re-running restores it
    (cmp / "wc" / "seed1" / "config.json").unlink()
    summary = run_comparison(load_comparison(cmp.parent / "cmp.toml"), cmp, report=False, log=quiet)
    assert summary["variants"]["wc"]["n"] == 2 and summary["invocations"][-1]["runs_trained"] == 0
    assert (cmp / "wc" / "seed1" / "config.json").exists()


# ----------------------------------------------------------------- broken files: one line, exit 2


@pytest.mark.parametrize(
    ("name", "content", "command", "message"),
    [
        ("base/seed0/config.json", "{", "report", "config.json is not valid JSON"),
        ("base/seed0/config.json", "", "compare", "config.json is empty; delete it"),
        ("compare.json", '{"variants": ', "report", "compare.json is not valid JSON"),
        ("base/seed1/metrics.jsonl", '{"epoch": 1, "val_acc": 0.5}\n{"epoch": 2, "val',
         "report", "metrics.jsonl, line 2, is not valid JSON"),
        ("summary.json", "", "compare", "summary.json is empty; delete it"),
    ],
)
def test_a_damaged_harness_file_is_one_line_naming_it_and_nothing_changes(
    cmp, capsys, name, content, command, message
):
    (cmp / name).write_text(content)
    if command == "compare":
        (cmp / "base" / "seed1" / "final.json").unlink()  # there would be work to do
    before = snapshot(cmp)
    argv = [str(cmp)] if command == "report" else [str(cmp.parent / "cmp.toml"), "--out", str(cmp)]
    assert main([command, *argv]) == 2
    err = one_line_error(capsys.readouterr().err)
    assert str(cmp / name) in err and message in err, err
    assert snapshot(cmp) == before


@pytest.mark.parametrize("content", ["", "{", '{"test_acc": null}'])
def test_an_empty_or_corrupt_final_json_is_an_unfinished_run(cmp, content):
    final = cmp / "wc" / "seed0" / "final.json"
    good = json.loads(final.read_text())
    final.write_text(content)
    scan = scan_runs(cmp)
    assert cmp / "wc" / "seed0" in scan.incomplete and len(scan.runs) == 3
    summary = run_comparison(load_comparison(cmp.parent / "cmp.toml"), cmp, report=False, log=quiet)
    assert summary["missing"] == [] and summary["invocations"][-1]["runs_trained"] == 1
    assert json.loads(final.read_text())["test_acc"] == good["test_acc"]  # resumed, not retrained


# ----------------------------------------------------------------- a full disk, other OS errors


def test_a_full_disk_while_writing_summary_json_keeps_the_old_one(cmp, monkeypatch, capsys):
    real = atomic.open_atomic

    @contextmanager
    def full_disk(path, mode="w"):
        with real(path, mode) as fh:
            if Path(path).name == "summary.json":
                fh.write('{"name": ')
                raise OSError(errno.ENOSPC, "No space left on device")
            yield fh

    monkeypatch.setattr(atomic, "open_atomic", full_disk)
    (cmp / "wc" / "seed1" / "final.json").unlink()
    before = (cmp / "summary.json").read_bytes()
    assert main(["compare", str(cmp.parent / "cmp.toml"), "--out", str(cmp), "--no-report"]) == 2
    err = one_line_error(capsys.readouterr().err)
    assert f"disk full while writing {cmp / 'summary.json'}" in err
    assert "re-run the same command" in err and "--resume" not in err
    assert (cmp / "summary.json").read_bytes() == before
    assert not list(cmp.glob(".*.tmp"))
    monkeypatch.setattr(atomic, "open_atomic", real)  # space freed: the same command completes
    assert main(["compare", str(cmp.parent / "cmp.toml"), "--out", str(cmp), "--no-report"]) == 0


class FullDiskOS:
    """`os` for checkpoint.py, except that the checkpoint's temp file fills the disk at 1 kB."""

    def __getattr__(self, name):
        return getattr(os, name)

    def fdopen(self, fd, mode):
        return FullFile(os.fdopen(fd, mode))


class FullFile:
    def __init__(self, fh):
        self.fh, self.size = fh, 0

    def write(self, data):
        self.size += len(data)
        if self.size > 1024:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


def test_a_full_disk_during_a_checkpoint_is_one_line_and_resume_continues(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "r"
    argv = ["train", *FLAGS, "--epochs", "2", "--out", str(run_dir)]
    real_save, saves = checkpoint.save, []

    def second_save_fills_the_disk(state, folder):
        saves.append(1)
        if len(saves) == 2:
            monkeypatch.setattr(checkpoint, "os", FullDiskOS())
        return real_save(state, folder)

    monkeypatch.setattr(checkpoint, "save", second_save_fills_the_disk)
    assert main(argv) == 2
    err = one_line_error(capsys.readouterr().err)
    assert f"disk full while writing {run_dir / 'checkpoint.pt'}" in err
    assert "enforce fail" not in err and "train --resume" in err
    assert checkpoint.load_latest(run_dir)["epoch"] == 1 and not list(run_dir.glob(".*.tmp"))
    monkeypatch.setattr(checkpoint, "os", os)
    monkeypatch.setattr(checkpoint, "save", real_save)
    assert main([*argv, "--resume"]) == 0


@pytest.mark.parametrize(
    ("code", "message"),
    [(errno.EACCES, "no permission to access"), (errno.EROFS, "is on a read-only file system")],
)
def test_an_unwritable_out_folder_is_one_line(tmp_path, monkeypatch, capsys, code, message):
    def refuse(folder, prefix, suffix=".tmp"):
        raise OSError(code, os.strerror(code), str(folder))

    monkeypatch.setattr(atomic, "create_temp", refuse)
    assert main(["train", *FLAGS, "--out", str(tmp_path / "r")]) == 2
    err = one_line_error(capsys.readouterr().err)
    assert message in err and str(tmp_path / "r") in err and "choose a folder" in err


def test_unclear_errors_are_clear(tmp_path, capsys):
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b"name = \"caf\xe9\"\n")  # Latin-1, as an old editor saves it
    cases = [
        (["train", "--config", str(latin1)], "is not UTF-8 text (byte 0xe9"),
        (["compare", str(latin1)], "is not UTF-8 text (byte 0xe9"),
        (["train", "--config", str(tmp_path)], "is a folder; pass the path of a TOML file"),
        (["compare", str(tmp_path)], "is a folder; pass the path of a TOML file"),
    ]
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "cmp.toml").write_text(CMP)
    cases += [
        (["train", *FLAGS, "--out", str(tmp_path / "file")], "is a file, not a run folder"),
        (["compare", str(tmp_path / "cmp.toml"), "--out", str(tmp_path / "file")],
         "is a file, not a folder"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = one_line_error(capsys.readouterr().err)
        assert message in err, (argv, err)
    assert (tmp_path / "file").read_text() == "not a folder"


def test_unreadable_checkpoints_say_how_to_restart_and_never_suggest_weights_only(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    (tmp_path / "checkpoint-prev.pt").write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        checkpoint.load_latest(tmp_path)
    text = str(info.value)
    assert "delete checkpoint.pt and checkpoint-prev.pt to restart the run" in text
    assert "weights_only" not in text and "\n" not in text


def test_a_stopped_sequential_compare_does_not_suggest_resume(cmp, monkeypatch):
    """compare has no --resume: the run's own advice must not reach the user."""
    (cmp / "wc" / "seed1" / "final.json").unlink()
    for name in ("checkpoint.pt", "checkpoint-prev.pt"):
        (cmp / "wc" / "seed1" / name).unlink(missing_ok=True)
    real_shard, calls = distributed.shard, []

    def signal_in_the_first_step(x):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_shard(x)

    monkeypatch.setattr(distributed, "shard", signal_in_the_first_step)
    with pytest.raises(RunInterrupted) as info:
        run_comparison(load_comparison(cmp.parent / "cmp.toml"), cmp, report=False, log=quiet)
    text = str(info.value)
    assert "compare stopped by SIGTERM" in text and "after step 1" in text
    assert "--resume" not in text and "re-run the same command" in text
