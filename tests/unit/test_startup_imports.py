"""Start-up stays light: the heavy libraries (and the components a command does not use) are
imported only by the commands that need them. Structural, not timed: a real CLI process reports
the modules it imported when it exits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import aura_ops

# imported by no command that neither talks to PostgreSQL, Docker or S3 nor prints a table
HEAVY = ("psycopg", "docker", "boto3", "botocore", "rich", "zstandard", "tenacity", "structlog", "jinja2", "fabric")
# the components a files backup does not use (the release component, light, is imported by the
# retention workflow), and the engine's actions (they import every component)
UNUSED_BY_FILES = (
    "aura_ops.components.postgres",
    "aura_ops.components.containers",
    "aura_ops.engine.actions",
    "aura_ops.engine.runner",
    "aura_ops.engine.playbook",
)

_REPORT = """
import atexit, json, runpy, sys
report, sys.argv = sys.argv[1], ["aura-ops", *sys.argv[2:]]
atexit.register(lambda: open(report, "w").write(json.dumps(sorted(sys.modules))))
runpy.run_module("aura_ops", run_name="__main__")
"""


def _modules(tmp_path: Path, *args: str) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """The modules a real ``aura-ops ARGS`` process had imported when it exited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AURA_")}
    env["PYTHONPATH"] = str(Path(aura_ops.__file__).parents[1])
    report = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", _REPORT, str(report), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    return set(json.loads(report.read_text())), done


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == name or m.startswith(f"{name}.") for name in names))


def test_help_imports_no_heavy_library_no_config_and_no_component(tmp_path: Path) -> None:
    modules, done = _modules(tmp_path, "--help")
    assert done.returncode == 0, done.stderr
    assert "backup" in done.stdout and "click" in modules  # it did run the CLI
    assert _loaded(modules, (*HEAVY, "pydantic", "yaml", "aura_ops.config", "aura_ops.components")) == []
    assert _loaded(modules, ("aura_ops.hosts", "aura_ops.engine", "aura_ops.workflows")) == []


@pytest.mark.parametrize("runs", [1, 2])
@pytest.mark.parametrize("journal", [False, True])
def test_a_files_backup_imports_only_what_it_uses(tmp_path: Path, runs: int, journal: bool) -> None:
    """The first backup of a tree and one with nothing changed (linked to the first); with a
    journal in the state folder too (looked at for interrupted runs: no playbook, no action)."""
    if journal:
        from aura_ops.state.journal import Journal

        (tmp_path / "state").mkdir()
        Journal(tmp_path / "state" / "journal.db").close()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a").write_text("a\n")
    config = {
        "repository": {"path": "repo"},
        "components": {
            "stuff": {"type": "files", "path": str(tmp_path / "data")},
            "db": {"type": "postgres", "dsn": "postgresql://app@127.0.0.1/app"},  # configured, not used
        },
    }
    (tmp_path / "aura.yaml").write_text(yaml.safe_dump(config))
    for _ in range(runs):
        modules, done = _modules(tmp_path, "--config", str(tmp_path / "aura.yaml"), "backup", "--component", "stuff")
        assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "repo" / "snapshots").glob("*-*-[0-9][0-9][0-9]"))) == runs  # it did back up
    assert "aura_ops.components.files" in modules and "aura_ops.workflows.snapshots" in modules
    assert _loaded(modules, HEAVY) == []
    assert _loaded(modules, UNUSED_BY_FILES) == []
