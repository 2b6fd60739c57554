"""What `pip install` gives a user: a command that says what is missing, the demo's comparisons
inside the package, and the license."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from weight_compander.harness.compare import demo

ROOT = Path(__file__).resolve().parents[2]
BLOCK_NUMPY = """
import importlib.abc, sys

class NoNumpy(importlib.abc.MetaPathFinder):  # as if the harness extra were not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "numpy":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoNumpy())
"""
INSTALL_LINE = "pip install 'weight-compander[harness]'"


@pytest.fixture
def without_numpy(tmp_path) -> dict[str, str]:
    """An environment whose Python cannot import numpy (a sitecustomize blocks it); torch's own
    import-time warning about it is silenced, so what is left is this package's output."""
    (tmp_path / "sitecustomize.py").write_text(BLOCK_NUMPY)
    return {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONWARNINGS": "ignore:Failed to initialize NumPy"}


def test_without_the_harness_extra_the_command_says_what_to_install(without_numpy, tmp_path):
    script = Path(sys.executable).with_name("weight-compander")  # the installed console script
    commands = [[sys.executable, "-m", "weight_compander", "demo", "--quick"]]
    if script.exists():
        commands.append([str(script), "demo", "--quick"])
    for command in commands:
        done = subprocess.run(command, env=without_numpy, cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().count("\n") == 0 and INSTALL_LINE in done.stderr, done.stderr
        assert "numpy" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_the_library_needs_no_harness_extra(without_numpy):
    check = "import torch, weight_compander as wc; print(wc.apply(torch.nn.Linear(3, 2)))"
    done = subprocess.run([sys.executable, "-c", check], env=without_numpy, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0 and "['weight']" in done.stdout, done.stderr


def test_the_repository_configs_are_the_packaged_demo_comparisons():
    """One copy: configs/demo*.toml (quoted by the README) are links to the package data."""
    for name in ("demo.toml", "demo-digits.toml"):
        assert (ROOT / "configs" / name).resolve() == (demo.CONFIGS / name).resolve()
        assert demo.CONFIGS.resolve().is_relative_to((ROOT / "src" / "weight_compander").resolve())


def test_the_oldest_torch_promised_is_the_one_tested():
    """pyproject's floor is the release run.sh installs (what the suite runs on), not an older one."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (requirement,) = [d for d in meta["project"]["dependencies"] if d.startswith("torch")]
    tested = re.search(r'"torch==([0-9.]+)"', (ROOT / "run.sh").read_text()).group(1)
    assert requirement == f"torch>={'.'.join(tested.split('.')[:2])}"


def test_a_built_wheel_runs_the_demo_outside_the_checkout(tmp_path):
    """Build the wheel from a copy of the project, unpack it elsewhere, resolve the demo there."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", ".",
                    "-w", str(tmp_path / "wheel")], cwd=project, check=True, capture_output=True,
                   timeout=300)  # fmt: skip
    (wheel,) = (tmp_path / "wheel").glob("weight_compander-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "site")
    for packaged in ("weight_compander/harness/configs/demo.toml",
                     "weight_compander/harness/configs/demo-digits.toml", "weight_compander/kernels/tanh.c"):
        assert packaged in names  # fmt: skip
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    check = ("import weight_compander.harness.compare.demo as d; "
             "data, path, note = d.demo_config(quick=True); "
             "print(d.__file__); print(path); print(data['defaults']['dataset'])")  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([sys.executable, "-c", check], cwd=elsewhere, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tmp_path / "site")}, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    module, config, dataset = done.stdout.split()
    site = str(tmp_path / "site")
    assert module.startswith(site) and config.startswith(site) and dataset == "digits"
