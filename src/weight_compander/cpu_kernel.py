"""The C kernel of the tanh compander on CPU: built on first use, cached, called through ctypes.

Why: a training step on a weight-heavy model is bound by memory traffic, and the exact tanh in
torch operations (``fused.py``) takes seven passes over the weights forward. The kernel
(``kernels/tanh.c``) takes one pass each way and is faster than the old inexact
``2*sigmoid(2u) - 1`` path (see the README's Speed section).

It is plain C, with no torch or Python headers, so any C compiler builds it in under a second:
``$CC`` or ``cc``/``gcc``/``clang``, with ``-march=native`` (the cache key includes this
machine's CPU flags) and OpenMP where the compiler has them. The library lands in
``$WEIGHT_COMPANDER_CACHE`` or ``~/.cache/weight_compander``. Where no compiler works, the
torch path computes the same function (same laws, same precision), slower on CPU, and one
warning says so. ``WEIGHT_COMPANDER_KERNEL=0`` chooses the torch path without a warning.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from importlib.resources import files
from pathlib import Path

import torch
from torch import Tensor

from .exceptions import CompanderWarning

__all__ = ["TanhKernel", "kernel_status", "load"]

_FLAG_SETS = (  # tried in order; the first that compiles wins
    ["-march=native", "-fopenmp"],
    ["-fopenmp"],
    ["-march=native"],
    [],
)
_COMMON_FLAGS = ["-O3", "-std=c99", "-fPIC", "-shared", "-fno-math-errno"]
_status = ""  # set by load()


class TanhKernel:
    """Typed entry points of the compiled library (float32, CPU, contiguous tensors)."""

    def __init__(self, library: ctypes.CDLL) -> None:
        p, i64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
        self._forward = library.wc_tanh_forward
        self._forward.argtypes = [p, p, i64, i64, p, p, c_int]
        self._forward.restype = None
        self._backward = library.wc_tanh_backward
        self._backward.argtypes = [p, p, p, i64, i64, p, p, p, c_int]
        self._backward.restype = None
        self._backward_sums = library.wc_tanh_backward_sums
        self._backward_sums.argtypes = [p, p, p, i64, i64, p, p, p, p, c_int]
        self._backward_sums.restype = c_int

    def forward(self, v: Tensor, k: Tensor, bound: Tensor) -> Tensor:
        """``w = bound * tanh(k * v)`` with k and bound one float32 per row (``rows = k.numel()``)."""
        w = torch.empty_like(v)
        rows = k.numel()
        self._forward(v.data_ptr(), w.data_ptr(), rows, v.numel() // rows, k.data_ptr(), bound.data_ptr(),
                      torch.get_num_threads())  # fmt: skip
        return w

    def backward(self, grad_w: Tensor, v: Tensor, k: Tensor, gain: Tensor) -> Tensor:
        """dLoss/dv (fixed hyperparameters); k and gain one float32 per row."""
        rows = k.numel()
        log4g, inv4g = torch.log(4 * gain), 1 / (4 * gain)
        grad_v = torch.empty_like(v)
        self._backward(grad_w.data_ptr(), v.data_ptr(), grad_v.data_ptr(), rows, v.numel() // rows,
                       k.data_ptr(), log4g.data_ptr(), inv4g.data_ptr(), torch.get_num_threads())  # fmt: skip
        return grad_v

    def backward_sums(self, grad_w: Tensor, v: Tensor, bound: Tensor, gain: Tensor) -> tuple[Tensor, Tensor]:
        """dLoss/dv and the per-row ``dLoss/dg`` and ``L * dLoss/dL`` (shape ``(rows, 2)``, float64);
        bound and gain one float64 per row."""
        rows = bound.numel()
        k = gain / bound
        grad_v = torch.empty_like(v)
        sums = torch.zeros(rows, 2, dtype=torch.float64)
        failed = self._backward_sums(
            grad_w.data_ptr(), v.data_ptr(), grad_v.data_ptr(), rows, v.numel() // rows, k.data_ptr(),
            bound.data_ptr(), gain.data_ptr(), sums.data_ptr(), torch.get_num_threads(),
        )  # fmt: skip
        if failed:
            raise MemoryError("weight_compander's tanh kernel could not allocate its partial sums.")
        return grad_v, sums


def kernel_status() -> str:
    """Whether the tanh compander's CPU kernel is in use, and if not, why (one line).

    Builds the kernel first if this process has not yet (a second or less, once per machine).
    """
    load()
    return _status


@functools.cache
def load() -> TanhKernel | None:
    """The kernel, built if needed; ``None`` (torch path) if disabled or it cannot be built."""
    global _status
    if os.environ.get("WEIGHT_COMPANDER_KERNEL", "1").strip().lower() in ("0", "false", "no", "off"):
        _status = "disabled by WEIGHT_COMPANDER_KERNEL=0: the tanh compander runs as torch operations"
        return None
    try:
        path = _build()
        kernel = TanhKernel(ctypes.CDLL(str(path)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        _status = f"unavailable ({error}): the tanh compander runs as torch operations"
        warnings.warn(
            f"weight_compander could not build its CPU kernel ({error}). The tanh compander runs as "
            "torch operations instead: same values, but a slower training step on CPU. Install a C "
            "compiler (gcc or clang) or point $CC at one; set WEIGHT_COMPANDER_KERNEL=0 to choose the "
            "torch path without this warning.",
            CompanderWarning,
            stacklevel=2,
        )
        return None
    _status = f"in use: {path}"
    return kernel


def _source() -> bytes:
    return files("weight_compander").joinpath("kernels", "tanh.c").read_bytes()


def _compiler() -> str:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        path = shutil.which(candidate) if candidate else None
        if path:
            return path
    raise RuntimeError("no C compiler found (tried $CC, cc, gcc, clang)")


def _cache_dirs() -> list[Path]:
    """Where the built kernel may go: the user's cache, then (read-only home) the temp folder."""
    root = os.environ.get("WEIGHT_COMPANDER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "weight_compander"
    )
    user = getattr(os, "getuid", lambda: "user")()
    return [Path(root), Path(tempfile.gettempdir(), f"weight_compander-{user}")]


