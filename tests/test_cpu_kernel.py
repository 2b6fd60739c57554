"""The tanh compander's C kernel: built once, used on CPU float32, same results whatever the
thread count, and a torch fallback (with one warning) where it cannot be built."""

import os
import shutil
import warnings

import pytest
import torch

import weight_compander as wc
from weight_compander import cpu_kernel
from weight_compander.fused import fused_tanh, fused_tanh_torch

HAS_COMPILER = any(shutil.which(c) for c in (os.environ.get("CC") or "cc", "gcc", "clang"))


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
    first = cpu_kernel._build()

    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(cpu_kernel.subprocess, "run", no_compiling)
    assert cpu_kernel._build() == first


@pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler on this machine")
@pytest.mark.parametrize("rows", [1, 7])
def test_results_do_not_depend_on_the_number_of_threads(rows):
    """Several blocks per row, so the hyperparameter sums are combined across threads."""
    gen = torch.Generator().manual_seed(0)
    v0 = torch.randn(rows, 50_000, generator=gen) * 0.05
    grad_w = torch.randn(v0.shape, generator=gen)
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            v = v0.clone().requires_grad_()
            s, g, L = (h.clone().requires_grad_() for h in hypers(rows))
            w = fused_tanh(v, s.detach(), g, L)
            w.backward(grad_w)
            results.append([w.detach(), v.grad, g.grad, L.grad])
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
