"""The tanh compander's C kernel: built once, used on CPU float32, same results whatever the
thread count, and a torch fallback (with one warning) where it cannot be built; on a shared
machine it never loads a library another user could have put in its cache."""

import decimal
import os
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch

import weight_compander as wc
from weight_compander import cpu_kernel
from weight_compander.fused import fused_tanh, fused_tanh_torch

COMPILER = next(filter(None, map(shutil.which, (os.environ.get("CC") or "cc", "gcc", "clang"))), None)
HAS_COMPILER = COMPILER is not None


@pytest.fixture
def fresh_kernel(monkeypatch, tmp_path):
    """load() forgets its cached result, builds into tmp_path, and is reset afterwards."""
    monkeypatch.setenv("WEIGHT_COMPANDER_CACHE", str(tmp_path))
    cpu_kernel.load.cache_clear()
    yield tmp_path
    cpu_kernel.load.cache_clear()


def hypers(rows: int = 1):
    shape = () if rows == 1 else (rows, 1)
    return torch.full(shape, 0.05), torch.full(shape, 1.5), torch.full(shape, 3.0)


def backward_class(w: torch.Tensor) -> str:
    return type(w.grad_fn).__name__


@pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler on this machine")
def test_kernel_builds_into_the_cache_and_runs_cpu_float32(fresh_kernel):
    v = torch.randn(64, 32) * 0.05
    w = fused_tanh(v.requires_grad_(), *hypers())
    assert backward_class(w) == "_TanhKernelBackward"
    assert cpu_kernel.kernel_status().startswith("in use")
    assert len(list(fresh_kernel.glob("tanh-*.so"))) == 1
    # float64, non-contiguous and empty tensors take the torch path
    assert backward_class(fused_tanh(v.detach().double().requires_grad_(), *hypers())) == "_TanhTorchBackward"
    assert backward_class(fused_tanh(v.detach().t().requires_grad_(), *hypers())) == "_TanhTorchBackward"
    assert fused_tanh(torch.empty(0, 3), *hypers()).shape == (0, 3)


@pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler on this machine")
def test_a_built_kernel_is_reused_without_compiling(fresh_kernel, monkeypatch):
    first = cpu_kernel._library()[1]

    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(cpu_kernel.subprocess, "run", no_compiling)
    assert cpu_kernel._library()[1] == first


@pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler on this machine")
@pytest.mark.parametrize("kind", ["tanh", *cpu_kernel.ODD_KINDS])
@pytest.mark.parametrize("rows", [1, 7])
def test_results_do_not_depend_on_the_number_of_threads(rows, kind):
    """Several blocks per row, so the hyperparameter sums are combined across threads."""
    gen = torch.Generator().manual_seed(0)
    v0 = torch.randn(rows, 50_000, generator=gen) * 0.05
    grad_w = torch.randn(v0.shape, generator=gen)
    results = []
    threads = torch.get_num_threads()
    spec = wc.get_kind(kind)
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            v = v0.clone().requires_grad_()
            s, *hyper = (h.clone().requires_grad_() for h in hypers(rows))
            names = list(spec.hyperparameters)
            w = spec.compand(v, s.detach(), dict(zip(names, hyper[: len(names)], strict=True)))
            assert type(w.grad_fn).__name__ in ("_TanhKernelBackward", "_OddKernelBackward")
            w.backward(grad_w)
            results.append([w.detach(), v.grad, *(h.grad for h in hyper[: len(names)])])
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other, strict=True))


@pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler on this machine")
def test_an_unwritable_cache_falls_back_to_the_temp_folder(fresh_kernel, monkeypatch):
    blocker = fresh_kernel / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("WEIGHT_COMPANDER_CACHE", str(blocker / "cache"))
    monkeypatch.setattr(cpu_kernel.tempfile, "tempdir", str(fresh_kernel / "tmp"))
    (fresh_kernel / "tmp").mkdir()
    assert cpu_kernel.load() is not None
    assert list((fresh_kernel / "tmp").glob("weight_compander-*/tanh-*.so"))


