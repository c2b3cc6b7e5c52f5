"""The direction of dependencies the README's "Architecture" map promises, checked on the
source (every import, at module top or inside a function): ``cli -> workflows, deploy -> engine
-> components -> hosts``, with ``repository`` and ``state`` beside, knowing no component."""

from __future__ import annotations

import ast
from pathlib import Path

import aura_ops

PACKAGE = Path(aura_ops.__file__).parent


def _imports(package: str) -> set[tuple[str, str]]:
    """(module file, imported aura_ops module) for every import in ``aura_ops/<package>``."""
    found = set()
    for path in sorted((PACKAGE / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            found |= {(str(path.relative_to(PACKAGE)), name) for name in names if name.startswith("aura_ops.")}
    return found


def _reaching(package: str, layers: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{module} imports {name}"
        for module, name in _imports(package)
        if any(name == f"aura_ops.{layer}" or name.startswith(f"aura_ops.{layer}.") for layer in layers)
    )


ABOVE_STATE = ("components", "engine", "workflows", "deploy", "cli")


def test_the_repository_knows_no_component_and_nothing_above() -> None:
    assert _reaching("repository", ABOVE_STATE) == []


def test_the_state_knows_no_component_and_nothing_above() -> None:
    assert _reaching("state", ABOVE_STATE) == []


def test_the_engine_imports_nothing_of_deploy_workflows_or_cli() -> None:
    assert _reaching("engine", ("deploy", "workflows", "cli")) == []
