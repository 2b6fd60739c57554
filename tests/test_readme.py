"""The README's Hugging Face Transformers and Lightning examples run as written, and say the truth."""

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
MISSING = "the integrations extra is not installed: pip install -e '.[integrations]'"


def example(heading: str) -> str:
    """The first python block of a README section."""
    section = README.read_text().split(f"\n## {heading}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def run(code: str) -> dict:
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
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
