"""The transaction engine against real files and a real PostgreSQL: crash at every step
boundary, then resume or abort, and the world is entirely new or entirely old."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from aura_ops.dev.sandbox import PostgresCluster, wait_until
from aura_ops.state.lock import hold
from tests.conftest import Aura, base_config, db_component, require

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


def test_a_step_whose_check_cannot_run_failed_before_changing_anything_and_is_not_undone(
    pg: PostgresCluster, database: str, aura: Aura, setup: Any
) -> None:
    """Its check (a missing program) fails before the step began applying: the run rolls back
    what the steps before it did (exit 1), not `rollback_failed` (exit 4) for asking again."""
    book, old = setup
    data = yaml.safe_load(book.read_text())
    data["steps"][3]["with"]["check"] = [str(aura.root / "no-such-check")]
    book.write_text(yaml.safe_dump(data))
    outcome = json.loads(aura("run", str(book), "--json", check=1).stdout)
    assert outcome["run"]["status"] == "rolled_back"
    statuses = {s["name"]: s["status"] for s in outcome["steps"]}
    assert statuses == {
        "snapshot": "compensated",
        "schema": "compensated",
        "config": "compensated",
        "marker": "failed",
        "gate": "pending",
    }
    assert world(pg, database, aura.root) == old


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

    aura("runs", then, run_id, check=0)

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
    aura("runs", then, run_id, check=1 if then == "resume" else 0)
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
    aura("runs", "abort", run_id, check=0)
    aura("restore", "latest", "--yes")


# ---------------------------------------------------------------- class 5: every failure compensated


def _book(aura: Aura, name: str, steps: list[dict[str, Any]], **top: Any) -> Path:
    path = aura.root / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **top, "steps": steps}, sort_keys=False))
    return path


def _config_step(aura: Aura, content: str = "version=2\n") -> dict[str, Any]:
    return {"name": "config", "action": "file", "with": {"path": str(aura.root / "app.conf"), "content": content}}


FAIL = {"name": "gate", "action": "command", "with": {"argv": ["false"]}}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.parametrize(
    "broken",
    [
        {"name": "broken", "action": "sql", "with": {"component": "db", "sql": "SELEC 1"}},
        {"name": "broken", "action": "command", "with": {"argv": ["echo", "{{ steps.config.missing_key }}"]}},
        {"name": "broken", "action": "command", "when": "{{ steps.config.nothing }}", "with": {"argv": ["true"]}},
    ],
    ids=["database-error", "template-error", "when-template-error"],
)
def test_any_exception_from_a_step_fails_it_and_compensates_what_ran_before(
    pg: PostgresCluster, database: str, aura: Aura, setup: Any, broken: dict[str, Any]
) -> None:
    _, old = setup
    book = _book(aura, "broken", [_config_step(aura), broken])
    result = aura("run", str(book), "--json", check=1)
    outcome = json.loads(result.stdout)
    assert outcome["run"]["status"] == "rolled_back"
    steps = {s["name"]: s for s in outcome["steps"]}
    assert steps["config"]["status"] == "compensated"
    assert steps["broken"]["status"] == "failed"
    assert steps["broken"]["error"] and "\n" not in steps["broken"]["error"]
    expected = "syntax error" if broken["action"] == "sql" else "has no attribute"
    assert expected in steps["broken"]["error"]
    assert world(pg, database, aura.root) == old
    assert_settled(aura, outcome["run"]["id"], "rolled_back")


@pytest.mark.parametrize("kind", ["os-error", "bug"])
def test_an_os_error_or_a_bug_in_an_action_fails_the_step_and_compensates_what_ran_before(
    pg: PostgresCluster, database: str, aura: Aura, setup: Any, kind: str
) -> None:
    _, old = setup
    if kind == "os-error":  # a folder that is a file: the file action's write meets NotADirectoryError
        broken = {
            "name": "broken",
            "action": "file",
            "with": {"path": str(aura.root / "app.conf" / "x"), "content": "x"},
        }
        env = {}
    else:  # an unexpected exception inside the step, as a bug in an action would raise
        broken = {"name": "broken", "action": "command", "with": {"argv": ["true"]}}
        env = {"AURA_FAULT": "broken:before:BUG"}
    book = _book(aura, "broken", [_config_step(aura), broken])
    result = aura("run", str(book), "--json", check=1, env=env)
    outcome = json.loads(result.stdout)
    assert outcome["run"]["status"] == "rolled_back"
    steps = {s["name"]: s for s in outcome["steps"]}
    assert steps["config"]["status"] == "compensated" and steps["broken"]["status"] == "failed"
    error = steps["broken"]["error"]
    assert "\n" not in error and ("Not a directory" in error if kind == "os-error" else "injected bug" in error)
    assert world(pg, database, aura.root) == old
    assert_settled(aura, outcome["run"]["id"], "rolled_back")


def test_an_exception_in_a_compensation_ends_the_run_rollback_failed(
    pg: PostgresCluster, database: str, aura: Aura, setup: Any
) -> None:
    book = _book(
        aura,
        "bad-undo",
        [
            _config_step(aura),
            {"name": "broken_undo", "action": "sql", "with": {"component": "db", "sql": "SELECT 1", "undo": "SELEC 2"}},
            FAIL,
        ],
    )
    result = aura("run", str(book), "--json", check=4)
    outcome = json.loads(result.stdout)
    assert outcome["run"]["status"] == "rollback_failed"
    steps = {s["name"]: s for s in outcome["steps"]}
    assert steps["broken_undo"]["status"] == "compensation_failed"
    assert "syntax error" in steps["broken_undo"]["error"]
    assert steps["config"]["status"] == "compensated"
    assert (aura.root / "app.conf").read_text() == "version=1\n"
    assert_settled(aura, outcome["run"]["id"], "rollback_failed")


def _failed_run_without_rollback(aura: Aura, book: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that stopped at its failure without rolling back (as `deploy` without
    --rollback-on-fail leaves one), made in-process against the same configuration."""
    from aura_ops import config, engine
    from aura_ops.engine import playbook

    for key, value in aura.env.items():
        if key.startswith("AURA_"):
            monkeypatch.setenv(key, value)
    loaded = config.load(aura.config_path)
    runner = engine.Engine(loaded)
    try:
        outcome = runner.run(playbook.load(str(book)), {"fail": "yes"}, rollback=False)
    finally:
        runner.journal.close()
    assert outcome.run.status == "failed"


