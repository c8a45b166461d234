"""serve/ is laid out by responsibility and its imports flow one way:
guard (keys, limits, hosts, audit, PHI) <- engines <- api (protocol, serving, gate, routes) <- gateway <- main.

A module may import from its own folder and the folders to its left, never to its right: the guard knows
nothing of engines or HTTP, an engine nothing of the routes, and the routes nothing of the gateway that
main puts in front of an upstream."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sm70.serve

SERVE = Path(sm70.serve.__file__).parent
LAYERS = ["guard", "engines", "api", "gateway", "top"]


def _layer(module: str) -> str:
    part = module.split(".")[2] if module.count(".") >= 2 else "top"
    return part if part in LAYERS else "top"


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sm70.serve"):
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("sm70.serve")]
    return found


MODULES = sorted(SERVE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SERVE)))
def test_imports_flow_one_way(path):
    rel = path.relative_to(SERVE).with_suffix("")
    own = _layer("sm70.serve." + ".".join(rel.parts))
    wrong = [f"{path.name}:{line} imports {name} ({_layer(name)} is right of {own})"
             for line, name in _imports(path) if LAYERS.index(_layer(name)) > LAYERS.index(own)]
    assert not wrong, "\n".join(wrong)


def test_no_folder_is_a_house():
    """STYLE.md: past about a dozen modules a folder has become a house."""
    for folder in [SERVE, *[p for p in SERVE.iterdir() if p.is_dir() and p.name != "__pycache__"]]:
        modules = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
        assert len(modules) <= 12, f"{folder} holds {len(modules)} modules"
