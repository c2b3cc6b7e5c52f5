"""The direction of dependencies the README's "Architecture" map promises, checked on the
source (every import, at module top or inside a function): ``cli -> deploy -> workflows ->
engine -> components -> hosts``, with ``repository`` and ``state`` beside, knowing no component."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import aura_ops

PACKAGE = Path(aura_ops.__file__).parent


def _imports(package: str) -> set[tuple[str, str]]:
    """(module file, imported aura_ops module) for every import in ``aura_ops/<package>``."""
    found = set()
    for path in sorted((PACKAGE / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0:  # (none today: each would be read here)
                found.add((str(path.relative_to(PACKAGE)), "a relative import"))
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
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


def test_no_relative_import_hides_from_these_checks() -> None:
    assert [found for package in LAYERS for found in _imports(package) if found[1] == "a relative import"] == []


# The map from the top down: a package imports only packages below it (or beside it:
# ``repository`` and ``state`` below the components; the kernel modules below all).
LAYERS = ("cli", "deploy", "workflows", "engine", "components", "hosts")


def test_each_layer_imports_only_the_layers_below_it() -> None:
    """``cli -> deploy -> workflows -> engine -> components -> hosts``: nothing reaches up."""
    found = []
    for position, package in enumerate(LAYERS):
        found += _reaching(package, LAYERS[:position])
    assert found == []


def test_the_hosts_know_no_repository_and_no_state() -> None:
    assert _reaching("hosts", ("repository", "state", "retention")) == []


def test_the_retention_decision_is_pure() -> None:
    """``retention/`` (which snapshots a policy keeps) imports nothing of aura-ops' machinery."""
    machinery = (*LAYERS, "repository", "state", "config")
    assert _reaching("retention", machinery) == []


def test_the_check_sees_an_import_reaching_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "hosts").mkdir()
    (tmp_path / "hosts" / "probe.py").write_text(
        "from aura_ops.components import build\n\ndef f():\n    import aura_ops.engine.runner\n    from . import x\n"
    )
    monkeypatch.setattr(f"{__name__}.PACKAGE", tmp_path)
    assert _reaching("hosts", ("components", "engine")) == [
        "hosts/probe.py imports aura_ops.components",
        "hosts/probe.py imports aura_ops.components.build",
        "hosts/probe.py imports aura_ops.engine.runner",
    ]
    assert ("hosts/probe.py", "a relative import") in _imports("hosts")
