"""The C kernel of the tanh compander (and the paper's kinds) on CPU: built on first use, cached,
called through ctypes.

Why: a training step on a weight-heavy model is bound by memory traffic, and the exact tanh in
torch operations (``fused.py``) takes seven passes over the weights forward. The kernel
(``kernels/tanh.c``) takes one pass each way and is faster than the old inexact
``2*sigmoid(2u) - 1`` path (see docs/speed.md). The same file holds arctan, asinh, erf and
powerprop (``ODD_KINDS``), one pass each way too: one build, one cache entry.

It is plain C, with no torch or Python headers, so any C compiler builds it in under a second:
``$CC`` or ``cc``/``gcc``/``clang``, with ``-march=native`` and OpenMP where the compiler has
them. The library lands in ``$WEIGHT_COMPANDER_CACHE`` or ``~/.cache/weight_compander`` (the
temp folder where that is read-only), named by a hash of the source, the compiler, every flag
and the CPU's model and feature flags, so a home shared between machines keeps one build per CPU.

Safe on a shared machine: a library is loaded only from a folder that belongs to this user, that
no one else can write, and whose parent folders only this user or root can write (or are sticky,
like /tmp); any other folder is refused with one warning, and the kernel is built in a fresh
private temporary folder instead. A build goes to a scratch file renamed into place, under a file
lock, so N processes starting together (DDP ranks) compile once and the others wait, then load.

Where no compiler works, the torch path computes the same function (same laws, same precision),
slower on CPU, and one warning says so. ``WEIGHT_COMPANDER_KERNEL=0`` chooses the torch path
without a warning.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import torch
from torch import Tensor

from .exceptions import CompanderWarning

__all__ = ["ODD_KINDS", "TanhKernel", "kernel_status", "load"]

_FLAG_SETS = (  # tried in order; the first that compiles wins
    ["-march=native", "-fopenmp"],
    ["-fopenmp"],
    ["-march=native"],
    [],
)
_COMMON_FLAGS = ["-O3", "-std=c99", "-fPIC", "-shared", "-fno-math-errno"]
_CPUINFO = "/proc/cpuinfo"
_CPUINFO_FIELDS = ("model name", "flags", "Features", "CPU implementer", "CPU part")
_status = ""  # set by load()
Params = Tensor | ctypes.Array  # each row's s, g, L, k: see TanhKernel
ODD_KINDS = ("arctan", "asinh", "erf", "powerprop")  # wc_odd's kind numbers, in order


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
        self._odd = _entry(library.wc_odd, [c_int, p, p, p, i64, i64, p, p, c_int], c_int)

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

    def odd(self, kind: str, v: Tensor, params: Params, grad_w: Tensor | None = None, sums: bool = False):
        """A paper kind's ``w`` (``grad_w`` None), else dLoss/dv, and with ``sums`` also each row's two
        float64 sums of the hyperparameter gradients (shape ``(rows, 2)``; see ``kernels/tanh.c``).

        ``params`` holds each row's ``k``, ``c`` and ``alpha`` (and one unused value) as float64:
        ``w = c * phi(k * v)``, ``phi`` arctan, asinh, erf or ``sign(x) |x|^alpha``.
        """
        out = torch.empty_like(v)
        rows = params.shape[0] if isinstance(params, Tensor) else 1
        totals = torch.empty(rows, 2, dtype=torch.float64) if sums else None
        failed = self._odd(ODD_KINDS.index(kind), None if grad_w is None else grad_w.data_ptr(), v.data_ptr(),
                           out.data_ptr(), *_layout(v, params), None if totals is None else totals.data_ptr(),
                           torch.get_num_threads())  # fmt: skip
        if failed:
            raise MemoryError("weight_compander's kernel could not allocate its partial sums.")
        return (out, totals) if sums else out


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
        library, path = _library()
        kernel = TanhKernel(library)
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
    return [Path(root), Path(tempfile.gettempdir(), f"weight_compander-{os.geteuid()}")]


def _machine() -> str:
    """What a build depends on besides source and compiler: the architecture, and the CPU's model and
    feature flags (a ``-march=native`` build from another CPU in a shared home could SIGILL here)."""
    signature = [platform.machine(), platform.processor()]
    try:
        with open(_CPUINFO, encoding="utf-8", errors="replace") as cpuinfo:
            lines = [line for line in cpuinfo if line.startswith(_CPUINFO_FIELDS)]
    except OSError:
        lines = []
    for field in _CPUINFO_FIELDS:  # the first core's entries (x86: model name, flags; arm: Features, ...)
        signature.append(next((line.strip() for line in lines if line.startswith(field)), ""))
    return "\n".join(signature)


def _key(compiler: str) -> str:
    """Hash of everything the built library depends on: source, compiler, every flag, the CPU."""
    real = os.path.realpath(compiler)
    info = os.stat(real)  # an upgraded compiler builds anew
    parts = [_source(), real, info.st_size, info.st_mtime_ns, _COMMON_FLAGS, _FLAG_SETS, _machine()]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:20]


class _UnsafeFolder(Exception):
    """A folder in which someone other than this user could have put (or could swap) a library."""


def _private_folder(folder: Path) -> Path:
    """Create `folder` (mode 0700) if needed and return its real path, if a library there can only
    have been put there by this user; otherwise raise `_UnsafeFolder` saying why.

    Why: ``ctypes.CDLL`` runs the library's code in this process. The folder must be this user's
    and writable by no one else, and every folder above it writable only by this user or root (or
    sticky, like /tmp: then no one else can rename or replace what this user owns in it). The
    mode bits are checked; access control lists are not read.
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    real = folder.resolve()  # check (and later load from) the folders really used, not symlinks
    me = os.geteuid()
    info = os.stat(real)
    if info.st_uid != me:
        raise _UnsafeFolder(f"{real} belongs to uid {info.st_uid}, not to you (uid {me})")
    if info.st_mode & 0o022:
        raise _UnsafeFolder(f"{real} is writable by others (mode {stat.filemode(info.st_mode)})")
    for parent in real.parents:
        info = os.stat(parent)
        if info.st_uid not in (me, 0):
            raise _UnsafeFolder(f"{real} lies in {parent}, which belongs to uid {info.st_uid}")
        if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
            raise _UnsafeFolder(f"{real} lies in {parent}, which others can write "
                                f"(mode {stat.filemode(info.st_mode)})")  # fmt: skip
    return real


