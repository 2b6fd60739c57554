"""The README's Hugging Face Transformers and Lightning examples, and the examples of the guide
pages under docs/, run as written and say the truth."""

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
DEPLOY = README.parent / "docs" / "deploy.md"
MISSING = "the integrations extra is not installed: pip install -e '.[integrations]'"


def example(heading: str, page: Path = README) -> str:
    """The first python block of a section of the README (or of a guide page)."""
    section = page.read_text().split(f"\n## {heading}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def run(code: str, page: Path = README) -> dict:
    namespace: dict = {}
    exec(compile(code, str(page), "exec"), namespace)
    return namespace


@pytest.mark.filterwarnings("ignore::weight_compander.CompanderWarning", "ignore:'pin_memory' argument")
def test_transformers_example(tmp_path, monkeypatch, capsys):
    pytest.importorskip("transformers", reason=MISSING)
    monkeypatch.chdir(tmp_path)
    code = example("Hugging Face Transformers")
    ns = run(code)
    printed = capsys.readouterr().out
    assert re.search(r"# (companded [\d.]+% of the weight-matrix parameters)", code)[1] in printed
    tokens = torch.arange(20).view(2, 10)
    with torch.no_grad():
        assert torch.equal(ns["plain"].eval()(tokens).logits, ns["again"].eval()(tokens).logits)
    assert ns["model"].lm_head.weight.shape[0] == 1024
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["checkpoint-2", "checkpoint-4"]


@pytest.mark.filterwarnings(
    "ignore:.*does not have many workers",
    "ignore:.*LeafSpec.*is deprecated",
    "ignore:.*GPU available",
    "ignore:Checkpoint directory .* exists and is not empty",  # the example's resume, same folder
)
def test_lightning_example(tmp_path, monkeypatch):
    pytest.importorskip("lightning", reason=MISSING)
    monkeypatch.chdir(tmp_path)
    ns = run(example("Lightning"))
    x = torch.randn(3, 20)
    assert torch.equal(ns["plain"](x), ns["model"].net(x))
    assert len(list(__import__("weight_compander").hyperparameters(ns["model"]))) == 4


def test_paper_method_example():
    import weight_compander as wc

    ns = run(example("The paper's method"))
    model = ns["model"]
    assert [row["kind"] for row in wc.stats(model)] == ["arctan", "arctan"]
    assert {row["scale"] for row in wc.stats(model)} == {1.0}
    assert [n for n, _ in wc.named_hyperparameters(ns["learned"])] == ["0.weight.raw_a", "0.weight.raw_b"]
    assert isinstance(ns["adam"], wc.CompandedAdamW)
    assert model[0].parametrizations.weight.original.grad is not None


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_deploy_guide_export_example(tmp_path, monkeypatch):
    ort = pytest.importorskip("onnxruntime", reason="the dev extra is not installed: pip install -e '.[dev]'")
    pytest.importorskip("onnxscript", reason="the dev extra is not installed: pip install -e '.[dev]'")
    monkeypatch.chdir(tmp_path)
    ns = run(example("Export", DEPLOY), DEPLOY)
    x, model = ns["x"], ns["model"]
    assert "bake first: wc.remove(model)" in ns["refused"]
    with torch.no_grad():
        want = model(x)
    for path in ("companded.onnx", "model.onnx"):  # the companded and the baked export
        session = ort.InferenceSession(path)
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert torch.allclose(torch.from_numpy(got), want, atol=1e-6), path
    assert torch.allclose(torch.jit.load("companded.pt")(x), want, atol=1e-6)
    assert torch.allclose(torch.export.load("companded.pt2").module()(x), want, atol=1e-6)
    assert torch.equal(ns["scripted"](x), want)


@pytest.mark.filterwarnings("ignore::weight_compander.CompanderWarning")
def test_deploy_guide_peft_example(tmp_path, monkeypatch):
    pytest.importorskip("peft", reason=MISSING)
    monkeypatch.chdir(tmp_path)
    code = example("PEFT (LoRA)", DEPLOY)
    merge = "merged = model.merge_and_unload()"
    keep = "with torch.no_grad():\n    want = model(tokens).logits\n"  # the outputs before merging
    ns = run(code.replace(merge, keep + merge), DEPLOY)
    assert ns["names"] and all(".lora_" in n for n in ns["names"])
    with torch.no_grad():
        assert torch.allclose(ns["merged"](ns["tokens"]).logits, ns["want"], atol=1e-5)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
