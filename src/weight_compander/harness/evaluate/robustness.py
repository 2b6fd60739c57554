"""`weight-compander robustness RUNS_DIR`: what a trained run does beyond clean test accuracy.

Evaluates finished runs without retraining: accuracy under input corruptions (distribution
shift, corruptions.py) and after pruning, quantization and noise of the effective weights
(redundancy, perturb.py), on the weights of the last epoch or of the best validation epoch
(``--weights``). The result goes into the run folder as ``robustness.json``, nothing else
there is written; `report` tables and plots it (report/robustness.py).

``robustness.json``::

    {"format": 1,
     "evaluations": {"final": {                      # one entry per --weights choice
        "suite": {"version": 1, "fingerprint": "…", "families": [...], "sparsities": [...], …},
        "weights": "final", "epoch": 10, "images": 2000, "test_images": 10000,
        "clean": {"acc": 0.91, "loss": 0.25},
        "results": [{"family": "corruption", "condition": "rotate", "level": 2, "acc": …, "loss": …},
                    {"family": "prune-global", "condition": "sparsity", "level": 0.9, …}, …],
        "summary": {"corruption": 0.74, "prune-global": 0.61, …},   # mean acc per family
        "seconds": 31.2, "cpu_time": 58.0, "threads": 2, "torch": "2.13.0", "evaluated": "2025-…"}}}

An entry is up to date when its suite version and fingerprint (a hash of every setting of
the suite and `SUITE_VERSION`) match; re-running skips such runs and re-evaluates the rest.
Each run's file is written atomically after its whole suite, so a crash loses at most the
run in progress and never leaves half a file.

Every condition is evaluated on the same fixed subset of the test set (``images``, default
2000, drawn with a constant seed; ``None``: all of it), so the suite fits its time budget and
every variant sees the same images; ``clean`` is the unperturbed accuracy on that subset.
"""

from __future__ import annotations

import copy
import datetime
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from weight_compander.harness.config.settings import TrainConfig
from weight_compander.harness.config.suite import SUITE_VERSION, Suite
from weight_compander.harness.errors import RobustnessError
from weight_compander.harness.ingredients import corruptions, perturb
from weight_compander.harness.run import restore
from weight_compander.harness.run.metrics import evaluate
from weight_compander.harness.run.progress import NullBar, Progress
from weight_compander.harness.store import atomic, checkpoint

if TYPE_CHECKING:
    from weight_compander.harness.store.scan import Run

__all__ = ["FILE", "describe", "evaluate_and_save", "evaluate_run", "evaluate_runs", "is_current",
           "load_weights", "read"]

FILE = "robustness.json"

SUBSET_SEED = 7_777  # the test images every condition uses; constant, so every run gets the same
EVAL_BATCH = 250  # small batches stay in cache: measured faster than 1000 for the cnn here
# Torch threads while evaluating. Many short forward passes of a small net: on the shared
# 2-core machine here one thread gave 3,300-4,400 images/s, two threads 1,200-2,100 (the
# threads wait for each other when other processes hold a core); raise it on an idle machine.
THREADS = 1


# --------------------------------------------------------------------------- one run


def perturbed(model: nn.Module, family: str, level: float, suite: Suite) -> nn.Module:
    """A perturbed copy of the baked `model` (the original stays as it is)."""
    m = copy.deepcopy(model)
    if family.startswith("prune"):
        scope = family.removeprefix("prune-")
        return perturb.prune_model(m, level, scope=scope, dense_ends=suite.dense_ends)
    if family.startswith("quant"):
        return perturb.quantize_model(m, int(level), rule=family.removeprefix("quant-"))
    return perturb.add_noise(m, level)


def load_weights(run_dir: Path, weights: str) -> tuple[nn.Module, TrainConfig, int]:
    """The run's model with the chosen weights, baked (plain Parameters), in eval mode; its
    config; and the epoch the weights come from."""
    model, cfg, epoch = restore.restore(run_dir, weights)
    return perturb.bake(model).eval(), cfg, epoch


def test_subset(cfg: TrainConfig, images: int | None, cache: dict | None = None) -> dict[str, Any]:
    """The fixed test subset of a run's data set, its normalization and pixel scale (cached:
    every run of a comparison shares them)."""
    key = (cfg.dataset, cfg.data_dir, cfg.val_size, cfg.train_subset, images)
    if cache is not None and key in cache:
        return cache[key]
    ds = restore.load_data(cfg)
    n = len(ds.test_y)
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(SUBSET_SEED))[:images or n]
    idx = idx.sort().values
    out = {"x": ds.test_x[idx], "y": ds.test_y[idx], "mean": ds.mean, "std": ds.std, "test_images": n,
           "top": corruptions.pixel_max(cfg.dataset)}
    if cache is not None:
        cache[key] = out
    return out


