"""The seams the architecture promises (README "Architecture"), checked on the source itself.

Programs run only through a host (``aura_ops/hosts``); components, actions and the deploy code
touch files only through a host (or, for the repository's own folders, the repository). A new
direct call would bypass what a remote host or another storage backend has to provide.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

import aura_ops

PACKAGE = Path(aura_ops.__file__).parent
FILE_OPERATIONS = {
    "access",
    "chmod",
    "chown",
    "close",
    "fchmod",
    "fchown",
    "fdopen",
    "fstat",
    "fsync",
    "ftruncate",
    "getxattr",
    "lchown",
    "link",
    "listdir",
    "listxattr",
    "lstat",
    "makedirs",
    "mkdir",
    "mkfifo",
    "mknod",
    "open",
    "read",
    "readlink",
    "remove",
    "removedirs",
    "removexattr",
    "rename",
    "renames",
    "replace",
    "rmdir",
    "scandir",
    "setxattr",
    "stat",
    "statvfs",
    "symlink",
    "truncate",
    "unlink",
    "utime",
    "walk",
    "write",
}
PATH_OPERATIONS = {
    "exists",
    "getatime",
    "getctime",
    "getmtime",
    "getsize",
    "isdir",
    "isfile",
    "islink",
    "ismount",
    "lexists",
    "realpath",
    "samefile",
}
# Modules that exist to touch files: not imported at all where files go through the host.
FILE_MODULES = {"shutil", "tempfile", "glob", "fileinput", "filecmp"}
# ``pathlib.Path`` methods that touch the file system, told from the Host methods of the same
# name by their arguments (a Host method always takes the path first): called with no
# positional argument, or (second group) with exactly one.
PATH_METHODS_NO_ARGUMENT = {
    "absolute",
    "exists",
    "is_dir",
    "is_fifo",
    "is_file",
    "is_mount",
    "is_socket",
    "is_symlink",
    "iterdir",
    "lstat",
    "mkdir",
    "open",
    "read_bytes",
    "read_text",
    "readlink",
    "resolve",
    "rmdir",
    "stat",
    "touch",
    "unlink",
}
PATH_METHODS_ONE_ARGUMENT = {
    "chmod",
    "glob",
    "hardlink_to",
    "rename",
    "replace",
    "rglob",
    "samefile",
    "symlink_to",
    "write_bytes",
    "write_text",
}
# Calls that look like a Path's but are made on what a Host handed out (``Host.scandir``'s
# entries): module, and the call as written.
HOST_OBJECT_CALLS = {
    ("components/files/stored.py", "item.stat(follow_symlinks=False)"),
    ("components/files/stored.py", "item.is_dir(follow_symlinks=False)"),
}
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


def _path_method(node: ast.Call) -> bool:
    """A call of a ``pathlib.Path`` method that touches the file system (see above)."""
    if not isinstance(node.func, ast.Attribute):
        return False
    method, positional = node.func.attr, len(node.args)
    return (method in PATH_METHODS_NO_ARGUMENT and positional == 0) or (
        method in PATH_METHODS_ONE_ARGUMENT and positional == 1
    )


def _file_access(path: Path) -> list[str]:
    found = []
    where = path.relative_to(PACKAGE) if path.is_relative_to(PACKAGE) else path.name
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            imported = {m.split(".")[0] for m in modules} & FILE_MODULES
            if isinstance(node, ast.ImportFrom) and node.module in ("os", "os.path", "io"):
                imported |= {
                    f"{node.module}.{a.name}" for a in node.names if a.name in FILE_OPERATIONS | PATH_OPERATIONS
                }
            found += [f"{where}:{node.lineno}: import {name}" for name in sorted(imported)]
            continue
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        parts = name.split(".")
        if (
            name in ("open", "io.open")
            or parts[0] in FILE_MODULES
            or (parts[0] == "os" and len(parts) == 2 and parts[1] in FILE_OPERATIONS)
            or (parts[:2] == ["os", "path"] and len(parts) == 3 and parts[2] in PATH_OPERATIONS)
        ):
            found.append(f"{where}:{node.lineno}: {name}(")
        elif _path_method(node) and (str(where), ast.unparse(node)) not in HOST_OBJECT_CALLS:
            found.append(f"{where}:{node.lineno}: {ast.unparse(node.func)}( (a Path's file operation)")
    return found


@pytest.mark.parametrize("folder", NO_FILE_ACCESS)
def test_no_direct_file_access_outside_hosts(folder: str) -> None:
    found = [line for module in _modules(folder) for line in _file_access(module)]
    assert found == [], "file operations that bypass the host:\n" + "\n".join(found)


PROGRAM_MODULES = {"subprocess", "pty", "multiprocessing"}
PROGRAM_CALLS = {"system", "popen", "fork", "forkpty", "posix_spawn", "posix_spawnp"}


def _program_starts(path: Path) -> list[str]:
    """Where ``path`` imports a module that starts programs, or starts one through ``os`` or
    asyncio."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Call):
            parts = _name(node.func).split(".")
            if (
                parts[0] == "os"
                and len(parts) == 2
                and (parts[1] in PROGRAM_CALLS or parts[1].startswith(("exec", "spawn")))
            ) or (parts[-1].startswith("create_subprocess_")):
                found.append(f"{node.lineno}: {'.'.join(parts)}(")
        if any(name.split(".")[0] in PROGRAM_MODULES for name in names):
            found.append(f"{node.lineno}: import {', '.join(names)}")
    return found