def test_without_a_compiler_the_torch_path_runs_after_one_warning(fresh_kernel, monkeypatch):
    monkeypatch.setenv("CC", "no-such-compiler")
    monkeypatch.setenv("PATH", str(fresh_kernel))  # nothing to find
    v = torch.randn(100) * 0.05
    with pytest.warns(wc.CompanderWarning, match="could not build its CPU kernel.*no C compiler found"):
        w = fused_tanh(v.requires_grad_(), *hypers())
    assert backward_class(w) == "_TanhTorchBackward"
    assert torch.equal(w, fused_tanh_torch(v, *hypers()))
    assert "no C compiler found" in cpu_kernel.kernel_status()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once is enough
        fused_tanh(v, *hypers())


def test_a_failing_compiler_is_reported_and_the_torch_path_runs(fresh_kernel, monkeypatch):
    failing = fresh_kernel / "cc"
    failing.write_text("#!/bin/sh\necho 'cc: error: this compiler is broken' >&2\nexit 1\n")
    failing.chmod(0o755)
    monkeypatch.setenv("CC", str(failing))
    with pytest.warns(wc.CompanderWarning, match="this compiler is broken"):
        assert cpu_kernel.load() is None
    assert not list(fresh_kernel.glob("tanh-*.so"))


def test_disabled_by_the_environment_without_a_warning(fresh_kernel, monkeypatch):
    monkeypatch.setenv("WEIGHT_COMPANDER_KERNEL", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = fused_tanh(torch.randn(10).requires_grad_(), *hypers())
    assert backward_class(w) == "_TanhTorchBackward"
    assert cpu_kernel.kernel_status().startswith("disabled")


@pytest.mark.parametrize("kind", cpu_kernel.ODD_KINDS)
def test_paper_kinds_without_the_kernel_run_the_formula(fresh_kernel, monkeypatch, kind):
    """WEIGHT_COMPANDER_KERNEL=0 (or no compiler): the paper's kinds compute the formula itself, bit
    for bit as the kind without a fast path, with autograd's gradients."""
    monkeypatch.setenv("WEIGHT_COMPANDER_KERNEL", "0")
    spec = wc.get_kind(kind)
    hyper = {n: torch.tensor(h.default * 1.1, requires_grad=True) for n, h in spec.hyperparameters.items()}
    v = (torch.randn(8, 5) * 2).requires_grad_()
    s = torch.tensor(0.7)
    w = spec.compand(v, s, hyper)
    assert backward_class(w) != "_OddKernelBackward"
    assert torch.equal(w, s * spec.forward(v / s, **hyper))
    w.sum().backward()
    assert v.grad is not None and all(h.grad is not None for h in hyper.values())


def test_torch_compile_traces_the_torch_path():
    s, g, L = hypers()
    v = torch.randn(300) * 0.05
    compiled = torch.compile(lambda x: fused_tanh(x, s, g, L), backend="eager", fullgraph=True)
    assert torch.allclose(compiled(v), fused_tanh(v, s, g, L), rtol=1e-6, atol=0)


@pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler on this machine")
def test_special_values_match_the_torch_path():
    """±inf saturate at ±s·L, NaN stays NaN, signed zeros and subnormals keep slope g."""
    v = torch.tensor([float("inf"), -float("inf"), float("nan"), 0.0, -0.0, 1e-45, -1e-45, 3e38, -3e38])
    w = fused_tanh(v, *hypers())
    assert backward_class(fused_tanh(v.clone().requires_grad_(), *hypers())) == "_TanhKernelBackward"
    expected = fused_tanh_torch(v, *hypers())
    finite_or_inf = [0, 1, 3, 4, 5, 6, 7, 8]  # bit for bit, so -0 is told from +0
    assert torch.equal(w.view(torch.int32)[finite_or_inf], expected.view(torch.int32)[finite_or_inf])
    assert w[2].isnan() and w[0].item() == pytest.approx(0.15)


def one_weight_per_row() -> torch.Tensor:
    """Weights of both signs from 1e-38 to 3e38, one per row, so each row's hyperparameter sums are
    one weight's terms: the kernel's float64 exp(-2|u|) (a polynomial, not libm's) and arctan's one
    division for two quotients, checked across the float range, saturation included."""
    magnitudes = torch.logspace(-38, 38.4, 400, dtype=torch.float64).float()
    return torch.cat([magnitudes, -magnitudes]).view(-1, 1)


def tanh_minus_u_sech2(a: torch.Tensor) -> torch.Tensor:
    """tanh(a) - a sech^2(a) for a >= 0 in float64, to 1e-12 relative also where it cancels
    (2a^3/3 - ... as a -> 0): each value from 200-digit decimal arithmetic."""
    def exact(x: float) -> float:
        with decimal.localcontext() as ctx:
            ctx.prec = 200  # a^3 of a = 1e-41 from terms of size a: 2 x 41 digits cancel
            e = (-2 * decimal.Decimal(x)).exp()  # exp(-2a): tanh = (1 - e)/(1 + e), sech^2 = 4e/(1 + e)^2
            return float((1 - e) / (1 + e) - decimal.Decimal(x) * 4 * e / (1 + e) ** 2)
    return torch.tensor([exact(x) for x in a.tolist()], dtype=torch.float64)


def test_the_reference_difference_is_exact_where_it_cancels():
    a = torch.tensor([1e-30, 1e-8, 1e-3, 0.049, 0.051, 1.0, 30.0], dtype=torch.float64)
    series = 2 * a**3 / 3 - 8 * a**5 / 15 + 34 * a**7 / 105 - 496 * a**9 / 2835
    assert torch.allclose(tanh_minus_u_sech2(a)[:4], series[:4], rtol=1e-11, atol=0)
    big = a[4:]  # no cancellation to speak of: float64 libm agrees
    assert torch.allclose(tanh_minus_u_sech2(big), torch.tanh(big) - big / torch.cosh(big) ** 2, rtol=1e-13)


@pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler on this machine")
@pytest.mark.parametrize("k", [1e-3, 1.0, 37.5])
def test_tanh_hyperparameter_terms_match_float64_over_the_whole_range(k):
    v = one_weight_per_row()
    grad_w = torch.linspace(-1.0, 1.5, v.shape[0]).view(-1, 1)
    s, g = 0.05, 1.5
    params = torch.tensor([[s, g, g / (s * k), k]], dtype=torch.float64).expand(v.shape[0], 4).contiguous()
    grad_v, sums = cpu_kernel.load().backward_sums(grad_w, v, params)
    v64, grad64 = v.double().flatten(), grad_w.double().flatten()
    a = (v64 * k).abs()
    sech2 = torch.cosh(a).reciprocal().square()  # float64 libm; 0 where cosh overflows (|u| > 710)
    tiny = 1e-300 * (grad64 * v64).abs()  # the kernel stops exp at 2^-1000 (sech^2 = 4e-301, not 0)
    gain = grad64 * v64 * sech2
    assert ((sums[:, 0] - gain).abs() <= 1e-9 * gain.abs() + tiny).all()
    limit = s * grad64 * tanh_minus_u_sech2(a).copysign(v64)
    # below |u| = 0.05 the kernel sums the series (exact to 1e-11 where the difference cancels);
    # above, the polynomial's few 1e-11 (and 2e-10 |u| from its slope) remain: 7e-7 of it at 0.05
    polynomial = torch.where(a >= 0.05, (5e-11 + 3e-10 * a) * s * grad64.abs(), 0.0)
    assert ((sums[:, 1] - limit).abs() <= 1e-9 * limit.abs() + polynomial + tiny).all()
    grad_v64 = g * sech2 * grad64
    assert ((grad_v.double().flatten() - grad_v64).abs() <= 1e-6 * grad_v64.abs() + 1e-38).all()


@pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler on this machine")
@pytest.mark.parametrize("k", [1.0, 1e70])  # 1e70: |k v| above 1e100 too
def test_arctan_hyperparameter_terms_match_float64_over_the_whole_range(k):
    v = one_weight_per_row()
    grad_w = torch.linspace(-1.0, 1.5, v.shape[0]).view(-1, 1)
    c = 0.7
    params = torch.tensor([[k, c, 0.0, 0.0]], dtype=torch.float64).expand(v.shape[0], 4).contiguous()
    grad_v, sums = cpu_kernel.load().odd("arctan", v, params, grad_w, sums=True)
    x, signed = (v.double() * k).abs().flatten(), (grad_w.double() * v.double().sign()).flatten()
    slope = 1 / (1 + x * x)  # float64: x stays below 1e109 here
    assert torch.allclose(sums[:, 0], signed * torch.atan(x), rtol=1e-9, atol=0)
    assert torch.allclose(sums[:, 1], signed * x * slope, rtol=1e-9, atol=0)
    grad_v64 = grad_w.double().flatten() * c * k * slope  # below 1e-38, float32 rounds it to 0 or subnormal
    assert torch.allclose(grad_v.double().flatten(), grad_v64, rtol=1e-6, atol=1e-38)


# ---------------------------------------------------------------- a shared machine

PLANTED = r"""
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {  /* runs as soon as it is loaded */
    FILE *marker = fopen(MARKER, "w");
    if (marker) fclose(marker);
}
"""
NOBODY = 65534


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory) -> str:
    """The file name the loader looks for on this machine: anyone can compute it."""
    cache = tmp_path_factory.mktemp("real")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("WEIGHT_COMPANDER_CACHE", str(cache))
        cpu_kernel.load.cache_clear()
        assert cpu_kernel.load() is not None
    cpu_kernel.load.cache_clear()
    (built,) = cache.glob("tanh-*.so")
    return built.name


