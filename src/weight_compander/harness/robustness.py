"""`weight-compander robustness RUNS_DIR`: what a trained run does beyond clean test accuracy.

Evaluates finished runs without retraining: accuracy under input corruptions (distribution
shift, corruptions.py) and after pruning, quantization and noise of the effective weights
(redundancy, perturb.py), on the weights of the last epoch or of the best validation epoch
(``--weights``). The result goes into the run folder as ``robustness.json``, nothing else
there is written; `report` tables and plots it (robustness_report.py).

``robustness.json``::

    {"format": 1,
     "evaluations": {"final": {                      # one entry per --weights choice
        "suite": {"version": 1, "fingerprint": "…", "families": [...], "sparsities": [...], …},
        "weights": "final", "epoch": 10, "images": 2000, "test_images": 10000,
        "clean": {"acc": 0.91, "loss": 0.25},
        "results": [{"family": "corruption", "condition": "rotate", "level": 2, "acc": …, "loss": …},
                    {"family": "prune-global", "condition": "sparsity", "level": 0.9, …}, …],
        "summary": {"corruption": 0.74, "prune-global": 0.61, …},   # mean acc per family
        "seconds": 31.2, "threads": 2, "torch": "2.13.0", "evaluated": "2025-…"}}}

An entry is up to date when its suite version and fingerprint (a hash of every setting of
the suite and `SUITE_VERSION`) match; re-running skips such runs and re-evaluates the rest.
Each run's file is written atomically after its whole suite, so a crash loses at most the
run in progress and never leaves half a file.

Every condition is evaluated on the same fixed subset of the test set (``images``, default
2000, drawn with a constant seed; ``None``: all of it), so the suite fits its time budget and
every variant sees the same images; ``clean`` is the unperturbed accuracy on that subset.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import hashlib
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from . import checkpoint, corruptions, perturb
from .config import ConfigError, TrainConfig
from .progress import Progress

if TYPE_CHECKING:
    from .report import Run

__all__ = ["FAMILIES", "FILE", "SUITE_VERSION", "RobustnessError", "Suite", "evaluate_run", "evaluate_runs"]

SUITE_VERSION = 1  # bump when a corruption or perturbation changes how it computes
FILE = "robustness.json"
FAMILIES = ("corruption", "prune-global", "prune-layer", "quant-maxabs", "quant-mse", "weight-noise")
WEIGHTS = ("final", "best_val")
SUBSET_SEED = 7_777  # the test images every condition uses; constant, so every run gets the same
EVAL_BATCH = 250  # small batches stay in cache: measured faster than 1000 for the cnn here
# Torch threads while evaluating. Many short forward passes of a small net: on the shared
# 2-core machine here one thread gave 3,300-4,400 images/s, two threads 1,200-2,100 (the
# threads wait for each other when other processes hold a core); raise it on an idle machine.
THREADS = 1


class RobustnessError(ConfigError):
    """A bad suite setting, or nothing to evaluate; the message names the value."""


@dataclass(frozen=True)
class Suite:
    """What `robustness` evaluates; every default in one place (CLI flags and a compare
    config's ``robustness = {...}`` table use these names)."""

    families: tuple[str, ...] = FAMILIES
    corruptions: tuple[str, ...] | None = None  # None: every corruption that fits the data
    severities: tuple[int, ...] = (1, 2, 3)
    sparsities: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95)
    bits: tuple[int, ...] = (8, 4, 3, 2)
    weight_noise: tuple[float, ...] = (0.1, 0.25, 0.5)  # σ as a fraction of each tensor's std
    dense_ends: bool = False  # pruning keeps the first and last Linear/Conv layer dense
    images: int | str | None = 2000  # test images per condition (a fixed subset); None or "all": all
    weights: str = "final"  # final | best_val

    def __post_init__(self) -> None:
        for name in ("families", "corruptions", "severities", "sparsities", "bits", "weight_noise"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        bad = [f for f in self.families if f not in FAMILIES]
        if bad or not self.families:
            raise RobustnessError(f"unknown family {', '.join(map(repr, bad)) or '(none given)'}; "
                                  f"valid: {', '.join(FAMILIES)}")
        for name in self.corruptions or ():
            corruptions.get(name)  # raises, naming it and the valid ones
        for s in self.severities:
            if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 3:
                raise RobustnessError(f"severities: {s!r} is not one of 1, 2, 3")
        for s in self.sparsities:
            if isinstance(s, bool) or not isinstance(s, int | float) or not 0 < s < 1:
                raise RobustnessError(f"sparsities: {s!r} is not a fraction in (0, 1)")
        for b in self.bits:
            if isinstance(b, bool) or not isinstance(b, int) or not 2 <= b <= perturb.MAX_BITS:
                raise RobustnessError(f"bits: {b!r} is not an integer in 2..{perturb.MAX_BITS}")
        for s in self.weight_noise:
            if isinstance(s, bool) or not isinstance(s, int | float) or not s > 0:
                raise RobustnessError(f"weight_noise: {s!r} is not a fraction > 0 of a tensor's std")
        if self.images == "all":  # TOML has no None: a comparison file says images = "all"
            object.__setattr__(self, "images", None)
        if self.images is not None and (isinstance(self.images, bool) or not isinstance(self.images, int)
                                        or self.images < 1):
            raise RobustnessError(f"images: must be an integer >= 1 or \"all\" (the whole test set), "
                                  f"got {self.images!r}")
        if self.weights not in WEIGHTS:
            raise RobustnessError(f"weights: {self.weights!r} is not one of {', '.join(WEIGHTS)}")

    @classmethod
    def from_options(cls, options: dict[str, Any], *, source: str = "robustness") -> Suite:
        """From plain data (a TOML table); unknown keys are an error naming them."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise RobustnessError(f"{source}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(names)}")
        return cls(**options)

    def settings(self) -> dict[str, Any]:
        """Every setting but `weights` (which picks the entry), as JSON-able data."""
        out = dataclasses.asdict(self)
        out.pop("weights")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def fingerprint(self) -> str:
        text = json.dumps({"version": SUITE_VERSION, **self.settings()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def conditions(self, ndim: int) -> list[tuple[str, str, float]]:
        """(family, condition, level) for data with `ndim` spatial dims, in evaluation order."""
        out: list[tuple[str, str, float]] = []
        for family in self.families:
            if family == "corruption":
                names = [c for c in (self.corruptions or corruptions.corruption_names(ndim))
                         if corruptions.CORRUPTIONS[c].ndim == ndim]
                out += [(family, c, s) for c in names for s in self.severities]
            elif family.startswith("prune"):
                out += [(family, "sparsity", s) for s in self.sparsities]
            elif family.startswith("quant"):
                out += [(family, "bits", b) for b in self.bits]
            else:
                out += [(family, "sigma", s) for s in self.weight_noise]
        return out


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
    from . import train

    state = checkpoint.load_latest(run_dir)
    if state is None:
        raise RobustnessError(f"{run_dir} has no checkpoint to evaluate")
    cfg = TrainConfig.from_json(state["config"])
    torch.manual_seed(cfg.seed)
    model, _ = train.build_model(cfg, state["shape"])
    epoch = state["epoch"]
    if weights == "best_val":
        best = state.get("best") or {}
        if best.get("model") is None:
            raise RobustnessError(f"{run_dir} keeps no best-validation weights (trained before "
                                  "they were kept); evaluate it with --weights final")
        model.load_state_dict(best["model"])
        epoch = best["epoch"]
    else:
        model.load_state_dict(state["model"])
    return perturb.bake(model).eval(), cfg, epoch


def test_subset(cfg: TrainConfig, images: int | None, cache: dict | None = None) -> dict[str, Any]:
    """The fixed test subset of a run's data set, its normalization and pixel scale (cached:
    every run of a comparison shares them)."""
    from . import train

    key = (cfg.dataset, cfg.data_dir, cfg.val_size, cfg.train_subset, images)
    if cache is not None and key in cache:
        return cache[key]
    ds = train.load_data(cfg)
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
    from .train import evaluate

    start = time.perf_counter()
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
        "seconds": time.perf_counter() - start, "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "evaluated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


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
        entry = evaluate_run(run.path, suite, cache=cache, tick=lambda b=bar: b.update(1))
        bar.close()
        saved = read(run.path)
        saved = {"format": 1, "evaluations": {**saved.get("evaluations", {}), suite.weights: entry}}
        checkpoint.write_json(run.path / FILE, saved)
        families = "  ".join(f"{f} {100 * a:.1f}" for f, a in entry["summary"].items())
        log(f"[{i}/{len(todo)}] {run.variant} seed {run.seed}: clean {100 * entry['clean']['acc']:.1f}  "
            f"{families}  (% of {entry['images']} test images, {entry['seconds']:.0f} s)")
    return {"evaluated": len(todo), "skipped": len(runs) - len(todo) - len(blind),
            "no_checkpoint": len(blind)}


def _bar(out: Progress, desc: str, run: Run, suite: Suite) -> Any:
    if out.mode != "bars":
        from .progress import NullBar

        return NullBar()
    from tqdm.auto import tqdm

    ndim = len(run.config.get("meta", {}).get("data", {}).get("input_size", [0, 0]))
    return tqdm(total=1 + len(suite.conditions(ndim)), desc=desc, file=out.stream, leave=False,
                dynamic_ncols=True, unit="cond")


def _main(args: argparse.Namespace) -> int:
    from .report import find_runs
    from .robustness_report import summary_table

    options = {k: getattr(args, k) for k in ("families", "corruptions", "severities", "sparsities", "bits",
                                              "weight_noise", "images") if getattr(args, k) is not None}
    suite = Suite(**options, dense_ends=args.dense_ends, weights=args.weights)
    try:
        runs, incomplete = find_runs(args.runs_dir)
    except FileNotFoundError as err:
        raise RobustnessError(str(err)) from None
    if not runs:
        raise RobustnessError(f"no finished runs (final.json) in {args.runs_dir}"
                              f"{f'; {len(incomplete)} unfinished' if incomplete else ''}: train or "
                              "compare first, then evaluate")
    evaluate_runs(runs, suite, progress=not args.no_progress, force=args.force, threads=args.threads)
    print()
    print(summary_table(runs, suite.weights))
    return 0


def _list(kind: type) -> Callable[[str], list]:
    def parse(text: str) -> list:
        try:
            return [kind(s.strip()) for s in text.split(",") if s.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {kind.__name__}s, got {text!r}") from None

    return parse


def _images(text: str) -> int | None:
    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'all', got {text!r}") from None


def add_parser(subparsers: Any) -> None:
    """Register `robustness RUNS_DIR [options]`."""
    d = Suite()
    p = subparsers.add_parser(
        "robustness", help="accuracy under input corruptions, pruning, quantization and weight noise",
        description="Evaluate every finished run below RUNS_DIR (a comparison or one run folder) "
        "without retraining; results go to each run's robustness.json (runs evaluated with the "
        "same suite are skipped); `report` tables and plots them.")
    p.add_argument("runs_dir", type=Path, help="a compare --out folder, or one run folder")
    p.add_argument("--weights", choices=WEIGHTS, default=d.weights,
                   help="the last epoch's weights, or those of the best validation epoch [final]")
    p.add_argument("--families", type=_list(str), help=f"[{','.join(d.families)}]")
    p.add_argument("--corruptions", type=_list(str),
                   help=f"[all that fit the data: {','.join(corruptions.corruption_names())}]")
    p.add_argument("--severities", type=_list(int), help="corruption severities 1..3 [1,2,3]")
    p.add_argument("--sparsities", type=_list(float), help=f"[{','.join(map(str, d.sparsities))}]")
    p.add_argument("--bits", type=_list(int), help=f"[{','.join(map(str, d.bits))}]")
    p.add_argument("--weight-noise", type=_list(float),
                   help=f"noise std / each tensor's std [{','.join(map(str, d.weight_noise))}]")
    p.add_argument("--dense-ends", action="store_true", help="pruning keeps the first and last layer dense")
    p.add_argument("--images", type=_images, help=f"test images per condition, or 'all' [{d.images}]")
    p.add_argument("--force", action="store_true", help="re-evaluate runs that are up to date")
    p.add_argument("--threads", type=int, default=THREADS,
                   help=f"torch threads (one is fastest on a busy machine) [{THREADS}]")
    p.add_argument("--no-progress", action="store_true", help="plain lines instead of progress bars")
    p.set_defaults(func=_main)
