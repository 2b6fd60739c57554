"""`weight-compander demo`: the main job — baseline vs weight compander, in minutes on a CPU.

It is a `compare` of a built-in comparison (demo.toml: Fashion-MNIST; or demo-digits.toml
when Fashion-MNIST is not installed), followed by the report; it prints the accuracy table and
the robustness summary of its runs (a small, fixed set of test images, the comparison's
``robustness = {...}``). The two files are package data (``weight_compander/harness/configs/``),
so an installed copy runs the demo from any folder; the repository's ``configs/demo*.toml`` are
links to them. The same numbers come from ``weight-compander compare configs/demo.toml``, which
writes to the same folder, so finished runs are shared and skipped.
"""

from __future__ import annotations

import time
from importlib.resources import files
from pathlib import Path
from typing import Any

from weight_compander.harness.compare.runner import run_comparison
from weight_compander.harness.config.comparison import comparison_from_dict
from weight_compander.harness.config.settings import read_toml
from weight_compander.harness.config.suite import Suite
from weight_compander.harness.errors import CompareError
from weight_compander.harness.report.robustness import summary_table
from weight_compander.harness.report.tables import markdown_tables
from weight_compander.harness.store.scan import find_runs

__all__ = ["demo_config", "fashion_mnist_present", "run_demo"]

CONFIGS = Path(str(files("weight_compander.harness").joinpath("configs")))  # package data
IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
GET_FASHION = "sudo apt-get install dataset-fashion-mnist"


def fashion_mnist_present(folder: Path | None = None) -> bool:
    """True if the four Fashion-MNIST IDX files (gzipped or raw) are in `folder`."""
    folder = folder or _fashion_dir()
    return all((folder / s).exists() or (folder / f"{s}.gz").exists() for s in IDX_STEMS)


def _fashion_dir() -> Path:
    from weight_compander.harness.ingredients.data import FASHION_MNIST_DIR  # imports torch: only when needed

    return FASHION_MNIST_DIR


def demo_config(
    *, quick: bool = False, config: Path | None = None
) -> tuple[dict[str, Any], Path, str]:
    """The comparison the demo runs: parsed TOML, its path, and a line saying which data.

    `quick` (for tests): the digits comparison cut to one epoch.
    """
    if config is None:
        use_fashion = fashion_mnist_present() and not quick
        config = CONFIGS / ("demo.toml" if use_fashion else "demo-digits.toml")
        if use_fashion:
            note = f"data: Fashion-MNIST from {_fashion_dir()}"
        elif quick:
            note = "data: scikit-learn digits (--quick: 1 epoch, for tests)"
        else:
            note = (f"data: scikit-learn digits, because Fashion-MNIST is not in "
                    f"{_fashion_dir()}; for the real demo run `{GET_FASHION}` and re-run "
                    "`weight-compander demo`")
    else:
        note = f"comparison: {config}"
    data = read_toml(config, CompareError, "demo comparison")
    if quick:
        data["name"] = f"{data.get('name', 'demo')}-quick"
        data["defaults"] = {**data.get("defaults", {}), "epochs": 1}
    return data, config, note


def run_demo(
    *, out: Path | None = None, jobs: int = 2, quick: bool = False, config: Path | None = None,
    log: Any = print,
) -> int:
    """Run the demo comparison and its report, print the table; return an exit code."""
    data, source, note = demo_config(quick=quick, config=config)
    comparison = comparison_from_dict(data, source=str(source))
    out = Path(out) if out is not None else Path("runs") / comparison.name
    log(note)
    if not quick:  # --quick changes the TOML's epochs, so only the full demo is re-runnable so
        shown = source.relative_to(Path.cwd()) if source.is_relative_to(Path.cwd()) else source
        log(f"the same runs: weight-compander compare {shown} --jobs {jobs} --out {out}")
    start = time.perf_counter()
    summary = run_comparison(comparison, out, jobs=jobs, progress=False, log=log)
    runs, _ = find_runs(out)
    keep = [r for r in runs if r.variant in comparison.variants and r.seed in comparison.seeds]
    if keep:
        log("")
        log(markdown_tables(keep, comparison.baseline))
        if comparison.robustness is not None:  # the demo's own runs, beyond clean accuracy
            log(summary_table(keep, Suite.from_options(comparison.robustness).weights))
    log(f"demo took {time.perf_counter() - start:.0f} s; the runs used "
        f"{summary['runs_cpu_time']:.0f} s of CPU time; report with figures: {out / 'report.md'}")
    return 1 if summary["failed"] else 0