def plant(folder: Path, name: str, marker: Path) -> None:
    """Put a library at `folder/name` that creates `marker` when something loads it."""
    folder.mkdir(parents=True, exist_ok=True)
    source = folder.parent / "planted.c"
    source.write_text(PLANTED)
    command = [COMPILER, "-shared", "-fPIC", f'-DMARKER="{marker}"', str(source), "-o", str(folder / name)]
    subprocess.run(command, check=True, capture_output=True)


def make_unsafe(folder: Path, how: str) -> Path:
    """Give `folder` the flaw `how`; returns the folder the loader must refuse."""
    if how == "owned by another user":
        for path in (folder, *folder.iterdir()):
            os.chown(path, NOBODY, NOBODY)
    elif how == "group-writable":
        folder.chmod(0o770)
    elif how == "world-writable":
        folder.chmod(0o777)
    elif how == "in a folder others can write":
        folder.parent.chmod(0o777)  # no sticky bit: anyone can rename the folder and put their own
    return folder


HOWS = [
    pytest.param("owned by another user", marks=pytest.mark.skipif(
        os.geteuid() != 0, reason="making a folder another user's needs root (chown)")),
    "group-writable", "world-writable", "in a folder others can write",
]  # fmt: skip


@pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler on this machine")
@pytest.mark.parametrize("how", HOWS)
def test_a_library_planted_in_the_temp_folder_is_not_loaded(fresh_kernel, monkeypatch, kernel_name, how):
    """The attack: another user creates $TMPDIR/weight_compander-<uid> first, with a library at the
    predictable name, and waits for a training process whose home cache is read-only."""
    (fresh_kernel / "home").write_text("a file where the cache folder should be: not writable")
    monkeypatch.setenv("WEIGHT_COMPANDER_CACHE", str(fresh_kernel / "home" / "cache"))
    shared_tmp = fresh_kernel / "tmp" / "shared"
    shared_tmp.mkdir(parents=True)
    shared_tmp.chmod(0o1777)  # like /tmp: anyone may create entries, only their owner may rename them
    monkeypatch.setattr(cpu_kernel.tempfile, "tempdir", str(shared_tmp))
    marker = fresh_kernel / "planted-code-ran"
    folder = shared_tmp / f"weight_compander-{os.geteuid()}"
    plant(folder, kernel_name, marker)
    make_unsafe(folder, how)
    if how == "in a folder others can write":  # a temp folder without the sticky bit: nothing there is safe
        expected = r"could not build its CPU kernel \(no private folder to build in .* others can write"
    else:
        expected = r"did not use its kernel cache: .* built for this process only, in a temporary folder"
    with pytest.warns(wc.CompanderWarning, match=expected) as caught:
        kernel = cpu_kernel.load()
    assert len(caught) == 1
    assert not marker.exists()
    v = (torch.randn(64, 32) * 0.05).requires_grad_()
    w = fused_tanh(v, *hypers())
    if how == "in a folder others can write":
        assert kernel is None and backward_class(w) == "_TanhTorchBackward"
    else:
        assert kernel is not None and "private to this process" in cpu_kernel.kernel_status()
        assert backward_class(w) == "_TanhKernelBackward"
    torch.testing.assert_close(w, fused_tanh_torch(v, *hypers()), rtol=1e-6, atol=0)


@pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler on this machine")
@pytest.mark.parametrize("how", HOWS)
def test_an_unsafe_cache_folder_is_refused(fresh_kernel, monkeypatch, kernel_name, how):
    cache = fresh_kernel / "home" / "cache"
    monkeypatch.setenv("WEIGHT_COMPANDER_CACHE", str(cache))
    monkeypatch.setattr(cpu_kernel.tempfile, "tempdir", str(fresh_kernel / "tmp"))
    (fresh_kernel / "tmp").mkdir()
    marker = fresh_kernel / "planted-code-ran"
    plant(cache, kernel_name, marker)
    make_unsafe(cache, how)
    with pytest.warns(wc.CompanderWarning, match=f"did not use its kernel cache: {cache}.*cached in"):
        assert cpu_kernel.load() is not None
    assert not marker.exists()
    assert (fresh_kernel / "tmp" / f"weight_compander-{os.geteuid()}" / kernel_name).exists()


@pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler on this machine")
def test_a_new_cache_folder_is_private_and_a_safe_one_is_used_without_warning(fresh_kernel, monkeypatch):
    cache = fresh_kernel / "new" / "cache"
    monkeypatch.setenv("WEIGHT_COMPANDER_CACHE", str(cache))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cpu_kernel.load() is not None
    assert cache.stat().st_mode & 0o777 == 0o700
    (library,) = cache.glob("tanh-*.so")
    assert library.stat().st_mode & 0o022 == 0
    assert cpu_kernel.kernel_status() == f"in use: {library}"


