"""The seams the architecture promises (README "Architecture"), checked on the source itself.

Programs run only through a host (``aura_ops/hosts``); components, actions and the deploy code
touch files only through a host (or, for the repository's own folders, the repository). A new
direct call would bypass what a remote host or another storage backend has to provide.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import aura_ops

PACKAGE = Path(aura_ops.__file__).parent
FILE_OPERATIONS = {
    "access",
    "chmod",
    "chown",
    "close",
    "fstat",
    "fsync",
    "link",
    "listdir",
    "lstat",
    "makedirs",
    "mkdir",
    "mkfifo",
    "open",
    "read",
    "readlink",
    "remove",
    "rename",
    "replace",
    "rmdir",
    "scandir",
    "stat",
    "symlink",
    "truncate",
    "unlink",
    "utime",
    "walk",
    "write",
}
PATH_OPERATIONS = {"exists", "getsize", "isdir", "isfile", "islink", "lexists", "realpath"}
NO_FILE_ACCESS = ("components", "engine/actions", "deploy")
MAY_RUN_PROGRAMS = ("hosts", "dev")


def _modules(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (PACKAGE / folder).rglob("*.py"))


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return ""


def _file_access(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        parts = name.split(".")
        if (
            name in ("open", "io.open")
            or parts[0] == "shutil"
            or (parts[0] == "os" and len(parts) == 2 and parts[1] in FILE_OPERATIONS)
            or (parts[:2] == ["os", "path"] and len(parts) == 3 and parts[2] in PATH_OPERATIONS)
        ):
            where = path.relative_to(PACKAGE.parent) if path.is_relative_to(PACKAGE) else path.name
            found.append(f"{where}:{node.lineno}: {name}(")
    return found


@pytest.mark.parametrize("folder", NO_FILE_ACCESS)
def test_no_direct_file_access_outside_hosts(folder: str) -> None:
    found = [line for module in _modules(folder) for line in _file_access(module)]
    assert found == [], "file operations that bypass the host:\n" + "\n".join(found)


def test_programs_run_only_through_hosts() -> None:
    found = []
    for module in sorted(PACKAGE.rglob("*.py")):
        relative = module.relative_to(PACKAGE).as_posix()
        if relative.startswith(tuple(f"{folder}/" for folder in MAY_RUN_PROGRAMS)):
            continue
        for node in ast.walk(ast.parse(module.read_text(), str(module))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(name.split(".")[0] == "subprocess" for name in names):
                found.append(f"{relative}:{node.lineno}")
    assert found == [], "subprocess imported outside aura_ops/hosts: " + ", ".join(found)


def test_the_check_finds_a_direct_call(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os, shutil\nopen('x')\nos.link('a', 'b')\nshutil.rmtree('c')\nos.path.exists('d')\nos.fsdecode(b'e')\n"
    )
    found = [line.split(": ", 1)[1] for line in _file_access(probe)]
    assert found == ["open(", "os.link(", "shutil.rmtree(", "os.path.exists("]


COMPONENT_CONFIGS = {"PostgresConfig", "FilesConfig", "ReleaseConfig", "DockerConfig"}


def _type_checks(path: Path) -> list[str]:
    """Comparisons with a component type name (``== "postgres"``) and ``isinstance`` checks
    against a component's config class: how code outside the components tells types apart."""
    from aura_ops.components import REGISTRY

    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Compare):
            values = [node.left, *node.comparators]
            if any(isinstance(v, ast.Constant) and v.value in REGISTRY for v in values):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: compares with a type name")
        elif isinstance(node, ast.Call) and _name(node.func) == "isinstance" and len(node.args) == 2:
            classes = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
            named = {_name(c).rsplit(".", 1)[-1] for c in classes}
            if named & COMPONENT_CONFIGS:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: isinstance of {sorted(named)}")
    return found


def test_only_the_components_tell_component_types_apart() -> None:
    """The registry maps ``type:`` to a class; everything else calls the Component protocol."""
    outside = [
        module
        for module in sorted(PACKAGE.rglob("*.py"))
        if not module.relative_to(PACKAGE).as_posix().startswith(("components/", "dev/", "config.py"))
    ]
    found = [line for module in outside for line in _type_checks(module)]
    assert found == [], "type checks outside the components:\n" + "\n".join(found)
