"""State between a step's apply, its undo and the run's report travels through the journal:
the ``saved`` and ``undo`` columns of a step, added to older journals when they are opened."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from aura_ops import secrets
from aura_ops.config import Config, parse
from aura_ops.engine.actions import REGISTRY, Context
from aura_ops.errors import AuraError
from aura_ops.hosts.inventory import Inventory
from aura_ops.state.journal import Journal

# The schema of the first journals (before a step had saved state or an undo result).
FIRST_SCHEMA = """
CREATE TABLE runs (
    id TEXT PRIMARY KEY, playbook TEXT NOT NULL, params TEXT NOT NULL,
    idempotency_key TEXT, target TEXT NOT NULL, status TEXT NOT NULL, trigger TEXT,
    host TEXT, pid INTEGER, created TEXT NOT NULL, updated TEXT NOT NULL,
    result TEXT, error TEXT, definition TEXT NOT NULL
);
CREATE TABLE steps (
    run_id TEXT NOT NULL REFERENCES runs (id), idx INTEGER NOT NULL, name TEXT NOT NULL,
    action TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    outputs TEXT, error TEXT, started TEXT, ended TEXT, PRIMARY KEY (run_id, idx)
);
INSERT INTO runs VALUES ('r1', 'deploy', '{}', NULL, 't', 'rolled_back', 'cli', 'h', 1, 'c', 'u', NULL, NULL, '{}');
INSERT INTO steps VALUES ('r1', 0, 'switch', 'release_switch', 'compensated', 1, '{"previous": "v1"}',
    NULL, 's', 'e');
