"""Which tanh implementation should CPU training use? Forward + backward of one companded weight.

    python benchmarks/kernel_choice.py                 # 1024x1024 and 784x1024, a few minutes
    python benchmarks/kernel_choice.py --json out.json # also write the numbers

Candidates, each on the same weight with per-tensor hyperparameters, fixed (no hyperparameter
gradients) and learnable (with them):

* ``C kernel``: ``fused_tanh`` on CPU float32, the ctypes kernel built at first use. A compiled
  extension built at install time would run the same C code; the time of a call on a 1-element
  weight (kernel vs torch path: autograd and argument handling, no arithmetic) bounds what
  calling it without ctypes could save.
* ``torch path``: ``fused_tanh_torch``, what runs without a C compiler (and on CUDA).
* ``torch.compile``: the torch path compiled by inductor (fused C++/OpenMP on CPU); its first
  call (compile time, in this process) is reported apart.

Blocks run interleaved (kernel, torch, compiled, kernel, ...) so machine noise hits all alike;
each time is the median block's time per call. The script also checks that every candidate
gives the kernel's values.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from overhead import machine
from weight_compander.fused import fused_tanh, fused_tanh_torch

SHAPES = ((1024, 1024), (784, 1024))


def step_timer(tanh: Callable, shape: tuple[int, ...], learnable: bool, calls: int) -> Callable[[], float]:
    """A function timing `calls` forward + backward passes; returns seconds per call."""
    gen = torch.Generator().manual_seed(0)
    v = (torch.randn(shape, generator=gen) * 0.05).requires_grad_()
    grad_w = torch.randn(shape, generator=gen)
    scale = torch.tensor(0.05)
    gain, limit = torch.tensor(1.5, requires_grad=learnable), torch.tensor(2.0, requires_grad=learnable)

    def one() -> None:
        tanh(v, scale, gain, limit).backward(grad_w)

    def timer() -> float:
        start = time.perf_counter()
        for _ in range(calls):
            one()
        return (time.perf_counter() - start) / calls

    timer.one = one  # type: ignore[attr-defined]
    return timer


def same_values(candidates: dict[str, Callable], shape: tuple[int, ...]) -> dict[str, float]:
    """Largest |difference| to the kernel of w, dL/dv, dL/dg, dL/dL (relative to the largest |value|)."""
    gen = torch.Generator().manual_seed(1)
    v0, grad_w = torch.randn(shape, generator=gen) * 0.05, torch.randn(shape, generator=gen)
    results = {}
    for name, tanh in candidates.items():
        v = v0.clone().requires_grad_()
        gain, limit = torch.tensor(1.5, requires_grad=True), torch.tensor(2.0, requires_grad=True)
        w = tanh(v, torch.tensor(0.05), gain, limit)
        w.backward(grad_w)
        results[name] = [w.detach(), v.grad, gain.grad, limit.grad]
    reference = results.pop("C kernel")
    return {
        name: max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(got, reference, strict=True))
        for name, got in results.items()
    }


def run(rounds: int, calls: int) -> dict:
    compiled = torch.compile(fused_tanh_torch, dynamic=False)
    candidates = {"C kernel": fused_tanh, "torch path": fused_tanh_torch, "torch.compile": compiled}
    results: dict = {"machine": machine(), "rounds": rounds, "calls_per_block": calls, "shapes": {}}
    for shape in SHAPES:
        entry: dict = {"first_call_s": {}}
        for hyper in ("fixed", "learnable"):
            learnable = hyper == "learnable"
            timers = {name: step_timer(f, shape, learnable, calls) for name, f in candidates.items()}
            for name, timer in timers.items():  # warm up; torch.compile compiles here, forward and backward
                first = time.perf_counter()
                timer.one()
                entry["first_call_s"][f"{name}, {hyper}"] = time.perf_counter() - first
            times: dict[str, list[float]] = {name: [] for name in timers}
            for _ in range(rounds):
                for name, timer in timers.items():
                    times[name].append(timer())
            entry[hyper] = {name: 1e3 * statistics.median(t) for name, t in times.items()}
        entry["max_relative_difference_to_kernel"] = same_values(candidates, shape)
        results["shapes"]["x".join(map(str, shape))] = entry
    eager = {"C kernel": fused_tanh, "torch path": fused_tanh_torch}
    tiny = {name: step_timer(f, (1,), True, 1000) for name, f in eager.items()}
    for timer in tiny.values():
        timer.one()
    per_call: dict[str, list[float]] = {name: [] for name in tiny}
    for _ in range(5):
        for name, timer in tiny.items():
            per_call[name].append(timer())
    results["call_overhead_us"] = {name: 1e6 * statistics.median(t) for name, t in per_call.items()}
    return results


def print_results(results: dict) -> None:
    print(f"machine: {results['machine']}")
    print(f"{results['rounds']} interleaved rounds of {results['calls_per_block']} forward+backward calls")
    print(f"{'shape':10} {'hyper':10} {'candidate':14} {'ms/call':>8} {'vs kernel':>9}")
    for shape, entry in results["shapes"].items():
        for hyper in ("fixed", "learnable"):
            kernel = entry[hyper]["C kernel"]
            for name, ms in entry[hyper].items():
                print(f"{shape:10} {hyper:10} {name:14} {ms:8.2f} {ms / kernel:9.2f}")
        first = {k: v for k, v in entry["first_call_s"].items() if k.startswith("torch.compile")}
        print(f"{shape:10} first call (compiles): " + ", ".join(f"{k} {v:.1f} s" for k, v in first.items()))
        for name, diff in entry["max_relative_difference_to_kernel"].items():
            print(f"{shape:10} {name} vs kernel, largest relative difference "
                  f"(w, dL/dv, dL/dg, dL/dL): {diff:.1e}")
    print("one call on a 1-element weight (forward+backward, learnable): " + ", ".join(
        f"{name} {us:.0f} µs" for name, us in results["call_overhead_us"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    results = run(args.rounds, args.calls)
    print_results(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
