"""The code's shape, checked: the library never imports the harness, no module reaches into
another's private names, and a training run reads as a short orchestration.

The harness's layer order and the absence of import cycles are import-linter contracts
(pyproject.toml, run by ``bash run.sh test``); these are the rules it cannot express.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import tomllib
from pathlib import Path

import grimp
import pytest

import weight_compander

SRC = Path(weight_compander.__file__).resolve().parent
PACKAGE = "weight_compander"
HARNESS = f"{PACKAGE}.harness"
MAX_RUN_LINES = 40


def modules() -> list[tuple[str, Path]]:
    """(dotted name, path) of every module of the package."""
    out = []
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out.append((name, path))
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses(module: str, path: Path) -> list[str]:
    """`from x import _y` and `x._y` (x one of our modules, imported here) in one module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    ours: set[str] = set()  # local names bound to our modules
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) \
                if node.level else (node.module or "")
            if not base.startswith(PACKAGE):
                continue
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{module}:{node.lineno} imports {base}.{alias.name}")
                if _is_package(base) and importlib.util.find_spec(f"{base}.{alias.name}"):
                    ours.add(alias.asname or alias.name)  # a module: `alias._x` is checked below
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE):
                    ours.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name)
                and node.value.id in ours):
            found.append(f"{module}:{node.lineno} uses {node.value.id}.{node.attr}")
    return found


def _is_package(name: str) -> bool:
    spec = importlib.util.find_spec(name)
    return spec is not None and spec.submodule_search_locations is not None


def test_no_module_imports_a_private_name_of_another():
    found = [line for name, path in modules() for line in private_uses(name, path)]
    assert not found, "private names used across modules (make them public or move the code):\n" + \
        "\n".join(found)


def test_the_private_name_check_finds_both_forms(tmp_path):
    path = tmp_path / "probe.py"
    path.write_text("from weight_compander.api import _register\nfrom weight_compander import api\n"
                    "api._remove_entries()\n")
    assert len(private_uses(f"{PACKAGE}.probe", path)) == 2


def test_the_library_does_not_import_the_harness():
    """So the library installs and imports with torch alone (the harness needs its extra)."""
    graph = grimp.build_graph(PACKAGE)
    library = sorted(m for m in graph.modules if not m.startswith(HARNESS) and m != f"{PACKAGE}.__main__")
    bad = [m for m in library if any(u.startswith(HARNESS) for u in graph.find_upstream_modules(m))]
    assert library and not bad, f"library modules that import the harness: {bad}"


def harness_layers() -> list[str]:
    """The layer order of pyproject.toml's import-linter contract, top first."""
    config = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")
    assert contract["containers"] == [HARNESS]
    return contract["layers"]


def test_the_layer_contract_holds_and_a_back_edge_breaks_it():
    """What `lint-imports` checks in `bash run.sh test`, and that it would catch a back-edge."""
    graph = grimp.build_graph(PACKAGE)
    layers = harness_layers()
    on_disk = {p.stem if p.suffix else p.name for p in (SRC / "harness").iterdir()
               if not p.name.startswith("__") and (p.suffix == ".py" or (p / "__init__.py").exists())}
    assert on_disk == set(layers), "every harness folder/module is a layer of the contract"
    assert not graph.find_illegal_dependencies_for_layers(layers, {HARNESS})
    graph.add_import(importer=f"{HARNESS}.ingredients.data", imported=f"{HARNESS}.run.train")
    assert graph.find_illegal_dependencies_for_layers(layers, {HARNESS})


def test_a_training_run_is_a_short_orchestration():
    from weight_compander.harness.run import train

    lines = inspect.getsource(train._run).splitlines()
    assert len(lines) <= MAX_RUN_LINES, f"train._run has {len(lines)} lines; move steps into run/loop.py"


@pytest.mark.parametrize("layer", ["ingredients", "config", "store", "run", "evaluate", "report",
                                   "compare", "cli"])
def test_every_harness_stage_is_a_documented_package(layer):
    init = SRC / "harness" / layer / "__init__.py"
    assert init.exists() and ast.get_docstring(ast.parse(init.read_text()))