def _is_mine(path: Path) -> bool:
    """A regular file (not a link) of this user that no one else can write."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o022


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path`: one build at a time (the other processes wait, then load)."""
    import fcntl  # POSIX only, like the kernel's build

    handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with contextlib.suppress(OSError):  # no locks here (some NFS): parallel builds are atomic too
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # releases the lock


def _library() -> tuple[ctypes.CDLL, str]:
    """Load the kernel, built (once per source, compiler, flags and CPU) into a private cache folder.

    Returns the library and where it came from. A cache folder that others could write is
    refused; then a fresh folder only this process knows is used, and one warning names the
    refused folders.
    """
    if os.name != "posix":
        raise RuntimeError("the kernel is built on Linux and macOS only (it checks who owns its cache)")
    compiler = _compiler()
    name = f"tanh-{_key(compiler)}.so"
    refused: list[str] = []
    for folder in _cache_dirs():
        try:
            target = _private_folder(folder) / name
            if not _is_mine(target):
                with _locked(target.with_suffix(".lock")):
                    if not _is_mine(target):  # another process may have built it while this one waited
                        _compile(compiler, target)
        except _UnsafeFolder as why:
            refused.append(str(why))
            continue
        except OSError as error:  # e.g. a read-only home: try the next folder
            if error.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.EEXIST, errno.ENOTDIR):
                raise
            continue
        _warn_refused(refused, f"it is cached in {target.parent}")
        return ctypes.CDLL(str(target)), str(target)
    with tempfile.TemporaryDirectory(prefix="weight_compander-") as scratch:
        try:
            target = _compile(compiler, _private_folder(Path(scratch)) / name)
        except _UnsafeFolder as why:
            raise RuntimeError(f"no private folder to build in ({'; '.join([*refused, str(why)])})") from None
        library = ctypes.CDLL(str(target))  # the loaded code stays mapped once the file is gone
    _warn_refused(refused, "it was built for this process only, in a temporary folder")
    return library, f"{target} (private to this process, removed after loading)"


def _warn_refused(refused: list[str], instead: str) -> None:
    if refused:
        warnings.warn(
            f"weight_compander did not use its kernel cache: {'; '.join(refused)}; others could put a "
            f"library there that this process would run. {instead}. Fix: set WEIGHT_COMPANDER_CACHE to "
            "a folder of yours that only you can write (`chmod 700`), in folders only you or root can write.",
            CompanderWarning,
            stacklevel=4,
        )


def _compile(compiler: str, target: Path) -> Path:
    """Compile into a scratch folder beside `target`, then rename: others see no or a whole file."""
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        source_file = Path(scratch, "tanh.c")
        source_file.write_bytes(_source())
        built = Path(scratch, "tanh.so")
        for flags in _FLAG_SETS:
            command = [compiler, *_COMMON_FLAGS, *flags, str(source_file), "-o", str(built)]
            result = subprocess.run(command, capture_output=True, text=True, timeout=120)
            if result.returncode == 0:
                os.chmod(built, 0o700)
                os.replace(built, target)  # atomic
                return target
        last_line = (result.stderr.strip().splitlines() or ["?"])[-1]
        raise RuntimeError(f"{Path(compiler).name} failed: {last_line}")
