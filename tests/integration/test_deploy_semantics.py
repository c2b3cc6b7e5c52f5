"""Deploy means what the user means: "this version is live" (not "it once succeeded"), usage errors
before anything is touched, and an unrelated interrupted run that blocks changes but not backups.
Real PostgreSQL (psql migrations) and real release folders; the health check is a command that
reads the live release, so no Docker engine is needed."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from aura_ops.dev.sandbox import PostgresCluster, wait_until
from aura_ops.state.lock import hold
from tests.conftest import Aura, db_component

MIGRATE = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "migrate.sql"]


@pytest.fixture
def site(pg: PostgresCluster, database: str, aura: Aura, tmp_path: Path) -> dict[str, Any]:
    dsn = pg.dsn(database)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE items (id serial PRIMARY KEY, name text);"
            " INSERT INTO items (name) SELECT 'item' || g FROM generate_series(1, 50) g"
        )
    app = tmp_path / "app"
    app.mkdir()
    aura.env["AURA_DB_DSN"] = dsn
    aura.write_config(
        {
            "repository": {"path": "repo"},
            "components": {"db": db_component(), "app": {"type": "release", "path": str(app), "keep": 5}},
            "deploy": {"migrate": MIGRATE},
            "checks": [
                {"type": "command", "argv": ["test", "-f", str(app / "current" / "health")], "deadline": 2},
            ],
        }
    )
    return {"dsn": dsn, "app": app, "root": tmp_path, "database": database}


def release(site: dict[str, Any], version: str, healthy: bool = True, migration: str = "SELECT 1;\n") -> Path:
    folder = site["root"] / "sources" / version
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.html").write_text(f"shop {version}\n")
    if healthy:
        (folder / "health").write_text(f"ok {version}\n")
    else:
        (folder / "health").unlink(missing_ok=True)
    (folder / "migrate.sql").write_text(migration)
    return folder


def deploy(aura: Aura, site: dict[str, Any], version: str, *extra: str, check: int | None = 0) -> Any:
    source = site["root"] / "sources" / version
    if not source.exists():
        release(site, version)
    return aura("deploy", "--version", version, "--source", str(source), *extra, check=check)


def live(site: dict[str, Any]) -> str | None:
    current = site["app"] / "current"
    return current.resolve().name if current.is_symlink() else None


def columns(site: dict[str, Any]) -> list[str]:
    with psycopg.connect(site["dsn"]) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'items' ORDER BY ordinal_position"
        ).fetchall()
    return [r[0] for r in rows]


def counts(aura: Aura) -> tuple[int, int]:
    return len(aura.json("runs", "list", "--limit", "1000")["runs"]), len(aura.json("snapshots", "list")["snapshots"])


# ---------------------------------------------------------------- idempotency: "this version is live"


def test_the_live_version_is_checked_not_redeployed_and_an_unhealthy_one_points_to_rollback(
    aura: Aura, site: dict[str, Any]
) -> None:
    deploy(aura, site, "v1")
    before = counts(aura)
    again = aura.json("deploy", "--version", "v1", "--source", str(site["root"] / "sources" / "v1"))
    assert "nothing to do" in again["message"] and "live" in again["message"]
    assert counts(aura) == before  # no run, no snapshot
    (site["app"] / "releases" / "v1" / "health").unlink()  # the live release breaks
    sick = deploy(aura, site, "v1", check=1)
    assert "aura-ops rollback" in sick.stderr and "v1" in sick.stderr
    assert counts(aura) == before and live(site) == "v1"


def test_a_version_that_was_replaced_is_reached_by_rollback_not_deploy(aura: Aura, site: dict[str, Any]) -> None:
    deploy(aura, site, "v1")
    deploy(aura, site, "v2")
    before = counts(aura)
    refused = deploy(aura, site, "v1", check=2)
    assert "aura-ops rollback --to-release v1" in refused.stderr
    assert live(site) == "v2" and counts(aura) == before
    first = refused.stderr.splitlines()[0]
    assert first.startswith(f"aura-ops: config {aura.config_path},") and "v1" in first


def test_a_version_that_failed_or_was_rolled_back_can_be_deployed_again(aura: Aura, site: dict[str, Any]) -> None:
    deploy(aura, site, "v1")
    # a deploy of v2 killed mid-way is not a failure to retry: it must be resumed or aborted first
    source = release(site, "v2")
    aura("deploy", "--version", "v2", "--source", str(source), check=137, env={"AURA_FAULT": "switch:after"})
    killed = aura.json("runs", "list")["runs"][0]["id"]
    refused = deploy(aura, site, "v2", check=5)
    assert f"runs resume {killed}" in refused.stderr and f"runs abort {killed}" in refused.stderr
    aura("runs", "abort", killed, "--yes", check=0)
    assert live(site) == "v1"
    # a transient failure without --rollback-on-fail: the migration fails, v2's folder stays behind
    release(site, "v2", migration="SELECT 1/0;")
    deploy(aura, site, "v2", check=1)
    assert live(site) == "v1" and (site["app"] / "releases" / "v2").is_dir()
    release(site, "v2", migration="ALTER TABLE items ADD COLUMN IF NOT EXISTS price int;")
    deploy(aura, site, "v2")
    assert live(site) == "v2" and columns(site) == ["id", "name", "price"]
    # v2 went live, then was rolled back; once fixed it is deployed again, not skipped
    aura("rollback", "--to-release", "v1", "--yes")
    assert live(site) == "v1" and columns(site) == ["id", "name"]
    release(site, "v2", migration="ALTER TABLE items ADD COLUMN IF NOT EXISTS price int DEFAULT 2;")
    again = json.loads(deploy(aura, site, "v2", "--json").stdout)
    assert again["run"]["status"] == "succeeded"
    assert live(site) == "v2" and columns(site) == ["id", "name", "price"]
    states = json.loads((site["app"] / ".aura" / "releases.json").read_text())
    assert states["v2"]["state"] == "verified"


# ---------------------------------------------------------------- usage errors before anything


def set_config(aura: Aura, **sections: Any) -> None:
    config = yaml.safe_load(aura.config_path.read_text())
    for key, value in sections.items():
        if value is None:
            config.pop(key, None)
        elif isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    aura.write_config(config)


@pytest.mark.parametrize(
    "mistake",
    [
        "version with a space",
        "version ../up",
        "missing source",
        "source is a plain file",
        "unknown deploy.release",
        "unknown deploy.services",
        "unknown deploy.database",
        "no release component",
    ],
)
def test_a_usage_error_is_found_before_any_lock_snapshot_or_stop(
    aura: Aura, site: dict[str, Any], mistake: str
) -> None:
    version, source = "v1", release(site, "v1")
    if mistake.startswith("version"):
        version = mistake.removeprefix("version ")
    elif mistake == "missing source":
        source = site["root"] / "nowhere"
    elif mistake == "source is a plain file":
        source = source / "index.html"
    elif mistake.startswith("unknown deploy."):
        set_config(aura, deploy={mistake.removeprefix("unknown deploy."): "nosuch"})
    else:
        config = yaml.safe_load(aura.config_path.read_text())
        del config["components"]["app"]
        aura.write_config(config)
    (site["root"] / "state").mkdir(exist_ok=True)
    with hold(site["root"] / "state" / "run.lock", "someone-else", "run deploy"):  # the run lock is busy
        result = aura("deploy", "--version", version, "--source", str(source), "--rollback-on-fail", check=2)
    assert "someone-else" not in result.stderr
    assert counts(aura) == (0, 0)  # no run, no snapshot
    assert not (site["app"] / "releases").exists()


def test_a_rollback_to_a_release_that_is_not_installed_is_a_usage_error_before_anything(
    aura: Aura, site: dict[str, Any]
) -> None:
    deploy(aura, site, "v1")
    deploy(aura, site, "v2")
    before = counts(aura)
    with hold(site["root"] / "state" / "run.lock", "someone-else", "run deploy"):
        for target in ("v9", "../v1", ""):
            result = aura("rollback", "--to-release", target, "--keep-data", check=2)
            assert "someone-else" not in result.stderr
    assert counts(aura) == before and live(site) == "v2"


# ---------------------------------------------------------------- an unrelated interrupted run


def crashed_run(aura: Aura, root: Path) -> str:
    book = root / "touch.yaml"
    book.write_text(
        yaml.safe_dump(
            {
                "name": "touch",
                "steps": [
                    {"name": "first", "action": "command", "with": {"argv": ["true"]}},
                    {"name": "second", "action": "command", "with": {"argv": ["true"]}},
                ],
            }
        )
    )
    aura("run", str(book), check=137, env={"AURA_FAULT": "second:before"})
    return str(aura.json("runs", "list")["runs"][0]["id"])


def test_an_interrupted_run_lets_a_backup_through_and_blocks_deploy_rollback_and_restore(
    aura: Aura, site: dict[str, Any]
) -> None:
    deploy(aura, site, "v1")
    deploy(aura, site, "v2")
    run_id = crashed_run(aura, site["root"])
    before = counts(aura)
    backup = aura("backup")
    assert "run.unfinished" in backup.stderr and run_id in backup.stderr
    assert counts(aura) == (before[0], before[1] + 1)
    for args in (
        ("deploy", "--version", "v3", "--source", str(release(site, "v3"))),
        ("rollback", "--yes"),
        ("restore", "latest", "--yes"),
    ):
        refused = aura(*args, check=5)
        assert f"run {run_id}" in refused.stderr and "is dead" in refused.stderr, args
        assert f"aura-ops runs resume {run_id}" in refused.stderr and f"aura-ops runs abort {run_id}" in refused.stderr
    assert counts(aura) == (before[0], before[1] + 1) and live(site) == "v2"
    assert not (site["app"] / "releases" / "v3").exists()
    aura("runs", "resume", run_id)
    deploy(aura, site, "v3")
    assert live(site) == "v3"


def test_a_refusal_says_when_the_unfinished_run_is_still_alive(aura: Aura, site: dict[str, Any]) -> None:
    deploy(aura, site, "v1")
    book = site["root"] / "slow.yaml"
    book.write_text(
        yaml.safe_dump(
            {"name": "slow", "steps": [{"name": "wait", "action": "command", "with": {"argv": ["sleep", "120"]}}]}
        )
    )
    slow = aura.popen("run", str(book))
    try:
        # the deploy's run is listed already: wait for the slow playbook's own run
        assert wait_until(
            lambda: any(Path(r["playbook"]).stem == "slow" for r in aura.json("runs", "list")["runs"]), timeout=60
        )
        run_id = next(r["id"] for r in aura.json("runs", "list")["runs"] if Path(r["playbook"]).stem == "slow")
        refused = aura("restore", "latest", "--yes", check=5)
        assert f"pid {slow.pid}" in refused.stderr and "is still alive" in refused.stderr
    finally:
        slow.send_signal(signal.SIGKILL)
        slow.communicate(timeout=30)
    refused = aura("restore", "latest", "--yes", check=5)
    assert f"run {run_id}" in refused.stderr and "is dead" in refused.stderr