def evaluate_run(
    run_dir: str | Path, suite: Suite, *, cache: dict | None = None,
    tick: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Evaluate one run with `suite`; return its entry (see the module docstring). Writes nothing."""
    start, start_cpu = time.perf_counter(), time.process_time()
    model, cfg, epoch = load_weights(Path(run_dir), suite.weights)
    data = test_subset(cfg, suite.images, cache)
    x, y = data["x"], data["y"]
    # channels-last evaluates a conv net ~2x faster on CPU; perturbations work on the plain
    # layout (prune's parameters_to_vector needs it), then the perturbed copy is converted
    fast = torch.channels_last if x.dim() == 4 else torch.contiguous_format

    def acc(m: nn.Module, inputs: Tensor) -> dict[str, float]:
        m = m.to(memory_format=fast)
        loss, accuracy = evaluate(m, inputs.contiguous(memory_format=fast), y, EVAL_BATCH)
        if tick is not None:
            tick()
        return {"acc": accuracy, "loss": loss}

    clean = acc(copy.deepcopy(model), x)
    model_fast = copy.deepcopy(model).to(memory_format=fast)
    pixels = corruptions.to_pixels(x, data["mean"], data["std"], data["top"])
    results = []
    for family, name, level in suite.conditions(x.dim() - 2):
        if family == "corruption":
            bad = corruptions.corrupt(pixels, name, int(level))
            r = acc(model_fast, corruptions.from_pixels(bad, data["mean"], data["std"], data["top"]))
        else:
            r = acc(perturbed(model, family, level, suite), x)
        results.append({"family": family, "condition": name, "level": level, **r})
    summary = {f: statistics.fmean(r["acc"] for r in results if r["family"] == f)
               for f in suite.families if any(r["family"] == f for r in results)}
    return {
        "suite": {"version": SUITE_VERSION, "fingerprint": suite.fingerprint(), **suite.settings()},
        "weights": suite.weights, "epoch": epoch, "images": len(y), "test_images": data["test_images"],
        "clean": clean, "results": results, "summary": summary,
        "seconds": time.perf_counter() - start, "cpu_time": time.process_time() - start_cpu,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "evaluated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def evaluate_and_save(
    run_dir: str | Path, suite: Suite, *, cache: dict | None = None,
    tick: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Evaluate one run and add its entry to the run's robustness.json (other entries kept).

    A comparison calls this right after each run, so a study stopped part way has the
    robustness of every run it finished (its checkpoints need not survive)."""
    entry = evaluate_run(run_dir, suite, cache=cache, tick=tick)
    saved = read(run_dir)
    saved = {"format": 1, "evaluations": {**saved.get("evaluations", {}), suite.weights: entry}}
    atomic.write_json(Path(run_dir) / FILE, saved)
    return entry


def describe(entry: dict[str, Any]) -> str:
    """One log line's worth of an entry: clean and each family's mean accuracy."""
    families = "  ".join(f"{f} {100 * a:.1f}" for f, a in entry["summary"].items())
    return (f"clean {100 * entry['clean']['acc']:.1f}  {families}  "
            f"(% of {entry['images']} test images, {entry['seconds']:.0f} s)")


def read(run_dir: str | Path) -> dict[str, Any]:
    """A run's robustness.json ({} if it has none)."""
    path = Path(run_dir) / FILE
    return json.loads(path.read_text()) if path.exists() else {}


def is_current(run_dir: str | Path, suite: Suite) -> bool:
    """True if the run holds an entry for this suite (same version and fingerprint)."""
    entry = read(run_dir).get("evaluations", {}).get(suite.weights, {})
    return (entry.get("suite", {}).get("version") == SUITE_VERSION
            and entry.get("suite", {}).get("fingerprint") == suite.fingerprint())


# --------------------------------------------------------------------------- many runs


def evaluate_runs(
    runs: Sequence[Run], suite: Suite, *, progress: bool | str = True, force: bool = False,
    log: Callable[[str], None] | None = None, threads: int | None = THREADS,
) -> dict[str, int]:
    """Evaluate every run that has no current entry; write each run's robustness.json.

    `threads`: torch threads meanwhile (None: leave torch's setting). Returns counts:
    evaluated, skipped (already current), no_checkpoint (not current, and nothing to evaluate:
    a run folder that kept only its small files; named in a log line).
    """
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _evaluate_runs(runs, suite, progress, force, log)
    finally:
        torch.set_num_threads(before)


def _evaluate_runs(
    runs: Sequence[Run], suite: Suite, progress: bool | str, force: bool, log: Callable[[str], None] | None
) -> dict[str, int]:
    out = Progress(progress)
    log = log or out.line
    if not runs:
        raise RobustnessError("no finished runs to evaluate")
    todo = [r for r in runs if force or not is_current(r.path, suite)]
    blind = [r for r in todo if not any((r.path / name).exists()  # e.g. a study's committed runs
                                        for name in (checkpoint.CHECKPOINT, checkpoint.PREVIOUS))]
    todo = [r for r in todo if r not in blind]
    log(f"robustness ({suite.weights} weights, suite v{SUITE_VERSION} {suite.fingerprint()}): "
        f"{len(runs)} finished runs, {len(runs) - len(todo) - len(blind)} already evaluated, "
        f"{len(todo)} to evaluate")
    if blind:
        log(f"robustness: {len(blind)} run(s) have no checkpoint, so they cannot be evaluated with "
            f"this suite: {', '.join(f'{r.variant}/seed{r.seed}' for r in blind)} (a study's committed "
            "runs keep no checkpoint: evaluate where they were trained, or delete a run's final.json "
            "to train it again)")
    cache: dict = {}
    for i, run in enumerate(todo, 1):
        bar = _bar(out, f"[{i}/{len(todo)}] {run.variant} seed {run.seed}", run, suite)
        entry = evaluate_and_save(run.path, suite, cache=cache, tick=lambda b=bar: b.update(1))
        bar.close()
        log(f"[{i}/{len(todo)}] {run.variant} seed {run.seed}: {describe(entry)}")
    return {"evaluated": len(todo), "skipped": len(runs) - len(todo) - len(blind),
            "no_checkpoint": len(blind)}


def _bar(out: Progress, desc: str, run: Run, suite: Suite) -> Any:
    if out.mode != "bars":
        return NullBar()
    from tqdm.auto import tqdm

    ndim = len(run.config.get("meta", {}).get("data", {}).get("input_size", [0, 0]))
    return tqdm(total=1 + len(suite.conditions(ndim)), desc=desc, file=out.stream, leave=False,
                dynamic_ncols=True, unit="cond")