def test_the_cache_key_covers_every_flag_and_the_cpu_model(tmp_path, monkeypatch):
    """A home shared over NFS by machines with different CPUs keeps one build per CPU."""
    cpuinfo = "processor\t: 0\nmodel name\t: {model}\nflags\t\t: fpu sse2 {flags}\n\n"
    keys = []
    for model, flags in [("CPU A", "avx2"), ("CPU B", "avx2"), ("CPU A", "avx2 avx512f")]:
        (tmp_path / "cpuinfo").write_text(cpuinfo.format(model=model, flags=flags) * 2)
        monkeypatch.setattr(cpu_kernel, "_CPUINFO", str(tmp_path / "cpuinfo"))
        keys.append(cpu_kernel._key(sys.executable))
    monkeypatch.setattr(cpu_kernel, "_COMMON_FLAGS", [*cpu_kernel._COMMON_FLAGS, "-ffast-math"])
    keys.append(cpu_kernel._key(sys.executable))
    assert len(set(keys)) == len(keys)


STARTER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import torch
    from weight_compander import cpu_kernel
    from weight_compander.fused import fused_tanh, fused_tanh_torch

    here = Path(sys.argv[1])
    (here / f"ready-{os.getpid()}").touch()
    while not (here / "go").exists():  # all start loading at once
        time.sleep(0.005)
    assert cpu_kernel.load() is not None, cpu_kernel.kernel_status()
    v, hyper = torch.linspace(-1, 1, 1001), (torch.tensor(0.05), torch.tensor(1.5), torch.tensor(2.0))
    torch.testing.assert_close(fused_tanh(v, *hyper), fused_tanh_torch(v, *hyper), rtol=1e-6, atol=0)
""")


@pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler on this machine")
def test_processes_starting_together_compile_once_and_all_load(tmp_path):
    """E.g. the ranks of a DDP job on one machine: one compiles, the others wait for it, then load."""
    counting = tmp_path / "cc"
    counting.write_text(f'#!/bin/sh\necho "$PPID" >> "{tmp_path}/compiled-by"\nexec "{COMPILER}" "$@"\n')
    counting.chmod(0o755)
    env = {**os.environ, "CC": str(counting), "WEIGHT_COMPANDER_CACHE": str(tmp_path / "cache")}
    env.pop("WEIGHT_COMPANDER_KERNEL", None)
    processes = [subprocess.Popen([sys.executable, "-c", STARTER, str(tmp_path)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(4)]  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("ready-*"))) < len(processes) and time.monotonic() < deadline:
            assert all(p.poll() is None for p in processes), [p.communicate()[0] for p in processes]
            time.sleep(0.01)
        (tmp_path / "go").touch()
        outputs = [p.communicate(timeout=120)[0] for p in processes]
    finally:
        for p in processes:
            p.kill()
    assert [p.returncode for p in processes] == [0] * len(processes), outputs
    compiled_by = set((tmp_path / "compiled-by").read_text().split())
    assert len(compiled_by) == 1, f"{len(compiled_by)} processes ran the compiler"
    assert len(list((tmp_path / "cache").glob("tanh-*.so"))) == 1
