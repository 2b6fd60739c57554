"""Run folders as the user's database (issue 13), with real processes: two `compare`s racing
on one folder, a non-UTF-8 locale, and workers whose `compare` parent is killed.

The racing commands are forks of one server process that has imported torch once and runs
under ``LC_ALL=C PYTHONUTF8=0``: both start within milliseconds (a real race, which two
fresh interpreters importing torch for seconds each would not give), and both write
tables with "±" and "Δ" to an ASCII console.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import alive, children
from weight_compander.harness.store import checkpoint

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/task").exists() or not hasattr(os, "fork"),
    reason="forks commands and reads /proc for child processes",
)

RACE = """
name = "race"
description = "Δ: the same comparison started twice at once"
seeds = [0, 1]
baseline = "base"

[defaults]
dataset = "digits"
model = "mlp"
train_subset = 300
val_size = 100
epochs = 2
batch_size = 50
threads = 1

[variants.base]

[variants.wc]
reparam = "wc"
"""

# Reads [argv, log] per line, forks `weight-compander ARGV` with output to LOG, prints
# "pid N" at once and "exit N CODE" when that child ends. A lock keeps a fork from
# copying the stdout lock while a reaper thread holds it.
SERVER = r"""
import json, os, sys, threading
import sklearn.datasets, torch._dynamo  # the slow imports, once, before forking
from weight_compander.harness import cli
from weight_compander.harness.run import train
print(f"ready {sys.stdout.encoding}", flush=True)
lock = threading.Lock()
def reap(pid):
    _, status = os.waitpid(pid, 0)
    with lock:
        print(f"exit {pid} {os.waitstatus_to_exitcode(status)}", flush=True)
for line in sys.stdin:
    argv, log = json.loads(line)
    with lock:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                code = cli.main(argv)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        print(f"pid {pid}", flush=True)
    threading.Thread(target=reap, args=(pid,), daemon=True).start()
