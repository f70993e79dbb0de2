"""Imports point one way: ldfusion (library) <- calibration <- pipeline <- ldfusion_cli (shell).

Every module of every layer is parsed (not imported) and each import it makes, at the top or
inside a function, including ``importlib.import_module("...")`` with a literal name, is
checked against the layer it lives in.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

LAYERS = {"ldfusion": 0, "calibration": 1, "pipeline": 2, "ldfusion_cli": 3}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every absolute import in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
        elif isinstance(node, ast.Dict):  # a dispatch table of module names, imported later
            for value in node.values:
                for item in ast.walk(value):
                    if isinstance(item, ast.Constant) and isinstance(item.value, str) and _looks_like_module(item.value):
                        found.append((item.lineno, item.value))
    return found


def _looks_like_module(text: str) -> bool:
    head, dot, rest = text.partition(".")
    return head in LAYERS and bool(dot) and all(part.isidentifier() for part in rest.split("."))


def layer_violations(root: Path) -> list[str]:
    problems = []
    for package, rank in LAYERS.items():
        for path in sorted((root / package).rglob("*.py")):
            for line, module in imported_modules(path):
                top = module.split(".")[0]
                if LAYERS.get(top, -1) > rank:
                    problems.append(f"{path.relative_to(root)}:{line} imports {module} ({top} is above {package})")
    return problems


def test_no_module_imports_from_a_layer_above_its_own():
    assert layer_violations(REPO_ROOT) == []


@pytest.mark.parametrize(
    "source",
    [
        "from pipeline.runner import run_pipeline\n",
        "def f():\n    import calibration.cli\n",
        "import importlib\nimportlib.import_module('pipeline.demo')\n",
        "COMMANDS = {'run': ('pipeline.cli', 'run the pipeline')}\n",
    ],
)
def test_the_check_catches_every_kind_of_upward_import(tmp_path, source):
    for package in LAYERS:
        (tmp_path / package).mkdir()
    (tmp_path / "ldfusion" / "bad.py").write_text(source)
    (tmp_path / "pipeline" / "fine.py").write_text("from calibration.fileformat import Registration\n")
    problems = layer_violations(tmp_path)
    assert len(problems) == 1 and problems[0].startswith("ldfusion/bad.py:")
