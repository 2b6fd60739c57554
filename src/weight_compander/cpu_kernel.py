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
Params = Tensor | ctypes.Array  # each row's s, g, L, k: see TanhKernel


class TanhKernel:
    """Typed entry points of the compiled library (float32, CPU, contiguous tensors).

    ``params`` holds each row's ``s``, ``g``, ``L`` and ``k = g / (s L)`` in float64: a tensor of
    shape ``(rows, 4)`` with one row per index of dim 0 of ``v``, or for per-tensor hyperparameters
    a ctypes array of the 4 values (built in a tenth of a tensor's time).
    """

    def __init__(self, library: ctypes.CDLL) -> None:
        p, i64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
        self._forward = _entry(library.wc_tanh_forward, [p, p, i64, i64, p, c_int], None)
        self._backward = _entry(library.wc_tanh_backward, [p, p, p, i64, i64, p, c_int], None)
        self._backward_sums = _entry(library.wc_tanh_backward_sums, [p, p, p, i64, i64, p, p, c_int], c_int)

    def forward(self, v: Tensor, params: Params) -> Tensor:
        """``w = s L tanh(k v)``."""
        w = torch.empty_like(v)
        self._forward(v.data_ptr(), w.data_ptr(), *_layout(v, params), torch.get_num_threads())
        return w

    def backward(self, grad_w: Tensor, v: Tensor, params: Params) -> Tensor:
        """dLoss/dv (fixed hyperparameters)."""
        grad_v = torch.empty_like(v)
        threads = torch.get_num_threads()
        self._backward(grad_w.data_ptr(), v.data_ptr(), grad_v.data_ptr(), *_layout(v, params), threads)
        return grad_v

    def backward_sums(self, grad_w: Tensor, v: Tensor, params: Params) -> tuple[Tensor, Tensor]:
        """dLoss/dv and each row's ``dLoss/dg`` and ``dLoss/dL`` (shape ``(rows, 2)``, float64)."""
        grad_v = torch.empty_like(v)
        sums = torch.empty(params.shape[0] if isinstance(params, Tensor) else 1, 2, dtype=torch.float64)
        failed = self._backward_sums(grad_w.data_ptr(), v.data_ptr(), grad_v.data_ptr(), *_layout(v, params),
                                     sums.data_ptr(), torch.get_num_threads())  # fmt: skip
        if failed:
            raise MemoryError("weight_compander's tanh kernel could not allocate its partial sums.")
        return grad_v, sums


def _layout(v: Tensor, params: Params) -> tuple[int, int, int | ctypes.Array]:
    """The C functions' (rows, inner, params) arguments."""
    if not isinstance(params, Tensor):
        return 1, v.numel(), params
    rows = params.shape[0]
    return rows, v.numel() // rows, params.data_ptr()


def _entry(function, argtypes: list, restype):
    """A ctypes function with its argument and result types set (checked and converted per call)."""
    function.argtypes, function.restype = argtypes, restype
    return function


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
