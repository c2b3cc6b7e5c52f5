"""Reproductions from the adversarial review of the structure change (issue 10): the store
host's reads of a snapshot folder and the modes of what a backup writes."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aura_ops.dev.sandbox import PostgresCluster
from tests.conftest import Aura, base_config, db_component, require_tool


def _json(aura: Aura, *args: str) -> Any:
    """A command's JSON document, within a minute (a read that waits on a FIFO fails the test)."""
    return json.loads(aura(*args, "--json", timeout=60).stdout)


def _plant(path: Path, what: str) -> None:
    """Replace the file ``path`` by a folder or a FIFO (no writer: a blocking open waits forever)."""
    path.unlink()
    if what == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)


@pytest.mark.parametrize(
    ("victim", "what"),
    [("site/index.jsonl", "folder"), ("site/index.jsonl", "fifo"), ("manifest.json", "fifo")],
)
def test_an_index_or_manifest_that_is_not_a_file_is_damage_reported_at_once_by_list_verify_restore_and_backup(
    aura: Aura, tmp_path: Path, victim: str, what: str
) -> None:
    require_tool("rsync")
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("first")
    aura.write_config(base_config({"site": {"type": "files", "path": str(data)}}))
    good = aura.json("backup")["id"]
    bad = aura.json("backup")["id"]
    _plant(aura.repo / "snapshots" / bad / victim, what)

    listed = {s["id"]: s for s in _json(aura, "snapshots", "list")["snapshots"]}
    assert listed[good]["damaged"] is None
    assert victim.split("/")[-1].split(".")[0] in listed[bad]["damaged"]
    result = aura("snapshots", "verify", bad, check=3, timeout=60)
    assert "unexpected" not in result.stderr
    target = tmp_path / "copy"
    result = aura("restore", bad, "--to-path", str(target), check=3, timeout=60)
    assert victim.split("/")[-1].split(".")[0] in result.stderr
    assert not target.exists()
    (data / "a.txt").write_text("second")
    assert _json(aura, "backup")["components"]["site"]["previous"] == good


def test_a_fifo_in_place_of_the_verified_files_cache_is_ignored_not_waited_on(aura: Aura, tmp_path: Path) -> None:
    require_tool("rsync")
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("first")
    aura.write_config(base_config({"site": {"type": "files", "path": str(data)}}))
    snapshot = _json(aura, "backup")["id"]
    cache = aura.repo / "cache" / "verified-files.json"
    cache.parent.mkdir(exist_ok=True)
    cache.unlink(missing_ok=True)
    os.mkfifo(cache)

    listed = {s["id"]: s for s in _json(aura, "snapshots", "list")["snapshots"]}
    assert listed[snapshot]["damaged"] is None


@pytest.mark.parametrize("umask", [0, 0o022])
def test_the_dump_files_pg_dump_writes_are_owner_only_whatever_the_users_umask(
    pg: PostgresCluster, database: str, aura: Aura, umask: int
) -> None:
    pg.sql("CREATE TABLE t (x int)", database)
    pg.sql("INSERT INTO t SELECT generate_series(1, 100)", database)
    aura.env["AURA_DB_DSN"] = pg.dsn(database)
    aura.write_config(base_config({"db": db_component(globals=True)}))

    def as_user() -> None:
        os.umask(umask)

    result = subprocess.run(
        [sys.executable, "-m", "aura_ops", "--config", str(aura.config_path), "backup"],
        env=aura.env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        preexec_fn=as_user,  # noqa: PLW1509 - the test plays a user's shell
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loose = []
    for folder, folders, files in os.walk(aura.repo):
        for name in folders + files:
            path = os.path.join(folder, name)
            want = 0o700 if name in folders else 0o600
            if stat.S_IMODE(os.lstat(path).st_mode) != want:
                loose.append(f"{os.path.relpath(path, aura.repo)} {oct(stat.S_IMODE(os.lstat(path).st_mode))}")
    assert loose == []


def test_a_statement_the_database_refuses_is_not_run_again_by_the_steps_retries(
    pg: PostgresCluster, database: str, aura: Aura
) -> None:
    # before the SQL seam translated driver errors, a refused statement failed its step at once;
    # retrying it is never useful (not transient) and, after a connection lost at its commit,
    # may apply it twice
    aura.env["AURA_DB_DSN"] = pg.dsn(database)
    aura.write_config(base_config({"db": db_component()}))
    pg.sql("CREATE TABLE n (x int)", database)
    book = aura.root / "refused.yaml"
    step = {"component": "db", "sql": "INSERT INTO n VALUES (1); SELECT 1/0"}
    book.write_text(
        json.dumps({"name": "refused", "steps": [{"name": "bad", "action": "sql", "retries": 2, "with": step}]})
    )
    result = aura("run", str(book), check=1)
    assert "division by zero" in result.stderr
    assert "step.retry" not in aura.log_text()
    assert pg.sql("SELECT count(*) FROM n", database) == [(0,)]


@pytest.mark.parametrize("damage", ["tree-is-a-file", "file-is-a-folder"])
def test_a_damaged_stored_tree_in_the_previous_snapshot_never_stops_the_next_backup(
    aura: Aura, tmp_path: Path, damage: str
) -> None:
    # the previous snapshot's index is intact (it is not listed as damaged), so the next backup
    # links unchanged files against its tree: a link that cannot be made must become a copy
    require_tool("rsync")
    data = tmp_path / "data"
    (data / "docs").mkdir(parents=True)
    (data / "docs" / "a.txt").write_text("unchanged")
    aura.write_config(base_config({"site": {"type": "files", "path": str(data)}}))
    previous = _json(aura, "backup")["id"]
    tree = aura.repo / "snapshots" / previous / "site" / "tree"
    if damage == "tree-is-a-file":
        shutil.rmtree(tree)
        tree.write_text("not a folder")
    else:
        (tree / "docs" / "a.txt").unlink()
        (tree / "docs" / "a.txt").mkdir()

    snapshot = _json(aura, "backup")["id"]
    aura("snapshots", "verify", snapshot, timeout=60)
    aura("restore", snapshot, "--to-path", str(tmp_path / "copy"), timeout=60)
    assert (tmp_path / "copy" / "docs" / "a.txt").read_text() == "unchanged"