def test_programs_run_only_through_hosts() -> None:
    found = []
    for module in sorted(PACKAGE.rglob("*.py")):
        relative = module.relative_to(PACKAGE).as_posix()
        if relative.startswith(tuple(f"{folder}/" for folder in MAY_RUN_PROGRAMS)):
            continue
        found += [f"{relative}:{line}" for line in _program_starts(module)]
    assert found == [], "programs started outside aura_ops/hosts: " + ", ".join(found)


def test_the_program_check_finds_every_way_to_start_one(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import subprocess\nfrom multiprocessing import Process\nos.system('x')\nos.execvp('x', [])\n"
        "asyncio.create_subprocess_exec('x')\nos.getpid()\n"
    )
    assert [line.split(": ", 1)[1] for line in _program_starts(probe)] == [
        "import subprocess",
        "import multiprocessing",
        "os.system(",
        "os.execvp(",
        "asyncio.create_subprocess_exec(",
    ]


def test_the_check_finds_a_direct_call(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os, shutil\nopen('x')\nos.link('a', 'b')\nshutil.rmtree('c')\nos.path.exists('d')\nos.fsdecode(b'e')\n"
    )
    found = [line.split(": ", 1)[1] for line in _file_access(probe)]
    assert found == ["import shutil", "open(", "os.link(", "shutil.rmtree(", "os.path.exists("]


def test_the_check_finds_path_methods_tempfiles_and_imported_names(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import tempfile\nfrom os import unlink\nfrom pathlib import Path\n"
        "Path('a').read_text()\nPath('b').write_bytes(b'')\nPath('c').mkdir(parents=True)\nfolder.iterdir()\n"
        "tempfile.mkdtemp()\nos.fdopen(3)\nos.path.getmtime('d')\n"
        # what a host is asked, and what only looks alike, passes
        "host.read_text('e')\nhost.mkdir('f', parents=True)\nhost.rename('g', 'h')\nkey.replace('_', ' ')\n"
        "match.group(1)\n"
    )
    found = [line.split(": ", 1)[1] for line in _file_access(probe)]
    assert found == [
        "import tempfile",
        "import os.unlink",
        "Path('a').read_text( (a Path's file operation)",
        "Path('b').write_bytes( (a Path's file operation)",
        "Path('c').mkdir( (a Path's file operation)",
        "folder.iterdir( (a Path's file operation)",
        "tempfile.mkdtemp(",
        "os.fdopen(",
        "os.path.getmtime(",
    ]


COMPONENT_CONFIGS = {"PostgresConfig", "FilesConfig", "ReleaseConfig", "DockerConfig"}