def _machine() -> str:
    """What a -march=native build depends on: the architecture and the CPU's feature flags."""
    signature = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            signature += next((line for line in cpuinfo if line.startswith(("flags", "Features"))), "")
    except OSError:
        signature += platform.processor()
    return signature


def _build() -> Path:
    """Compile kernels/tanh.c into the cache (once per source, compiler and CPU) and return its path."""
    compiler, source = _compiler(), _source()
    parts = [source, compiler.encode(), _machine().encode(), repr(_FLAG_SETS).encode()]
    key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
    name = f"tanh-{key}.so"
    for folder in _cache_dirs():
        if (folder / name).exists():
            return folder / name
    unwritable = []
    for folder in _cache_dirs():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return _compile(compiler, source, folder / name)
        except OSError as error:  # e.g. a read-only home: try the next folder
            if error.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.EEXIST, errno.ENOTDIR):
                raise
            unwritable.append(f"{folder}: {error.strerror}")
    raise RuntimeError(f"no writable cache folder ({'; '.join(unwritable)})")


def _compile(compiler: str, source: bytes, target: Path) -> Path:
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        source_file = Path(scratch, "tanh.c")
        source_file.write_bytes(source)
        built = Path(scratch, "tanh.so")
        for flags in _FLAG_SETS:
            command = [compiler, *_COMMON_FLAGS, *flags, str(source_file), "-o", str(built)]
            result = subprocess.run(command, capture_output=True, text=True, timeout=120)
            if result.returncode == 0:
                os.replace(built, target)  # atomic: a concurrent build of the same key is identical
                return target
        last_line = (result.stderr.strip().splitlines() or ["?"])[-1]
        raise RuntimeError(f"{Path(compiler).name} failed: {last_line}")
