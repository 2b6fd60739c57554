"""Training-step overhead of weight companding, measured in one run with interleaved blocks.

    python benchmarks/overhead.py                 # full run (a few minutes on 2 cores)
    python benchmarks/overhead.py --json out.json # also write the numbers
    python benchmarks/overhead.py --torch-path    # also the tanh as torch operations (no C kernel)
    python benchmarks/overhead.py --before-issue-12  # also the inexact tanh used before issue 12
    python benchmarks/overhead.py --paper-kinds   # also arctan, asinh, erf, powerprop (absolute units)
    python benchmarks/overhead.py --floor         # also the learnable tanh with free hyperparameter sums
    python benchmarks/overhead.py --threads 1     # torch and the kernel on one thread
    python benchmarks/overhead.py --cpu-time      # time blocks by this process's CPU seconds

Three models, batch 128: a small CNN on 28x28 input (compute-bound), an MLP 784-1024-1024-10
(1.8 M weights, little compute per weight: the worst case for an elementwise reparameterization)
and a deep narrow MLP (50 Linear layers 64 wide: the fixed cost per companded tensor).
Variants: plain, companded (fixed), companded (learnable), weight_norm (a peer), and inference of
a plain vs a baked model. Blocks run interleaved (plain, wc, ..., plain, wc, ...) so machine
noise hits every variant alike; each ratio is the median block time over plain's.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

import weight_compander as wc
from tanh_before_issue12 import sigmoid_tanh
from tanh_sums_free import sums_free_tanh
from weight_compander.fused import fused_tanh_torch

BATCH = 128
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}  # --cpu-time: the process's CPU seconds
clock = CLOCKS["wall"]


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)
    )


def deep_narrow() -> nn.Module:
    """50 small Linear layers (64 wide): little arithmetic per layer, so each companded tensor's
    fixed cost per step (Python, autograd, the kernel call) shows, as in a deep narrow net."""
    hidden = [m for _ in range(48) for m in (nn.Linear(64, 64), nn.ReLU())]
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), *hidden, nn.Linear(64, 10))


MODELS: dict[str, Callable[[], nn.Module]] = {"cnn": small_cnn, "mlp": mlp, "deep": deep_narrow}


def with_weight_norm(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            weight_norm(module)
    return model


# The same tanh without the fused forward/backward: plain autograd through the expression,
# to show what the fused path buys; and the fused path as torch operations, which is what runs
# where the C kernel cannot be built (no C compiler) or is switched off.
_tanh = wc.get_kind("tanh")
wc.register_kind("tanh-autograd", _tanh.forward, _tanh.inverse, _tanh.hyperparameters, bound="limit")
wc.register_kind(
    "tanh-torch", _tanh.forward, _tanh.inverse, _tanh.hyperparameters, bound="limit", fused=fused_tanh_torch
)
wc.register_kind("tanh-sums-free", _tanh.forward, _tanh.inverse, _tanh.hyperparameters, bound="limit",
                 fused=sums_free_tanh)
wc.register_kind(
    "tanh-before-12", _tanh.forward, _tanh.inverse, _tanh.hyperparameters, bound="limit", fused=sigmoid_tanh
)

VARIANTS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "plain": lambda m: m,
    "wc fixed": lambda m: (wc.apply(m), m)[1],
    "wc learnable": lambda m: (wc.apply(m, learnable=True), m)[1],
    "wc learn (autograd)": lambda m: (wc.apply(m, kind="tanh-autograd", learnable=True), m)[1],
    "weight_norm": with_weight_norm,
}
TORCH_PATH_VARIANTS: dict[str, Callable[[nn.Module], nn.Module]] = {  # with --torch-path
    "wc fixed (torch path)": lambda m: (wc.apply(m, kind="tanh-torch"), m)[1],
    "wc learn (torch path)": lambda m: (wc.apply(m, kind="tanh-torch", learnable=True), m)[1],
}
PAPER = {"scale": 1.0, "a": 1.0, "b": 0.6}  # the paper's kinds in absolute units
PAPER_KIND_VARIANTS: dict[str, Callable[[nn.Module], nn.Module]] = {  # with --paper-kinds
    "arctan fixed": lambda m: (wc.apply(m, kind="arctan", **PAPER), m)[1],
    "arctan learnable": lambda m: (wc.apply(m, kind="arctan", learnable=True, **PAPER), m)[1],
    "asinh fixed": lambda m: (wc.apply(m, kind="asinh", **PAPER), m)[1],
    "erf fixed": lambda m: (wc.apply(m, kind="erf", **PAPER), m)[1],
    "powerprop fixed": lambda m: (wc.apply(m, kind="powerprop", scale=1.0), m)[1],
}
FLOOR_VARIANTS: dict[str, Callable[[nn.Module], nn.Module]] = {  # with --floor
    "wc learn (sums free)": lambda m: (wc.apply(m, kind="tanh-sums-free", learnable=True), m)[1],
}
BEFORE_12_VARIANTS: dict[str, Callable[[nn.Module], nn.Module]] = {  # with --before-issue-12
    "wc fixed (before #12)": lambda m: (wc.apply(m, kind="tanh-before-12"), m)[1],
    "wc learn (before #12)": lambda m: (wc.apply(m, kind="tanh-before-12", learnable=True), m)[1],
}


def train_step_timer(model: nn.Module, steps: int) -> Callable[[], float]:
    opt = torch.optim.SGD(wc.param_groups(model, weight_decay=5e-4), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(BATCH, 1, 28, 28)
    y = torch.randint(0, 10, (BATCH,))

    def block() -> float:
        start = clock()
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
        return (clock() - start) / steps

    return block


def inference_timer(model: nn.Module, steps: int) -> Callable[[], float]:
    model.eval()
    x = torch.randn(BATCH, 1, 28, 28)

    def block() -> float:
        start = clock()
        with torch.no_grad():
            for _ in range(steps):
                model(x)
        return (clock() - start) / steps

    return block


def interleaved(timers: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    for timer in timers.values():  # warm-up: allocator, caches, first-call overheads
        timer()
    times: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            times[name].append(timer())
    return {name: statistics.median(t) for name, t in times.items()}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    threads = torch.get_num_threads()
    kernel = "C kernel in use" if wc.kernel_status().startswith("in use") else "no C kernel"
    python = platform.python_version()
    timed = "CPU time" if clock is CLOCKS["cpu"] else "wall time"
    return f"{cpu}; {threads} threads; torch {torch.__version__}; Python {python}; {kernel}; {timed}"


def run(
    rounds: int, steps: int, torch_path: bool = False, before_12: bool = False, paper_kinds: bool = False,
    floor: bool = False,
) -> dict:
    results: dict = {"machine": machine(), "batch": BATCH, "rounds": rounds, "steps_per_block": steps}
    for model_name, build in MODELS.items():
        timers = {}
        variants = {**VARIANTS, **(TORCH_PATH_VARIANTS if torch_path else {})}
        variants |= BEFORE_12_VARIANTS if before_12 else {}
        variants |= PAPER_KIND_VARIANTS if paper_kinds else {}
        variants |= FLOOR_VARIANTS if floor else {}
        for variant, transform in variants.items():
            torch.manual_seed(0)
            timers[variant] = train_step_timer(transform(build()), steps)
        medians = interleaved(timers, rounds)
        torch.manual_seed(0)
        plain = build()
        baked = build()
        baked.load_state_dict(plain.state_dict())
        wc.apply(baked)
        wc.remove(baked, bake=True)
        inference = interleaved(
            {"plain": inference_timer(plain, steps), "baked": inference_timer(baked, steps)}, rounds
        )
        results[model_name] = {
            "train_step_ms": {k: 1e3 * v for k, v in medians.items()},
            "train_ratio": {k: v / medians["plain"] for k, v in medians.items() if k != "plain"},
            "inference_ms": {k: 1e3 * v for k, v in inference.items()},
            "inference_ratio_baked": inference["baked"] / inference["plain"],
        }
    return results


def print_results(results: dict) -> None:
    print(f"machine: {results['machine']}")
    rounds, steps = results["rounds"], results["steps_per_block"]
    print(f"batch {results['batch']}, {rounds} interleaved rounds of {steps} steps")
    print(f"{'model':<5} {'variant':<22} {'ms/step':>8} {'ratio':>6}")
    for model_name in MODELS:
        r = results[model_name]
        for variant, ms in r["train_step_ms"].items():
            ratio = r["train_ratio"].get(variant, 1.0)
            print(f"{model_name:<5} {variant:<22} {ms:8.2f} {ratio:6.2f}")
        inf = r["inference_ms"]
        print(f"{model_name:<5} {'infer plain':<22} {inf['plain']:8.2f} {1.0:6.2f}")
        print(f"{model_name:<5} {'infer baked':<22} {inf['baked']:8.2f} {r['inference_ratio_baked']:6.2f}")


def parse_args(
    doc: str | None, steps: int, argv: list[str] | None, torch_path: bool = False
) -> argparse.Namespace:
    """The command line every benchmark here shares: --rounds, --steps, --json, --threads (which it
    applies) and, for overhead.py, --torch-path and --before-issue-12."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--steps", type=int, default=steps, help=f"steps per block (default {steps})")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument(
        "--cpu-time", action="store_true",
        help="time blocks by this process's CPU seconds, not the wall clock: steadier where other jobs "
        "take the cores (waits for a core do not count; an OpenMP thread's spinning does)",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=int, help="torch's thread count (default: torch's; 1 is steadier on a busy machine)"
    )
    if torch_path:
        parser.add_argument(
            "--torch-path", action="store_true",
            help="also time the tanh as torch operations (what runs without the C kernel)",
        )  # fmt: skip
        parser.add_argument(
            "--before-issue-12", action="store_true",
            help="also time the inexact sigmoid-based tanh the library used before issue 12",
        )  # fmt: skip
        parser.add_argument(
            "--paper-kinds", action="store_true",
            help="also time the paper's kinds (arctan fixed and learnable, asinh, erf, powerprop; scale 1)",
        )  # fmt: skip
        parser.add_argument(
            "--floor", action="store_true",
            help="also time the learnable tanh with zero-cost hyperparameter gradients (the floor of any "
            "learnable step; wrong on purpose)",
        )  # fmt: skip
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    global clock
    clock = CLOCKS["cpu" if args.cpu_time else "wall"]
    return args


def write_json(results: dict, path: str | None) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=2)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__, 10, argv, torch_path=True)
    # Each variant trains on one fixed batch; within ~40 steps a model fits it, the loss and the
    # gradients underflow to denormal floats, and every operation on those costs an x86 core up to
    # 100x (arctan learnable went from 22 to 145 ms per step, its formula twin alike). Flushing them to
    # zero keeps the timing about the reparameterization, whichever variant gets there first.
    torch.set_flush_denormal(True)
    results = run(
        args.rounds, args.steps, args.torch_path, args.before_issue_12, args.paper_kinds, floor=args.floor
    )
    print_results(results)
    write_json(results, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