"""


@pytest.fixture(autouse=True)
def _no_secrets() -> Iterator[None]:
    yield
    secrets.forget()


def _journal(tmp_path: Path, steps: list[tuple[str, str]]) -> Journal:
    journal = Journal(tmp_path / "state" / "journal.db")
    journal.create_run("r1", "book", {}, None, "t", "cli", "h", steps, "{}")
    return journal


def _config(tmp_path: Path, app: Path | None = None) -> Config:
    components = {"app": {"type": "release", "path": str(app)}} if app else {}
    return parse({"repository": {"path": str(tmp_path / "repo")}, "components": components})


def _context(tmp_path: Path, journal: Journal, step: str, app: Path | None = None) -> Context:
    config = _config(tmp_path, app)
    return Context(config, "r1", step, tmp_path / "state" / "runs" / "r1", None, Inventory(config), journal)


def test_an_older_journal_gains_the_new_columns_and_reads_as_before(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with sqlite3.connect(path) as db:
        db.executescript(FIRST_SCHEMA)
    journal = Journal(path)
    [step] = journal.steps("r1")
    assert (step.name, step.status, step.outputs, step.saved, step.undo) == (
        "switch",
        "compensated",
        {"previous": "v1"},
        None,
        None,
    )
    journal.save_step_state("r1", "switch", {"previous": "v0"})
    journal.step_undone("r1", "switch", {"path": "clone"})
    journal.close()
    again = Journal(path)  # opening it again changes nothing more
    [step] = again.steps("r1")
    assert (step.saved, step.undo) == ({"previous": "v0"}, {"path": "clone"})
    assert again.step_state("r1", "switch") == {"previous": "v0"}


def test_saved_state_is_kept_as_it_is_and_the_undo_result_is_masked(tmp_path: Path) -> None:
    journal = _journal(tmp_path, [("migrate", "migrate")])
    ctx = _context(tmp_path, journal, "migrate")
    secrets.register("hunter2-secret")
    ctx.remember({"link": "releases/hunter2-secret"})
    ctx.record_undo({"path": "snapshot", "database": "hunter2-secret"})
    [step] = journal.steps("r1")
    assert step.saved == {"link": "releases/hunter2-secret"}  # the undo acts on it: never altered
    assert step.undo == {"path": "snapshot", "database": "***"}
    assert ctx.remembered() == step.saved


def test_a_context_without_a_journal_remembers_nothing(tmp_path: Path) -> None:
    ctx = Context(_config(tmp_path), "<run>", "plan", tmp_path / "plan")
    assert ctx.remembered() is None
    assert ctx.hosts.local().name == "local"  # an inventory of the configuration's own
    with pytest.raises(AuraError, match="outside a run"):
        ctx.remember({"x": 1})


def test_a_file_step_journals_what_it_replaces_and_puts_it_back_exactly(tmp_path: Path) -> None:
    journal = _journal(tmp_path, [("conf", "file")])
    ctx = _context(tmp_path, journal, "conf")
    target = tmp_path / "app.conf"
    target.write_text("old\n")
    os.chmod(target, 0o640)
    os.utime(target, ns=(1_500_000_000_000_000_000, 1_600_000_000_000_000_000))
    action = REGISTRY["file"]
    params = action.Params.model_validate({"path": str(target), "content": "new\n", "mode": 0o600})
    outputs = action.apply(params, ctx)
    assert (target.read_text(), target.stat().st_mode & 0o7777) == ("new\n", 0o600)
    saved = journal.steps("r1")[0].saved
    assert saved is not None and saved["kind"] == "file" and saved["mode"] == 0o640 and saved["size"] == 4
    assert sorted(p.name for p in ctx.work_dir.iterdir()) == ["conf.content"]  # the bytes; no record file
    action.apply(params, ctx)  # applied again (a resume): the first record stays
    assert journal.steps("r1")[0].saved == saved
    action.compensate(params, ctx, outputs)
    st = target.stat()
    assert (target.read_text(), st.st_mode & 0o7777) == ("old\n", 0o640)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_500_000_000_000_000_000, 1_600_000_000_000_000_000)


def test_a_file_step_refuses_to_put_back_a_damaged_copy(tmp_path: Path) -> None:
    journal = _journal(tmp_path, [("conf", "file")])
    ctx = _context(tmp_path, journal, "conf")
    target = tmp_path / "app.conf"
    target.write_text("old\n")
    action = REGISTRY["file"]
    params = action.Params.model_validate({"path": str(target), "content": "new\n"})
    outputs = action.apply(params, ctx)
    (ctx.work_dir / "conf.content").write_text("odd\n")
    with pytest.raises(AuraError, match="damaged"):
        action.compensate(params, ctx, outputs)
    assert target.read_text() == "new\n"


def test_a_file_step_begun_by_an_older_aura_ops_is_undone_from_its_record_file(tmp_path: Path) -> None:
    journal = _journal(tmp_path, [("conf", "file")])
    ctx = _context(tmp_path, journal, "conf")
    target = tmp_path / "app.conf"
    target.write_text("new\n")
    ctx.work_dir.mkdir(parents=True)
    (ctx.work_dir / "conf.content").write_text("old\n")
    st = target.stat()
    record = {"kind": "file", "mode": 0o604, "uid": st.st_uid, "gid": st.st_gid, "atime_ns": 1, "mtime_ns": 2}
    (ctx.work_dir / "conf.saved.json").write_text(json.dumps(record))
    action = REGISTRY["file"]
    action.compensate(action.Params.model_validate({"path": str(target), "content": "new\n"}), ctx, {})
    assert (target.read_text(), target.stat().st_mode & 0o7777, target.stat().st_mtime_ns) == ("old\n", 0o604, 2)


def test_a_release_switch_journals_the_previous_release_before_it_switches(tmp_path: Path) -> None:
    app = tmp_path / "app"
    for version in ("v1", "v2"):
        (app / "releases" / version).mkdir(parents=True)
    (app / "current").symlink_to("releases/v1")
    journal = _journal(tmp_path, [("switch", "release_switch")])
    ctx = _context(tmp_path, journal, "switch", app)
    action = REGISTRY["release_switch"]
    params = action.Params.model_validate({"version": "v2"})
    assert action.apply(params, ctx) == {"previous": "v1"}
    assert journal.steps("r1")[0].saved == {"previous": "v1"}
    assert os.readlink(app / "current") == "releases/v2"
    # on a resume after a crash right after the switch, the outputs say nothing of the previous one
    action.compensate(params, ctx, {"found_applied": True})
    assert os.readlink(app / "current") == "releases/v1"
    assert json.loads((app / ".aura" / "releases.json").read_text())["v2"]["state"] == "rolled_back"
    assert not ctx.work_dir.exists()  # nothing kept beside the journal