def _type_checks(path: Path) -> list[str]:
    """Comparisons with a component type name (``== "postgres"``) and ``isinstance`` checks
    against a component's config class: how code outside the components tells types apart."""
    from aura_ops.components import REGISTRY

    found = []
    where = path.relative_to(PACKAGE) if path.is_relative_to(PACKAGE) else path.name
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Compare):
            values = [node.left, *node.comparators]
            values += [e for v in values if isinstance(v, ast.Tuple | ast.List | ast.Set) for e in v.elts]
            if any(isinstance(v, ast.Constant) and v.value in REGISTRY for v in values):
                found.append(f"{where}:{node.lineno}: compares with a type name")
        elif isinstance(node, ast.MatchValue) and isinstance(node.value, ast.Constant) and node.value.value in REGISTRY:
            found.append(f"{where}:{node.lineno}: matches a type name")
        elif isinstance(node, ast.Call) and _name(node.func) == "isinstance" and len(node.args) == 2:
            classes = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
            named = {_name(c).rsplit(".", 1)[-1] for c in classes}
            if named & COMPONENT_CONFIGS:
                found.append(f"{where}:{node.lineno}: isinstance of {sorted(named)}")
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


def test_the_type_check_finds_comparisons_memberships_and_matches(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "if kind == 'postgres': pass\nif kind in ('files', 'x'): pass\nif kind != 'other': pass\n"
        "match kind:\n    case 'docker': pass\n"
        "if isinstance(section, PostgresConfig): pass\n"
    )
    found = [line.split(": ", 1)[1] for line in _type_checks(probe)]
    assert found == [
        "compares with a type name",
        "compares with a type name",
        "isinstance of ['PostgresConfig']",
        "matches a type name",
    ]


HOST_CLASSES = {"LocalHost", "FakeHost", "SshHost"}


def test_hosts_are_made_only_by_the_inventory() -> None:
    """No module builds a host of its own: hosts come from the configuration's inventory
    (``hosts/inventory.py``) and are passed down (the demo, sandbox and bench are exempt)."""
    found = []
    for module in sorted(PACKAGE.rglob("*.py")):
        relative = module.relative_to(PACKAGE).as_posix()
        if relative.startswith(("hosts/", "dev/")):
            continue
        for node in ast.walk(ast.parse(module.read_text(), str(module))):
            if isinstance(node, ast.Call) and _name(node.func).rsplit(".", 1)[-1] in HOST_CLASSES:
                found.append(f"{relative}:{node.lineno}: {_name(node.func)}(")
    assert found == [], "hosts built outside the inventory:\n" + "\n".join(found)


# Exceptions a module raises and catches itself (never reaching a user), the one deliberate
# BaseException (errors.Interrupted: see its docstring), and the FakeHost's failure of a unit
# test (an AssertionError, so that no ``except AuraError`` in the code under test hides it).
INTERNAL_EXCEPTIONS = {"_SwapRefused", "_Unordered", "_PreviousChanged", "_Refused", "_Interruption", "Interrupted"}
INTERNAL_EXCEPTIONS |= {"UnexpectedCommand"}


def test_every_exception_aura_ops_defines_derives_from_aura_error() -> None:
    """One error root: an exception class defined in aura_ops is an ``AuraError`` (directly or
    through another aura_ops class), unless it is a private carrier its module catches."""
    bases: dict[str, list[str]] = {}
    where: dict[str, str] = {}
    for module in sorted(PACKAGE.rglob("*.py")):
        relative = module.relative_to(PACKAGE).as_posix()
        if relative.startswith("dev/"):
            continue
        for node in ast.walk(ast.parse(module.read_text(), str(module))):
            if isinstance(node, ast.ClassDef):
                bases[node.name] = [_name(b).rsplit(".", 1)[-1] for b in node.bases]
                where[node.name] = f"{relative}:{node.lineno}"

    def rooted(name: str, seen: frozenset[str] = frozenset()) -> bool | None:
        """True: an AuraError; False: an exception not rooted there; None: not an exception."""
        if name == "AuraError":
            return True
        if name in ("Exception", "BaseException") or name.endswith(("Error", "Interrupt")) and name not in bases:
            return False
        if name not in bases or name in seen:
            return None
        found = [rooted(base, seen | {name}) for base in bases[name]]
        return True if True in found else (False if False in found else None)

    outside = sorted(
        f"{where[name]}: {name}" for name in bases if name not in INTERNAL_EXCEPTIONS and rooted(name) is False
    )
    assert outside == [], "exceptions outside the AuraError root:\n" + "\n".join(outside)
    assert rooted("CommandFailed") and rooted("CheckFailed") and rooted("SwapConflict")  # the check sees a root


