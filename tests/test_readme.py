"""The code examples of the README and of every guide under docs/ run as written and say the
truth; the pages link only inside the repository, to files that exist."""

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
DOCS = README.parent / "docs"
LIBRARY, INTEGRATIONS, DEPLOY = DOCS / "library.md", DOCS / "integrations.md", DOCS / "deploy.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]  # the landing page and the guides
MISSING = "the integrations extra is not installed: pip install -e '.[integrations]'"
# (page, heading) of the examples that the tests below run with checks of their own
CHECKED = {(INTEGRATIONS, "Hugging Face Transformers"), (INTEGRATIONS, "Lightning"),
           (LIBRARY, "The paper's method"), (LIBRARY, "Learning the hyperparameters on validation data"),
           (DEPLOY, "Export"), (DEPLOY, "PEFT (LoRA)")}


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
    code = example("Hugging Face Transformers", INTEGRATIONS)
    ns = run(code, INTEGRATIONS)
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
    ns = run(example("Lightning", INTEGRATIONS), INTEGRATIONS)
    x = torch.randn(3, 20)
    assert torch.equal(ns["plain"](x), ns["model"].net(x))
    assert len(list(__import__("weight_compander").hyperparameters(ns["model"]))) == 4


def test_paper_method_example():
    import weight_compander as wc

    ns = run(example("The paper's method", LIBRARY), LIBRARY)
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


def test_validation_example_moves_only_the_hyperparameters_on_held_out_batches():
    import weight_compander as wc

    ns = run(example("Learning the hyperparameters on validation data", LIBRARY), LIBRARY)
    model, groups = ns["model"], ns["groups"]
    hyper = {id(h) for h in wc.hyperparameters(model)}
    assert hyper and not any(id(p) in hyper for g in groups for p in g["params"])
    assert ns["hyper_opt"].state  # it took steps


def python_blocks() -> list[tuple[Path, str, str]]:
    """(page, heading, code) of every python block of the landing page and the guides."""
    found = []
    for page in PAGES:
        heading = ""
        for part in re.split(r"(?m)^(##+ .*)$", page.read_text()):
            if part.startswith("##"):
                heading = part.lstrip("#").strip()
                continue
            found += [(page, heading, code) for code in re.findall(r"```python\n(.*?)```", part, re.DOTALL)]
    return found


@pytest.mark.parametrize(("page", "heading", "code"), [
    pytest.param(*block, id=f"{block[0].name}:{block[1]}") for block in python_blocks()
    if (block[0], block[1]) not in CHECKED
])
@pytest.mark.filterwarnings("ignore::weight_compander.CompanderWarning")
def test_every_other_example_runs(page, heading, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run(code, page)


def test_every_example_is_run_by_a_test():
    blocks = {(page, heading) for page, heading, _ in python_blocks()}
    assert blocks >= CHECKED, f"checked examples not found: {CHECKED - blocks}"
    assert (README, "Usage") in blocks and (LIBRARY, "Usage") in blocks


def links() -> list[tuple[Path, str]]:
    return [(page, target) for page in PAGES
            for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text())]


@pytest.mark.parametrize(("page", "target"), links(), ids=lambda v: getattr(v, "name", v))
def test_links_stay_in_the_repository_and_exist(page, target):
    assert not re.match(r"[a-z]+:", target), f"{page.name} links outside the repository: {target}"
    path = target.split("#", 1)[0]
    assert not path or (page.parent / path).exists(), f"{page.name}: {target} does not exist"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_prose_names_no_issues_or_machines_by_deixis(page):
    text = page.read_text()
    assert not re.search(r"\b[Ii]ssues? #?\d", text), f"{page.name} names an issue number"
    assert "this machine" not in text, f"{page.name}: name the machine (CPU, torch build) instead"
    assert not re.search(r"\b[0-9a-f]{40}\b", text), f"{page.name} names a commit hash"
