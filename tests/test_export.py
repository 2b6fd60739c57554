"""Export of companded and baked models: torch.export, ONNX (both exporters, run with
onnxruntime), TorchScript and safetensors. Each works with the true weights or refuses with one
line that says what to do (``wc.remove(model)`` bakes: same outputs, a plain model)."""

import warnings

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

import weight_compander as wc
from weight_compander import fused

ort = pytest.importorskip("onnxruntime", reason="the dev extra is not installed: pip install -e '.[dev]'")
pytest.importorskip("onnxscript", reason="the dev extra is not installed: pip install -e '.[dev]'")


def mlp(kind: str = "tanh", bake: bool = False) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    wc.apply(model, kind=kind, learnable=True)
    with torch.no_grad():
        for h in wc.hyperparameters(model):
            h.add_(0.2)  # as if learned: f is not the one applying started with
    return wc.remove(model) if bake else model


X = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))


def run_onnx(path) -> torch.Tensor:
    session = ort.InferenceSession(str(path))
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: X.numpy()})[0])


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript-exporter", "dynamo-exporter"])
@pytest.mark.parametrize("bake", [False, True], ids=["companded", "baked"])
def test_onnx_export_computes_the_model_with_its_true_weights(dynamo, bake, tmp_path):
    model = mlp(bake=bake)
    with torch.no_grad():
        want = model(X)
    torch.onnx.export(model, (X,), tmp_path / "m.onnx", dynamo=dynamo)  # once wrote zero weights
    assert torch.allclose(run_onnx(tmp_path / "m.onnx"), want, atol=1e-6)


# absolute units for the paper's kinds, as their paper uses them
KIND_SETTINGS = {"arctan": dict(a=1.0, b=0.6, scale=1.0), "asinh": dict(a=1.0, b=0.6, scale=1.0),
                 "erf": dict(a=1.0, b=0.6, scale=1.0), "powerprop": dict(alpha=2.0, scale=1.0)}


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript-exporter", "dynamo-exporter"])
@pytest.mark.parametrize("kind", [k for k in wc.kinds() if not k.startswith("test-")])
def test_every_kind_exports_to_onnx_with_its_true_weights(kind, dynamo, tmp_path):
    """copysign (mulaw, powerprop) has no ONNX operator and the TorchScript exporter maps no
    asinh: each once failed to export with the exporter's own error."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    wc.apply(model, kind=kind, **KIND_SETTINGS.get(kind, {}))
    with torch.no_grad():
        want = model(X)
    torch.onnx.export(model, (X,), tmp_path / "m.onnx", dynamo=dynamo)
    assert torch.allclose(run_onnx(tmp_path / "m.onnx"), want, atol=1e-5)


def test_tracers_exporters_and_fake_tensors_never_get_the_c_kernel():
    """The kernel writes outside torch's view: a tracer would record an empty tensor (zero
    weights in an ONNX file, silently), and a fake tensor has no memory to write to."""
    hyper = torch.tensor(0.5), torch.tensor(1.5), torch.tensor(2.0)
    if wc.kernel_status().startswith("in use"):
        assert fused._kernel_for(X, *hyper) is not None  # outside a tracer the kernel runs
    seen = []

    def record(v):
        seen.append(fused._kernel_for(v, *hyper))
        return v * 2

    torch.jit.trace(record, (X,), check_trace=False)
    with FakeTensorMode() as mode:
        record(mode.from_tensor(X))
    assert seen == [None, None]


@pytest.mark.parametrize("kind", ["tanh", "mulaw"])
def test_torch_jit_trace_saves_and_loads_with_the_true_weights(kind, tmp_path):
    model = mlp(kind)
    traced = torch.jit.trace(model, (X,))
    torch.jit.save(traced, tmp_path / "m.pt")  # refused the C kernel's Python call before
    assert torch.allclose(torch.jit.load(tmp_path / "m.pt")(X), model(X), atol=1e-6)


def test_torch_jit_script_refuses_with_one_line_that_says_bake_first():
    model = mlp()
    with pytest.raises(RuntimeError, match=r"bake first: wc\.remove\(model\)"):
        torch.jit.script(model)
    scripted = torch.jit.script(wc.remove(model))  # the baked model scripts as any plain one
    assert torch.equal(scripted(X), model(X))


@pytest.mark.parametrize("bake", [False, True], ids=["companded", "baked"])
def test_torch_export_saves_and_loads_with_the_true_weights(bake, tmp_path):
    model = mlp(bake=bake)
    program = torch.export.export(model, (X,))
    torch.export.save(program, tmp_path / "m.pt2")
    assert torch.allclose(torch.export.load(tmp_path / "m.pt2").module()(X), model(X), atol=1e-6)


def test_safetensors_save_model_and_strict_load_model_with_tied_weights(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 8)
            self.head = nn.Linear(8, 10, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, tokens):
            return self.head(self.embed(tokens))

    def companded(seed):
        torch.manual_seed(seed)
        model = Tied()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", wc.CompanderWarning)
            wc.apply(model, include=[nn.Embedding, nn.Linear], learnable=True)
        return model

    tokens = torch.arange(10)
    model = companded(0)
    safetensors.save_model(model, tmp_path / "m.safetensors")  # keeps one name of the tied pair
    again = companded(1)
    safetensors.load_model(again, tmp_path / "m.safetensors")  # strict: was "Unexpected key(s)"
    assert torch.equal(again(tokens), model(tokens))
    plain = Tied()
    safetensors.load_model(plain, tmp_path / "m.safetensors", strict=False)
    assert torch.equal(plain(tokens), model(tokens))