# Libraries kept out of start-up, imported inside the function that needs them (README
# "Architecture"), and the standard modules an error path or a rare branch imports late.
HEAVY = {"psycopg", "docker", "requests", "boto3", "botocore", "fabric", "paramiko", "rich", "jinja2"}
HEAVY |= {"zstandard", "tenacity", "pydantic", "yaml"}
LATE_STANDARD = {
    "traceback": "the CLI edge's and the log's crash report",
    "tempfile": "the CLI edge's crash report file",
    "datetime": "the CLI edge's crash report name",
    "importlib": "the engine package's lazy attributes",
    "zoneinfo": "a retention policy's time zone (its database is read on import)",
}


def _function_imports(path: Path) -> tuple[set[str], list[tuple[int, str]]]:
    """(modules imported at module level, [(line, module)] imported inside a function)."""
    tree = ast.parse(path.read_text(), str(path))
    inner: list[tuple[int, str]] = []
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(function):
                inner += [(node.lineno, name) for name in _imported(node)]
    top = {name for node in tree.body for name in _imported(node)}
    return top, inner


def _imported(node: ast.AST) -> list[str]:
    """What an import statement binds, by full name (``from a import b``: ``a.b``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        return [f"{node.module}.{alias.name}" for alias in node.names]
    return []


def test_imports_inside_functions_are_only_heavy_libraries_or_aura_ops_modules() -> None:
    """Imports stay at module top; inside a function only a heavy library, an aura_ops module
    a command imports only when it needs it (the registry's components, a command's workflow),
    or a standard module kept for a rare path (``LATE_STANDARD``), and never one the module
    already imports at its top."""
    found = []
    for module in sorted(PACKAGE.rglob("*.py")):
        relative = module.relative_to(PACKAGE).as_posix()
        if relative.startswith("dev/"):
            continue
        top, inner = _function_imports(module)
        for line, name in inner:
            root = name.split(".")[0]
            if name in top or (root != "aura_ops" and root not in HEAVY and root not in LATE_STANDARD):
                found.append(f"{relative}:{line}: {name}")
    assert found == [], "imports that belong at the module's top:\n" + "\n".join(found)


def _protocol_members(protocol: type) -> set[str]:
    """The methods and class-level attributes a protocol asks for (instance attributes such as
    ``name`` and ``host`` are set by each class's constructor)."""
    methods = {n for n, v in vars(protocol).items() if not n.startswith("_") and callable(getattr(protocol, n))}
    class_vars = {n for n, hint in protocol.__annotations__.items() if str(hint).startswith("ClassVar")}
    return methods | class_vars


def test_every_registered_type_implements_the_component_protocol_and_services_the_service_one() -> None:
    from aura_ops.components import REGISTRY, component_class
    from aura_ops.components.base import Component, ComponentManifest, Service

    wanted = _protocol_members(Component)
    assert {"snapshot", "verify", "restore", "restore_target", "describe", "manifest_model", "type"} <= wanted
    missing = {t: sorted(m for m in wanted if not hasattr(component_class(t), m)) for t in REGISTRY}
    assert missing == {t: [] for t in REGISTRY}
    assert {t: component_class(t).type for t in REGISTRY} == {t: t for t in REGISTRY}  # the registry's key is the type
    for type_name in REGISTRY:  # a typed manifest section of its own: fields, not one dict of anything
        model = component_class(type_name).manifest_model
        own = set(model.model_fields) - set(ComponentManifest.model_fields)
        assert issubclass(model, ComponentManifest) and own, type_name
        assert all(model.model_fields[name].annotation is not Any for name in own), type_name
    services = [t for t in REGISTRY if all(hasattr(component_class(t), m) for m in _protocol_members(Service))]
    assert services == ["docker"] and {"stop", "start", "check"} <= _protocol_members(Service)
