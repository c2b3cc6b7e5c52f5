"""Regressions found by the review of issue 10 (behaviour that changed against 167aa02)."""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aura_ops import secrets
from aura_ops.config import parse
from aura_ops.engine.actions import REGISTRY, Context
from aura_ops.hosts.inventory import Inventory
from aura_ops.state import temporaries
from aura_ops.state.journal import Journal


@pytest.fixture(autouse=True)
def _no_secrets() -> Iterator[None]:
    yield
    secrets.forget()


def test_a_file_undo_of_a_release_switch_step_writes_its_file(tmp_path: Path) -> None:
    """A step ``release_switch`` with ``undo: {action: file}``: its undo runs the file action
    in the step's context. Before the refactor each action kept its state in its own side file
    (``<step>.previous``, ``<step>.saved.json``), so the file undo recorded what was at its path
    and wrote it; now both share the step's journaled ``saved`` state, the file action reads
    the switch's ``{"previous": ...}`` as its record and fails with KeyError 'kind' (the run
    ends rollback_failed, exit 4, where it ended rolled_back, exit 1)."""
    app = tmp_path / "app"
    (app / "releases" / "v1").mkdir(parents=True)
    (app / "releases" / "v2").mkdir()
    (app / "current").symlink_to("releases/v1")
    config = parse(
        {"repository": {"path": str(tmp_path / "repo")}, "components": {"app": {"type": "release", "path": str(app)}}}
    )
    journal = Journal(tmp_path / "state" / "journal.db")
    journal.create_run("r1", "book", {}, None, "t", "cli", "h", [("switch", "release_switch")], "{}")
    ctx = Context(config, "r1", "switch", tmp_path / "state" / "runs" / "r1", None, Inventory(config), journal)
    switch = REGISTRY["release_switch"]
    switch.apply(switch.Params(version="v2"), ctx)
    marker = tmp_path / "marker"
    undo = REGISTRY["file"]
    undo.apply(undo.Params(path=str(marker), content="switched back by hand\n"), ctx)  # the step's undo
    assert marker.read_text() == "switched back by hand\n"


def test_a_file_step_replaces_a_symlink_that_points_at_itself(tmp_path: Path) -> None:
    """A file step over a symlink loop replaced it before the refactor (``Path.exists`` is False
    on ELOOP, mode 0644); now ``host.stat`` (following) raises ELOOP and the step fails."""
    config = parse({"repository": {"path": str(tmp_path / "repo")}})
    journal = Journal(tmp_path / "state" / "journal.db")
    journal.create_run("r1", "book", {}, None, "t", "cli", "h", [("write", "file")], "{}")
    ctx = Context(config, "r1", "write", tmp_path / "state" / "runs" / "r1", None, Inventory(config), journal)
    loop = tmp_path / "loop"
    loop.symlink_to("loop")
    action = REGISTRY["file"]
    action.apply(action.Params(path=str(loop), content="real file\n"), ctx)
    assert not loop.is_symlink() and loop.read_text() == "real file\n"
    assert loop.stat().st_mode & 0o7777 == 0o644
    action.compensate(action.Params(path=str(loop), content="real file\n"), ctx, {})
    assert loop.is_symlink() and str(loop.readlink()) == "loop"  # the undo puts the link back


def test_every_temporary_kind_names_a_handler_that_exists() -> None:
    """A record outlives the code that wrote it: each kind's "module:function" must import and
    take (config, record) positionally, as ``cleanup`` calls it."""
    for kind in temporaries.HANDLERS:
        found = temporaries.handler(kind)
        parameters = list(inspect.signature(found).parameters.values())
        required = [p for p in parameters if p.default is inspect.Parameter.empty]
        assert len(parameters) >= 2 and len(required) == 2, kind


def _old_dir_swap(tmp_path: Path, details: dict[str, Any]) -> temporaries.Temporary:
    """A ``dir_swap`` record as aura-ops before the refactor wrote it: no ``host`` detail."""
    registry = temporaries.Registry(tmp_path / "state")
    record = registry.add("dir_swap", str(tmp_path / "data"), None, **details)
    registry.close()
    return record


def test_an_old_dir_swap_record_stopped_before_the_swap_is_undone(tmp_path: Path) -> None:
    config = parse({"repository": {"path": str(tmp_path / "repo")}, "state": {"path": str(tmp_path / "state")}})
    data, staging = tmp_path / "data", tmp_path / "data.aura-staging-1"
    data.mkdir()
    (data / "live").write_text("live\n")
    staging.mkdir()
    (staging / "restored").write_text("restored\n")
    record = _old_dir_swap(
        tmp_path,
        {
            "staging": str(staging),
            "stage": "building",
            "method": "swap",
            "staging_ino": staging.stat().st_ino,
            "target_ino": data.stat().st_ino,
        },
    )
    said = temporaries.handler("dir_swap")(config, record)
    assert said.startswith("undone")
    assert sorted(os.listdir(data)) == ["live"] and not staging.exists()


def test_an_old_dir_swap_record_stopped_after_the_swap_is_finished(tmp_path: Path) -> None:
    config = parse({"repository": {"path": str(tmp_path / "repo")}, "state": {"path": str(tmp_path / "state")}})
    data, old = tmp_path / "data", tmp_path / "data.aura-old-1"
    data.mkdir()
    (data / "restored").write_text("restored\n")
    old.mkdir()
    (old / "live").write_text("live\n")
    record = _old_dir_swap(
        tmp_path,
        {
            "staging": str(tmp_path / "data.aura-staging-1"),
            "old": str(old),
            "stage": "removing_old",
            "method": "swap",
            "staging_ino": data.stat().st_ino,
            "target_ino": old.stat().st_ino,
        },
    )
    said = temporaries.handler("dir_swap")(config, record)
    assert said.startswith("finished")
    assert sorted(os.listdir(data)) == ["restored"] and not old.exists()