"""

NOT_UTF8 = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": ""}


class Forks:
    """The fork server: `start` commands (all at once if you like), `wait` for their codes."""

    def __init__(self, env: dict[str, str]) -> None:
        full = {k: v for k, v in {**os.environ, "OMP_NUM_THREADS": "1", "CI": "1", **env}.items() if v}
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=full)
        ready = self.proc.stdout.readline().split()
        assert ready[:1] == ["ready"], ready
        self.encoding = ready[1]
        self.codes: dict[int, int] = {}

    def start(self, argv: list[str], log: Path) -> int:
        self.proc.stdin.write(json.dumps([argv, str(log)]) + "\n")
        self.proc.stdin.flush()
        while True:
            word, *rest = self.proc.stdout.readline().split()
            if word == "pid":
                return int(rest[0])
            self.codes[int(rest[0])] = int(rest[1])

    def wait(self, pid: int, timeout: float = 300) -> int:
        end = time.monotonic() + timeout
        while pid not in self.codes:
            assert time.monotonic() < end, f"command {pid} did not end"
            word, *rest = self.proc.stdout.readline().split()
            if word == "exit":
                self.codes[int(rest[0])] = int(rest[1])
        return self.codes[pid]

    def close(self) -> None:
        self.proc.kill()  # nothing to finish: every command has been waited for
        self.proc.wait(timeout=30)
        self.proc.stdin.close()
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def forks():
    server = Forks(NOT_UTF8)
    yield server
    server.close()


@pytest.fixture(scope="module")
def race(forks, tmp_path_factory) -> dict:
    """Two `compare`s of one comparison started at the same moment on one folder, then a
    `report` of it, all under a non-UTF-8 locale."""
    tmp = tmp_path_factory.mktemp("race")
    toml, out = tmp / "race.toml", tmp / "out"
    toml.write_text(RACE, encoding="utf-8")
    argv = ["compare", str(toml), "--out", str(out), "--no-progress", "--no-report"]
    pids = [forks.start(argv, tmp / f"{name}.log") for name in ("a", "b")]
    codes = [forks.wait(pid) for pid in pids]
    logs = [(tmp / f"{name}.log").read_text(encoding="ascii") for name in ("a", "b")]
    (out / "report.md").write_text("# an older, good report\n", encoding="utf-8")
    report_code = forks.wait(forks.start(["report", str(out)], tmp / "report.log"))
    return {"out": out, "codes": codes, "logs": logs, "encoding": forks.encoding,
            "report": (report_code, (tmp / "report.log").read_text(encoding="ascii"))}


def test_two_compares_racing_on_one_folder_train_every_run_once(race):
    out, logs = race["out"], race["logs"]
    assert race["codes"] == [0, 0], logs
    trained = [ln for log in logs for ln in log.splitlines()
               if re.match(r"\[\d/\d\] \S+ seed \d: test acc .*\(\d+ s\)$", ln)]
    assert len(trained) == 4, logs  # each run trained by exactly one of the two
    met = sum(log.count(": being trained by process") for log in logs)
    print(f"\n{met} time(s) a compare found a run the other one was training")
    for log in logs:  # and each compare accounts for all four, nothing failed
        # (the second may start after the first finished some: those it counts as finished)
        done, todo = map(int, re.search(r"(\d) already finished, (\d) to run", log).groups())
        assert done + todo == 4 and len(re.findall(rf"^\[\d/{todo}\] ", log, re.M)) == todo, log
        assert "FAILED" not in log and "Traceback" not in log
    for variant in ("base", "wc"):
        for seed in (0, 1):
            run = out / variant / f"seed{seed}"
            assert json.loads((run / "final.json").read_text())["epochs"] == 2
            rows = (run / "metrics.jsonl").read_text().splitlines()
            assert [json.loads(row)["epoch"] for row in rows] == [1, 2]
            json.loads((run / "config.json").read_text())
            assert checkpoint.load(run / "checkpoint.pt")["epoch"] == 2
            assert not (run / "error.log").exists()
    assert not list(out.rglob("*.tmp"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == [] and summary["missing"] == []
    # both invocations are on record (neither overwrote the other's), together 4 runs trained
    assert [i["runs_trained"] for i in summary["invocations"]] in ([4, 0], [0, 4], [2, 2], [1, 3],
                                                                   [3, 1])
    assert {v: s["n"] for v, s in summary["variants"].items()} == {"base": 2, "wc": 2}


def test_a_non_utf8_locale_neither_crashes_nor_truncates_files(race):
    assert race["encoding"].lower().replace("-", "") not in ("utf8",)  # really not UTF-8
    for log in race["logs"]:
        assert r"| base | 2 | " in log and r"\u0394 vs base" in log  # escaped, not a crash
    code, log = race["report"]
    assert code == 0 and r"\u0394 vs base" in log and "Traceback" not in log
    text = (race["out"] / "report.md").read_bytes().decode("utf-8")
    assert "Δ vs base" in text and "| wc | 2 | " in text  # replaced whole, as UTF-8
    assert json.loads((race["out"] / "compare.json").read_text(encoding="utf-8"))[
        "description"].startswith("Δ")


# ----------------------------------------------------------------- a killed parent

KILLED = """
name = "orphans"
seeds = [0]
baseline = "a"
[defaults]
dataset = "digits"
model = "mlp"
train_subset = 300
val_size = 100
batch_size = 50
epochs = 500
threads = 1
[variants.a]
[variants.b]
"""


def test_workers_exit_within_seconds_when_their_compare_is_killed(forks, tmp_path):
    toml, out = tmp_path / "orphans.toml", tmp_path / "out"
    toml.write_text(KILLED)
    argv = ["compare", str(toml), "--out", str(out), "--jobs", "2", "--no-report", "--no-progress"]
    parent = forks.start(argv, tmp_path / "compare.log")
    end = time.monotonic() + 180
    while not list(out.glob("*/seed0/.lock")) or len(children(parent)) < 2:
        assert alive(parent) and time.monotonic() < end, (tmp_path / "compare.log").read_text()
        time.sleep(0.05)
    workers = children(parent)
    os.kill(parent, signal.SIGKILL)  # no handler, no clean-up: the workers are on their own
    assert forks.wait(parent) == -signal.SIGKILL
    killed = time.monotonic()
    while any(alive(p) for p in workers) and time.monotonic() - killed < 30:
        time.sleep(0.1)
    still = [p for p in workers if alive(p)]
    for p in still:
        os.kill(p, signal.SIGKILL)
    assert not still, f"workers {still} outlived their parent by 30 s"
    print(f"\nworkers gone {time.monotonic() - killed:.1f} s after the parent was killed")
    for run in out.glob("*/seed0"):  # whatever they left is whole
        if (run / "checkpoint.pt").exists():
            checkpoint.load_latest(run)
