"""The transaction engine against real files and a real PostgreSQL: crash at every step
boundary, then resume or abort, and the world is entirely new or entirely old."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from aura_ops.lock import hold
from aura_ops.sandbox import PostgresCluster, wait_until
from tests.conftest import Aura, base_config, db_component

STEPS = ["snapshot", "schema", "config", "marker"]


def write_playbook(root: Path) -> Path:
    book = {
        "name": "change",
        "params": {"version": "2", "fail": "no"},
        "steps": [
            {"name": "snapshot", "action": "snapshot", "with": {"components": ["db"]}},
            {
                "name": "schema",
                "action": "sql",
                "with": {
                    "component": "db",
                    "sql": "ALTER TABLE items ADD COLUMN v2 int DEFAULT 2;"
                    " UPDATE items SET name = name || '-v{{ params.version }}'",
                    "check": "SELECT count(*) > 0 FROM information_schema.columns"
                    " WHERE table_name = 'items' AND column_name = 'v2'",
                    "undo": "ALTER TABLE items DROP COLUMN IF EXISTS v2;"
                    " UPDATE items SET name = split_part(name, '-v', 1)",
                },
            },
            {
                "name": "config",
                "action": "file",
                "with": {"path": str(root / "app.conf"), "content": "version={{ params.version }}\n"},
            },
            {
                "name": "marker",
                "action": "command",
                "with": {
                    "argv": ["sh", "-c", f"echo {{{{ steps.snapshot.snapshot_id }}}} > {root}/marker"],
                    "check": ["test", "-s", str(root / "marker")],
                    "undo": ["rm", "-f", str(root / "marker")],
                },
            },
            {"name": "gate", "action": "command", "with": {"argv": ["sh", "-c", "test {{ params.fail }} = no"]}},
        ],
    }
    path = root / "change.yaml"
    path.write_text(yaml.safe_dump(book, sort_keys=False))
    return path


def world(pg: PostgresCluster, database: str, root: Path) -> dict[str, Any]:
    with psycopg.connect(pg.dsn(database)) as conn:
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'items'"
                " ORDER BY ordinal_position"
            ).fetchall()
        ]
        rows = conn.execute("SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM items t").fetchone()
    marker = root / "marker"
    return {"columns": columns, "rows": rows[0], "config": (root / "app.conf").read_text(), "marker": marker.exists()}


@pytest.fixture
def setup(pg: PostgresCluster, database: str, aura: Aura) -> tuple[Path, dict[str, Any]]:
    with psycopg.connect(pg.dsn(database), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE items (id serial PRIMARY KEY, name text);"
            " INSERT INTO items (name) SELECT 'item' || g FROM generate_series(1, 500) g"
        )
    root = aura.root
    (root / "app.conf").write_text("version=1\n")
    aura.env["AURA_DB_DSN"] = pg.dsn(database)
    aura.write_config(base_config({"db": db_component()}))
    return write_playbook(root), world(pg, database, root)


def new_world(pg: PostgresCluster, database: str, root: Path, old: dict[str, Any]) -> bool:
    now = world(pg, database, root)
    return (
        now["columns"] == ["id", "name", "v2"]
        and now["config"] == "version=2\n"
        and now["marker"]
        and now["rows"] != old["rows"]
    )


def assert_settled(aura: Aura, run_id: str, expect_status: str) -> None:
    shown = aura.json("runs", "show", run_id)
    assert shown["run"]["status"] == expect_status
    with hold(aura.root / "state" / "run.lock", "probe", "test"):
        pass  # the lock is free


def test_plan_shows_every_step_and_changes_nothing(pg: PostgresCluster, database: str, aura: Aura, setup: Any) -> None:
    book, old = setup
    plan = aura.json("plan", str(book))
    assert [s["name"] for s in plan["steps"]] == [*STEPS, "gate"]
    assert "rm -f" in plan["steps"][3]["undo"]
    assert world(pg, database, aura.root) == old
    assert aura.json("runs", "list")["runs"] == []
    assert aura.json("snapshots", "list")["snapshots"] == []


def test_run_applies_every_step_and_a_same_key_rerun_changes_nothing(
    pg: PostgresCluster, database: str, aura: Aura, setup: Any
) -> None:
    book, old = setup
    first = aura.json("run", str(book), "--idempotency-key", "v2")
    assert first["run"]["status"] == "succeeded"
    assert new_world(pg, database, aura.root, old)
    snapshot_id = first["steps"][0]["outputs"]["snapshot_id"]
    assert (aura.root / "marker").read_text().strip() == snapshot_id
    after = world(pg, database, aura.root)
    again = aura.json("run", str(book), "--idempotency-key", "v2")
    assert again["run"]["id"] == first["run"]["id"]
    assert "nothing to do" in again["message"]
    assert world(pg, database, aura.root) == after
    assert len(aura.json("snapshots", "list")["snapshots"]) == 1


def test_failing_step_compensates_earlier_steps_in_reverse(
    pg: PostgresCluster, database: str, aura: Aura, setup: Any
) -> None:
    book, old = setup
    result = aura("run", str(book), "-e", "fail=yes", "--json", check=1)
    outcome = json.loads(result.stdout)
    assert outcome["run"]["status"] == "rolled_back"
    assert world(pg, database, aura.root) == old
    statuses = {s["name"]: s["status"] for s in outcome["steps"]}
    assert statuses == {
        "snapshot": "compensated",
        "schema": "compensated",
        "config": "compensated",
        "marker": "compensated",
        "gate": "failed",
    }
    order = [
        json.loads(line)["step"]
        for line in result.stderr.splitlines()
        if line.startswith("{") and '"step.compensated"' in line
    ]
    assert order == ["marker", "config", "schema", "snapshot"]


def test_failing_compensation_exits_4_and_says_what_to_do(
    pg: PostgresCluster, database: str, aura: Aura, setup: Any
) -> None:
    book, _ = setup
    data = yaml.safe_load(book.read_text())
    data["steps"][3]["with"]["undo"] = ["false"]
    book.write_text(yaml.safe_dump(data))
    result = aura("run", str(book), "-e", "fail=yes", "--json", check=4)
    outcome = json.loads(result.stdout)
    assert outcome["run"]["status"] == "rollback_failed"
    assert "marker" in outcome["message"] and "runs abort" in outcome["message"]
    statuses = {s["name"]: s["status"] for s in outcome["steps"]}
    assert statuses["marker"] == "compensation_failed"
    assert statuses["config"] == "compensated"


def test_a_second_run_while_one_holds_the_target_exits_5(aura: Aura, setup: Any) -> None:
    book, _ = setup
    with hold(aura.root / "state" / "run.lock", "other-run", "run change"):
        result = aura("run", str(book), check=5)
    assert "other-run" in result.stderr


def test_sigterm_during_a_step_stops_it_and_compensates(
    pg: PostgresCluster, database: str, aura: Aura, setup: Any
) -> None:
    book, old = setup
    data = yaml.safe_load(book.read_text())
    data["steps"][4] = {"name": "slow", "action": "command", "with": {"argv": ["sleep", "60"]}}
    book.write_text(yaml.safe_dump(data))
    process = aura.popen("run", str(book))
    assert wait_until(lambda: (aura.root / "marker").exists(), 60)
    assert wait_until(lambda: '"slow"' in _journal_steps(aura), 30)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1, err
    assert world(pg, database, aura.root) == old


def _journal_steps(aura: Aura) -> str:
    import sqlite3

    db = sqlite3.connect(aura.root / "state" / "journal.db")
    try:
        return json.dumps(db.execute("SELECT name FROM steps WHERE status = 'applying'").fetchall())
    finally:
        db.close()


@pytest.mark.parametrize("then", ["resume", "abort"])
@pytest.mark.parametrize("point", ["before", "after"])
@pytest.mark.parametrize("step", STEPS)
def test_crash_at_every_step_boundary_then_resume_or_abort(
    pg: PostgresCluster, database: str, aura: Aura, setup: Any, step: str, point: str, then: str
) -> None:
    book, old = setup
    crashed = aura("run", str(book), check=137, env={"AURA_FAULT": f"{step}:{point}"})
    assert crashed.returncode == 137
    run_id = aura.json("runs", "list")["runs"][0]["id"]
    assert aura.json("runs", "show", run_id)["run"]["status"] == "running"
    refused = aura("run", str(book), check=5)
    assert run_id in refused.stderr

    aura("runs", then, run_id, check=0 if then == "resume" else 1)

    if then == "resume":
        assert new_world(pg, database, aura.root, old)
        assert_settled(aura, run_id, "succeeded")
    else:
        assert world(pg, database, aura.root) == old
        assert_settled(aura, run_id, "rolled_back")


@pytest.mark.parametrize("then", ["resume", "abort"])
@pytest.mark.parametrize("step", STEPS)
def test_crash_during_compensation_then_resume_or_abort_ends_all_old(
    pg: PostgresCluster, database: str, aura: Aura, setup: Any, step: str, then: str
) -> None:
    book, old = setup
    aura("run", str(book), "-e", "fail=yes", check=137, env={"AURA_FAULT": f"{step}:during-compensate"})
    run_id = aura.json("runs", "list")["runs"][0]["id"]
    assert aura.json("runs", "show", run_id)["run"]["status"] == "compensating"
    aura("runs", then, run_id, check=1)
    assert world(pg, database, aura.root) == old
    assert_settled(aura, run_id, "rolled_back")


def test_malformed_playbook_exits_2_naming_file_and_step(aura: Aura, setup: Any) -> None:
    book, _ = setup
    broken = aura.root / "broken.yaml"
    broken.write_text("name: broken\nsteps:\n  - {name: a, action: teleport}\n")
    result = aura("run", str(broken), check=2)
    assert "broken.yaml is invalid" in result.stderr
    assert "step 1 'a': unknown action 'teleport'" in result.stderr
    assert aura.json("runs", "list")["runs"] == []


def test_shipped_backup_playbook_takes_a_tagged_snapshot(aura: Aura, setup: Any) -> None:
    outcome = aura.json("run", "backup", "-e", "tag=nightly")
    assert outcome["run"]["status"] == "succeeded"
    snapshots = aura.json("snapshots", "list")["snapshots"]
    assert [s["tags"] for s in snapshots] == [["nightly"]]


def test_interrupted_run_blocks_its_idempotency_key_and_restores_but_not_a_backup(aura: Aura, setup: Any) -> None:
    book, _ = setup
    aura("run", str(book), "--idempotency-key", "v2", check=137, env={"AURA_FAULT": "config:after"})
    run_id = aura.json("runs", "list")["runs"][0]["id"]
    again = aura("run", str(book), "--idempotency-key", "v2", check=5)
    assert "idempotency key 'v2'" in again.stderr and run_id in again.stderr
    warned = aura("backup")  # a scheduled backup goes on, with a warning naming the run
    assert "run.unfinished" in warned.stderr and f"runs resume {run_id}" in warned.stderr
    blocked = aura("restore", "latest", "--yes", check=5)
    assert f"runs resume {run_id}" in blocked.stderr and "is dead" in blocked.stderr
    aura("runs", "abort", run_id, check=1)
    aura("restore", "latest", "--yes")