@pytest.mark.parametrize("state", ["running", "compensating", "failed", "rollback_failed"])
def test_runs_abort_brings_back_every_interrupted_run_and_exits_0(
    pg: PostgresCluster, database: str, aura: Aura, setup: Any, state: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    book, old = setup
    if state == "running":
        aura("run", str(book), check=137, env={"AURA_FAULT": "config:after"})
    elif state == "compensating":
        aura("run", str(book), "-e", "fail=yes", check=137, env={"AURA_FAULT": "config:during-compensate"})
    elif state == "failed":
        _failed_run_without_rollback(aura, book, monkeypatch)
    else:
        data = yaml.safe_load(book.read_text())
        allow = aura.root / "allow-undo"
        data["steps"][3]["with"]["undo"] = ["sh", "-c", f"test -e {allow} && rm -f {aura.root}/marker"]
        book.write_text(yaml.safe_dump(data))
        aura("run", str(book), "-e", "fail=yes", check=4)
        allow.touch()
    run_id = aura.json("runs", "list")["runs"][0]["id"]
    assert aura.json("runs", "show", run_id)["run"]["status"] == state
    result = aura("runs", "abort", run_id, check=0)
    assert "undone" in result.stdout
    assert world(pg, database, aura.root) == old
    assert_settled(aura, run_id, "rolled_back")


def test_runs_abort_exits_4_when_the_undo_fails(pg: PostgresCluster, database: str, aura: Aura, setup: Any) -> None:
    book, _ = setup
    data = yaml.safe_load(book.read_text())
    data["steps"][3]["with"]["undo"] = ["false"]
    book.write_text(yaml.safe_dump(data))
    aura("run", str(book), check=137, env={"AURA_FAULT": "gate:before"})
    run_id = aura.json("runs", "list")["runs"][0]["id"]
    result = aura("runs", "abort", run_id, check=4)
    assert "marker" in result.stderr
    assert_settled(aura, run_id, "rollback_failed")


# ---------------------------------------------------------------- class 5: signals


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_snapshot_step_interrupts_the_run_and_compensates(
    pg: PostgresCluster, database: str, aura: Aura, setup: Any, signum: int
) -> None:
    _, old = setup
    book = _book(
        aura,
        "snap",
        [
            _config_step(aura),
            # a snapshot that may fail without failing the run: an interruption is no such failure
            {"name": "snapshot", "action": "snapshot", "with": {"components": ["db"]}, "on_failure": "continue"},
            {"name": "marker", "action": "file", "with": {"path": str(aura.root / "marker"), "content": "x"}},
        ],
    )
    with psycopg.connect(pg.dsn(database)) as blocker:
        blocker.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")  # pg_dump waits for it
        process = aura.popen("run", str(book), "--json")
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'"
        assert wait_until(lambda: pg.sql(waiting.replace("%s", f"'{database}'"))[0][0] > 0, 60)
        process.send_signal(signum)
        out, err = process.communicate(timeout=120)
        blocker.rollback()
    assert process.returncode == 1, err
    outcome = json.loads(out)
    assert outcome["run"]["status"] == "rolled_back"
    assert world(pg, database, aura.root) == old
    assert aura.json("snapshots", "list")["snapshots"] == []
    assert not list((aura.repo / "snapshots").glob("*.partial"))


def _group_book(aura: Aura, **slow: Any) -> Path:
    script = f"sleep 600 & echo $! > {aura.root}/child.pid; wait"
    return _book(
        aura,
        "group",
        [_config_step(aura), {"name": "slow", "action": "command", "with": {"argv": ["sh", "-c", script]}, **slow}],
    )


def _child(aura: Aura) -> int | None:
    text = (aura.root / "child.pid").read_text().strip() if (aura.root / "child.pid").exists() else ""
    return int(text) if text else None


def _kill_leftover(pid: int | None) -> None:
    import os

    if pid is not None and _alive(pid):
        os.kill(pid, signal.SIGKILL)


def test_sigterm_during_a_command_step_kills_its_whole_process_group(aura: Aura, setup: Any) -> None:
    book = _group_book(aura)
    process = aura.popen("run", str(book))
    assert wait_until(lambda: _child(aura) is not None, 60)
    child = _child(aura)
    try:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 1, err
        assert wait_until(lambda: not _alive(child), 10), "the command's child survived the interruption"
        assert (aura.root / "app.conf").read_text() == "version=1\n"
    finally:
        _kill_leftover(child)


def test_a_step_timeout_kills_its_whole_process_group(aura: Aura, setup: Any) -> None:
    book = _group_book(aura, timeout=5)  # long enough for sh to start its child on a loaded machine
    try:
        result = aura("run", str(book), "--json", check=1, timeout=120)
        outcome = json.loads(result.stdout)
        assert outcome["run"]["status"] == "rolled_back"
        assert "timed out" in outcome["steps"][1]["error"]
        child = _child(aura)
        assert child is not None
        assert wait_until(lambda: not _alive(child), 10), "the command's child survived its timeout"
    finally:
        _kill_leftover(_child(aura))


def test_a_sql_step_timeout_cancels_its_statement_and_the_run_is_rolled_back(
    pg: PostgresCluster, database: str, aura: Aura, setup: Any
) -> None:
    sql = "CREATE TABLE napped (n int); SELECT pg_sleep(600)"
    step = {"name": "nap", "action": "sql", "timeout": 2, "with": {"component": "db", "sql": sql}}
    book = _book(aura, "nap", [_config_step(aura), step])
    result = aura("run", str(book), "--json", check=1, timeout=120)
    outcome = json.loads(result.stdout)
    assert outcome["run"]["status"] == "rolled_back"
    assert "canceling statement due to statement timeout" in outcome["steps"][1]["error"]
    assert (aura.root / "app.conf").read_text() == "version=1\n"  # the step before it undone
    with psycopg.connect(pg.dsn(database)) as conn:
        assert conn.execute("SELECT to_regclass('napped')").fetchone() == (None,)  # nothing committed
        sleeping = (
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(600)%' AND pid <> pg_backend_pid()"
        )
        assert conn.execute(sleeping).fetchone() == (0,)  # the server stopped it, not only aura-ops


def test_a_sql_step_timeout_bounds_its_statements_together_not_each_one(
    pg: PostgresCluster, database: str, aura: Aura, setup: Any
) -> None:
    """The server's statement_timeout times each statement of a script alone: three naps of
    1.5 s under a step timeout of 2 ran 4.5 s and the step was applied (committed)."""
    sql = "CREATE TABLE napped_each (n int); SELECT pg_sleep(1.5); SELECT pg_sleep(1.5); SELECT pg_sleep(1.5)"
    step = {"name": "naps", "action": "sql", "timeout": 2, "with": {"component": "db", "sql": sql}}
    book = _book(aura, "naps", [_config_step(aura), step])
    outcome = json.loads(aura("run", str(book), "--json", check=1, timeout=120).stdout)
    assert outcome["run"]["status"] == "rolled_back"
    error = outcome["steps"][1]["error"]
    assert "canceling statement due to statement timeout" in error and "timeout of 2s" in error, error
    assert (aura.root / "app.conf").read_text() == "version=1\n"
    with psycopg.connect(pg.dsn(database)) as conn:
        assert conn.execute("SELECT to_regclass('napped_each')").fetchone() == (None,)  # nothing committed


def test_a_sql_health_check_that_a_lock_holds_fails_at_its_deadline_instead_of_hanging(
    pg: PostgresCluster, database: str, aura: Aura, setup: Any
) -> None:
    """A sql check's timeout bounded only the connection: a query waiting on a lock (a migration
    holding the table) waited for ever, the run holding its lock, past every deadline. Now each
    attempt is cancelled at the check's timeout and the check fails at its deadline."""
    config = base_config({"db": db_component()})
    config["checks"] = [
        {"type": "sql", "component": "db", "query": "SELECT count(*) FROM items", "timeout": 1, "deadline": 3}
    ]
    aura.write_config(config)
    book = _book(aura, "health", [_config_step(aura), {"name": "health", "action": "checks"}])
    with psycopg.connect(pg.dsn(database)) as holder:
        holder.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")  # held until the block ends
        outcome = json.loads(aura("run", str(book), "--json", check=1, timeout=120).stdout)
    assert outcome["run"]["status"] == "rolled_back"
    assert "canceling statement due to statement timeout" in outcome["steps"][1]["error"], outcome["steps"][1]
    assert (aura.root / "app.conf").read_text() == "version=1\n"


def test_a_timeout_on_a_step_that_cannot_honour_it_is_refused_before_anything_runs(aura: Aura, setup: Any) -> None:
    step = {"name": "pause", "action": "wait", "timeout": 1, "with": {"argv": ["true"]}}
    book = _book(aura, "pause", [_config_step(aura), step])
    result = aura("run", str(book), check=2)
    assert (
        "step 2 'pause': timeout: wait cannot be stopped at a timeout (only command, migrate, sql can)" in result.stderr
    )
    assert (aura.root / "app.conf").read_text() == "version=1\n"
    assert aura.json("runs", "list")["runs"] == []


@pytest.mark.parametrize(
    "moment",
    [
        "run:start:SIGTERM",
        "snapshot:applied:SIGINT",
        "config:applied:SIGTERM",
        "marker:before:SIGTERM",
        "gate:after:SIGINT",
        "run:end:SIGTERM",
        "run:end:SIGINT",
    ],
)
def test_a_signal_at_any_moment_of_a_run_ends_it_rolled_back(
    pg: PostgresCluster, database: str, aura: Aura, setup: Any, moment: str
) -> None:
    book, old = setup
    result = aura("run", str(book), "--json", check=1, env={"AURA_FAULT": moment})
    outcome = json.loads(result.stdout)
    assert outcome["run"]["status"] == "rolled_back"
    assert "interrupted by SIG" in outcome["message"]
    assert world(pg, database, aura.root) == old
    assert_settled(aura, outcome["run"]["id"], "rolled_back")


# ---------------------------------------------------------------- class 5: only its own work


def _release_setup(aura: Aura) -> Path:
    app = aura.root / "app"
    (app / "releases" / "v1").mkdir(parents=True)
    (app / "current").symlink_to("releases/v1")
    config = yaml.safe_load(aura.config_path.read_text())
    config["components"]["app"] = {"type": "release", "path": str(app)}
    aura.write_config(config)
    return app


@pytest.mark.parametrize("kind", ["command", "sql", "release_switch", "file"])
def test_a_step_already_applied_before_the_run_is_never_undone_by_its_compensation(
    pg: PostgresCluster, database: str, aura: Aura, setup: Any, kind: str
) -> None:
    marker = aura.root / "marker"
    if kind == "command":
        marker.write_text("from an earlier run\n")
        step = {
            "action": "command",
            "with": {"argv": ["sh", "-c", f"echo new > {marker}"], "check": ["test", "-s", str(marker)]},
        }
        step["with"]["undo"] = ["rm", "-f", str(marker)]
    elif kind == "sql":
        pg.sql("ALTER TABLE items ADD COLUMN v2 int", database)
        step = {
            "action": "sql",
            "with": {
                "component": "db",
                "sql": "ALTER TABLE items ADD COLUMN v2 int",
                "check": "SELECT count(*) > 0 FROM information_schema.columns WHERE column_name = 'v2'",
                "undo": "ALTER TABLE items DROP COLUMN v2",
            },
        }
    elif kind == "release_switch":
        _release_setup(aura)
        step = {"action": "release_switch", "with": {"version": "v1"}}
    else:
        (aura.root / "app.conf").write_text("version=2\n")
        step = _config_step(aura)
        del step["name"]
    before = world(pg, database, aura.root)
    current = os.readlink(aura.root / "app" / "current") if kind == "release_switch" else None
    book = _book(aura, "again", [{"name": "again", **step}, FAIL])
    outcome = json.loads(aura("run", str(book), "--json", check=1).stdout)
    assert outcome["run"]["status"] == "rolled_back"
    assert world(pg, database, aura.root) == before
    if kind == "command":
        assert marker.read_text() == "from an earlier run\n"
    if kind == "release_switch":
        assert os.readlink(aura.root / "app" / "current") == current
    shown = aura.json("runs", "show", outcome["run"]["id"])
    assert [s["status"] for s in shown["steps"]] == ["already_applied", "failed"]
    assert "already_applied" in aura("runs", "show", outcome["run"]["id"]).stdout


def test_a_step_its_own_run_applied_before_a_crash_is_still_undone(
    pg: PostgresCluster, database: str, aura: Aura, setup: Any
) -> None:
    app = _release_setup(aura)
    (app / "releases" / "v2").mkdir()
    book = _book(aura, "switch", [{"name": "switch", "action": "release_switch", "with": {"version": "v2"}}, FAIL])
    aura("run", str(book), check=137, env={"AURA_FAULT": "switch:after"})
    run_id = aura.json("runs", "list")["runs"][0]["id"]
    assert os.readlink(app / "current") == "releases/v2"
    aura("runs", "resume", run_id, check=1)  # the switch is found applied, by this run: undone
    assert os.readlink(app / "current") == "releases/v1"
    statuses = [s["status"] for s in aura.json("runs", "show", run_id)["steps"]]
    assert statuses == ["compensated", "failed"]


# ---------------------------------------------------------------- class 5: file steps undone exactly


def _meta(path: Path) -> tuple[Any, ...]:
    st = path.lstat()
    kind = "link" if path.is_symlink() else "file"
    body = os.readlink(path) if kind == "link" else path.read_bytes()
    mode = None if kind == "link" else st.st_mode & 0o7777
    return kind, body, mode, st.st_uid, st.st_gid, None if kind == "link" else st.st_mtime_ns


def test_a_file_step_undo_restores_symlinks_modes_owners_and_absence_exactly(aura: Aura, setup: Any) -> None:
    require(os.geteuid() == 0, "root (to give files another owner)")
    root = aura.root
    owned = root / "owned.conf"
    owned.write_text("old\n")
    os.chown(owned, 1234, 2345)
    os.chmod(owned, 0o2640)
    os.utime(owned, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    (root / "target.conf").write_text("target\n")
    link = root / "link.conf"
    link.symlink_to("target.conf")
    os.lchown(link, 1234, 2345)
    before = {p: _meta(p) for p in (owned, link, root / "target.conf")}
    book = _book(
        aura,
        "files",
        [
            {"name": "owned", "action": "file", "with": {"path": str(owned), "content": "new\n", "mode": 0o600}},
            {"name": "link", "action": "file", "with": {"path": str(link), "content": "new\n"}},
            {"name": "fresh", "action": "file", "with": {"path": str(root / "fresh.conf"), "content": "new\n"}},
            FAIL,
        ],
    )
    outcome = json.loads(aura("run", str(book), "--json", check=1).stdout)
    assert [s["status"] for s in outcome["steps"]] == ["compensated"] * 3 + ["failed"]
    assert {p: _meta(p) for p in before} == before
    assert not (root / "fresh.conf").exists() and not (root / "fresh.conf").is_symlink()
    assert not [p.name for p in root.iterdir() if "aura-tmp" in p.name]


def test_a_file_step_keeps_the_owner_of_the_file_it_replaces(aura: Aura, setup: Any) -> None:
    require(os.geteuid() == 0, "root (to give files another owner)")
    owned = aura.root / "owned.conf"
    owned.write_text("old\n")
    os.chown(owned, 1234, 2345)
    os.chmod(owned, 0o640)
    book = _book(aura, "own", [{"name": "owned", "action": "file", "with": {"path": str(owned), "content": "new\n"}}])
    aura("run", str(book))
    st = owned.stat()
    assert (owned.read_text(), st.st_uid, st.st_gid, st.st_mode & 0o7777) == ("new\n", 1234, 2345, 0o640)


def test_a_file_step_on_a_directory_fails_without_touching_it(aura: Aura, setup: Any) -> None:
    folder = aura.root / "folder"
    folder.mkdir()
    (folder / "inside").write_text("kept\n")
    book = _book(
        aura,
        "dir",
        [_config_step(aura), {"name": "d", "action": "file", "with": {"path": str(folder), "content": "x"}}],
    )
    outcome = json.loads(aura("run", str(book), "--json", check=1).stdout)
    assert "is a directory" in outcome["steps"][1]["error"].lower()
    assert (folder / "inside").read_text() == "kept\n"
    assert (aura.root / "app.conf").read_text() == "version=1\n"
