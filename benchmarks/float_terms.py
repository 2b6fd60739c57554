"""Would float32 terms make the learnable tanh's hyperparameter gradients cheap enough? One run.

    python benchmarks/float_terms.py                # 1024x1024 weight, 30 interleaved blocks
    python benchmarks/float_terms.py --json out.json

The library computes dLoss/dg and dLoss/dL as float64 sums of float64 terms. This times, on one
thread and in interleaved blocks (CPU time), three backward passes over one weight: the fixed
backward (no sums), the library's float64 terms, and float32 terms with float64 accumulators
(``benchmarks/float_terms.c``, an experiment built here with ``$CC`` or ``cc``), and measures both
sums' relative error against float64 autograd-free arithmetic on a random weight and on one whose
sums cancel to a few percent of their terms' root-sum-square. Not part of the library.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
# the C kernel's flags (cpu_kernel.py): without -fopenmp its "omp simd" float64 reductions do not vectorize
FLAGS = ["-O3", "-std=c99", "-fPIC", "-shared", "-fno-math-errno", "-march=native", "-fopenmp"]
GAIN, LIMIT, STD = 1.5, 2.0, 0.03  # the library's defaults, a deep layer's init std


def build(folder: str) -> ctypes.CDLL:
    compiler = os.environ.get("CC") or shutil.which("cc")
    if compiler is None:
        sys.exit("float_terms.py needs a C compiler ($CC or cc)")
    target = Path(folder) / "float_terms.so"
    subprocess.run([compiler, *FLAGS, str(HERE / "float_terms.c"), "-o", str(target)], check=True)
    lib = ctypes.CDLL(str(target))
    p, i64, d = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
    lib.wc_tanh_backward_float_sums.argtypes = [p, p, p, i64, d, d, p]
    lib.wc_tanh_backward_double_sums.argtypes = [p, p, p, i64, d, d, p]
    lib.wc_tanh_backward_fixed.argtypes = [p, p, p, i64, d, d]
    return lib


K = GAIN / (STD * LIMIT)  # u = k v


def backward(lib: ctypes.CDLL, name: str, grad_w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """dLoss/dg and dLoss/dL / s from one pass (zeros for "fixed", which computes dLoss/dv only)."""
    grad_v, sums = torch.empty_like(v), torch.zeros(2, dtype=torch.float64)
    args = (grad_w.data_ptr(), v.data_ptr(), grad_v.data_ptr(), v.numel(), K, GAIN)
    if name == "fixed":
        lib.wc_tanh_backward_fixed(*args)
    else:
        getattr(lib, f"wc_tanh_backward_{name}_sums")(*args, sums.data_ptr())
    return sums


def terms(v: torch.Tensor) -> torch.Tensor:
    """Each weight's factor in the two sums, in float64: v sech^2(u) and tanh(u) - u sech^2(u)."""
    u = v.double() * K
    sech2 = torch.cosh(u) ** -2
    return torch.stack([v.double() * sech2, torch.tanh(u) - u * sech2])


def cancelled(grad_w: torch.Tensor, v: torch.Tensor, share: float = 0.01) -> torch.Tensor:
    """grad_w changed so that each sum is about ``share`` of its terms' root-sum-square."""
    g = grad_w.double()
    for term in terms(v):
        g = g - (g @ term) / (term @ term) * term
        g = g + share * (g * term).norm() / (term @ term) * term
    return g.float()


def relative_errors(lib: ctypes.CDLL, grad_w: torch.Tensor, v: torch.Tensor) -> dict:
    """Each path's relative error in (dL/dg, dL/dL) against float64 arithmetic, and each sum over
    its terms' root-sum-square."""
    factors = terms(v)
    exact = factors @ grad_w.double()
    rss = (factors * grad_w.double()).norm(dim=1)
    errors = {
        name: ((backward(lib, name, grad_w, v) - exact).abs() / exact.abs()).tolist()
        for name in ("double", "float")
    }
    return {**errors, "sum_over_rss": (exact.abs() / rss).tolist()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=1024 * 1024, help="weights in the tensor")
    parser.add_argument("--blocks", type=int, default=30, help="interleaved blocks of 10 passes each")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.size < 2 or args.blocks < 1:
        parser.error("--size must be at least 2 and --blocks at least 1")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    v = torch.randn(args.size) * STD
    grad_w = torch.randn(args.size) * 1e-3
    with tempfile.TemporaryDirectory() as folder:
        lib = build(folder)
        times: dict[str, list[float]] = {"fixed": [], "double": [], "float": []}
        for _ in range(args.blocks):
            for name, series in times.items():
                start = time.process_time()
                for _ in range(10):
                    backward(lib, name, grad_w, v)
                series.append((time.process_time() - start) / 10)
        results = {
            "ms_per_million_weights": {n: 1e9 * statistics.median(t) / args.size for n, t in times.items()},
            "relative_error_random": relative_errors(lib, grad_w, v),
            "relative_error_cancelled": relative_errors(lib, cancelled(grad_w, v), v),
        }
    print_results(results, args.size, args.blocks)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def print_results(results: dict, size: int, blocks: int) -> None:
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    print(f"machine: {cpu}; torch {torch.__version__}; one thread; CPU time; {size} weights, "
          f"{blocks} interleaved blocks of 10 passes")
    for name, ms in results["ms_per_million_weights"].items():
        print(f"{name:7s} backward {ms:6.3f} ms per million weights")
    for case in ("random", "cancelled"):
        errors = dict(results[f"relative_error_{case}"])
        share = errors.pop("sum_over_rss")
        print(f"{case} weight (sum / root-sum-square of its terms: {share[0]:.2g}, {share[1]:.2g})")
        for name, (gain, limit) in errors.items():
            print(f"  {name:7s} terms: relative error dL/dg {gain:.1e}, dL/dL {limit:.1e}")


if __name__ == "__main__":
    raise SystemExit(main())
