"""`aura-ops deploy` end to end: real PostgreSQL (psql migrations), rsync releases, and a busybox
httpd container on a real Docker engine serving the current release."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest

from aura_ops.dev.sandbox import PostgresCluster, free_port, wait_until
from tests.conftest import Aura, db_component


def fingerprint(dsn: str) -> Any:
    with psycopg.connect(dsn) as conn:
        columns = conn.execute(
            "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) "
            "FROM information_schema.columns WHERE table_name = 'items'"
        ).fetchone()
        rows = conn.execute("SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM items t").fetchone()
    return columns, rows


def make_release(
    root: Path, version: str, healthy: bool = True, migration: str | None = None, index: str | None = "shop"
) -> Path:
    folder = root / "sources" / version
    folder.mkdir(parents=True)
    if index is not None:  # without index.html the container refuses to start
        (folder / "index.html").write_text(f"<h1>{index} {version}</h1>\n")
    if healthy:
        (folder / "health").write_text(f"ok {version}\n")
    (folder / "migrate.sql").write_text(migration or "SELECT 1;\n")
    return folder


def serve(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback test server
            return str(response.read().decode())
    except OSError:
        return None


@pytest.fixture
def site(pg: PostgresCluster, database: str, aura: Aura, engine: Any, tmp_path: Path) -> dict[str, Any]:
    dsn = pg.dsn(database)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE items (id serial PRIMARY KEY, name text);"
            " INSERT INTO items (name) SELECT 'item' || g FROM generate_series(1, 300) g"
        )
    app = tmp_path / "app"
    app.mkdir()
    port = free_port()
    container = engine.containers.create(
        "aura-test/busybox",
        ["sh", "-c", f"test -e /app/current/index.html && exec httpd -f -p 127.0.0.1:{port} -h /app/current"],
        name=f"web-{tmp_path.name[-12:]}",
        network_mode="host",
        init=True,
        labels={"aura-test": "1"},
        volumes={str(app): {"bind": "/app", "mode": "ro"}},
    )
    aura.env["AURA_DB_DSN"] = dsn
    aura.write_config(
        {
            "repository": {"path": "repo"},
            "components": {
                "db": db_component(),
                "app": {"type": "release", "path": str(app), "keep": 3},
                "web": {"type": "docker", "url": engine.url, "containers": [container.name], "timeout": 15},
            },
            "deploy": {"migrate": ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "migrate.sql"]},
            "checks": [
                {"type": "container", "component": "web", "deadline": 2},
                {"type": "http", "url": f"http://127.0.0.1:{port}/health", "deadline": 4, "interval": 0.5},
            ],
            "smoke_checks": [
                {"type": "http", "url": f"http://127.0.0.1:{port}/index.html", "body_contains": "shop", "deadline": 2}
            ],
        }
    )
    yield {"dsn": dsn, "app": app, "url": f"http://127.0.0.1:{port}", "root": tmp_path}
    container.remove(force=True)


def deploy(aura: Aura, site: dict[str, Any], version: str, check: int = 0, **release: Any) -> dict[str, Any]:
    source = make_release(site["root"], version, **release)
    result = aura("deploy", "--version", version, "--source", str(source), "--rollback-on-fail", "--json", check=check)
    return dict(json.loads(result.stdout))


def test_good_deploys_switch_release_and_serve_it(aura: Aura, site: dict[str, Any]) -> None:
    first = deploy(aura, site, "v1")
    assert first["run"]["status"] == "succeeded"
    assert serve(site["url"] + "/health") == "ok v1\n"
    assert [c["check"] for c in first["preflight"] if "clone" in c["check"]] == ["db: fast rollback clone"]
    assert no_clones_left(site)  # the clone is dropped once the release is verified
    second = deploy(aura, site, "v2", migration="ALTER TABLE items ADD COLUMN price int DEFAULT 0;")
    assert second["run"]["status"] == "succeeded"
    assert serve(site["url"] + "/health") == "ok v2\n"
    assert fingerprint(site["dsn"])[0][0] == "id,name,price"
    states = json.loads((site["app"] / ".aura" / "releases.json").read_text())
    assert states["v2"]["state"] == "verified"
    again = aura.json("deploy", "--version", "v2", "--source", str(site["root"] / "sources" / "v2"))
    assert "nothing to do" in again["message"]


def set_deploy(aura: Aura, **settings: Any) -> None:
    import yaml

    config = yaml.safe_load(aura.config_path.read_text())
    config["deploy"].update(settings)
    aura.write_config(config)


@pytest.mark.parametrize(
    ("failure", "fast"),
    [
        ("health", "auto"),
        ("migration", "auto"),
        ("container", "auto"),
        ("smoke", "auto"),
        ("migration", "off"),
        ("health", "off"),
    ],
)
def test_bad_deploy_rolls_back_database_release_and_service(
    aura: Aura, site: dict[str, Any], failure: str, fast: str
) -> None:
    set_deploy(aura, fast_rollback=fast)
    deploy(aura, site, "v1")
    before = fingerprint(site["dsn"])
    if failure == "health":
        bad = deploy(
            aura,
            site,
            "v2",
            check=1,
            healthy=False,
            migration="ALTER TABLE items ADD COLUMN price int; UPDATE items SET name = upper(name);",
        )
    elif failure == "migration":  # fails half-way: the UPDATE is committed before the error
        bad = deploy(
            aura, site, "v2", check=1, migration="UPDATE items SET name = 'gone'; ALTER TABLE nowhere ADD COLUMN x int;"
        )
    else:
        damage = "ALTER TABLE items ADD COLUMN price int; DELETE FROM items WHERE id < 100;"
        bad = deploy(aura, site, "v2", check=1, migration=damage, index=None if failure == "container" else "blank")
    failed = [s["name"] for s in bad["steps"] if s["error"]]
    assert failed == [{"health": "health", "migration": "migrate", "container": "start", "smoke": "smoke"}[failure]]
    assert bad["run"]["status"] == "rolled_back"
    assert fingerprint(site["dsn"]) == before
    assert (site["app"] / "current").resolve().name == "v1"
    assert serve(site["url"] + "/health") == "ok v1\n"
    assert bad["time_to_restore_seconds"] > 0
    # the database came back by swapping in the clone taken after the stop, or from the dump
    assert bad["database_restore"]["path"] == ("clone" if fast == "auto" else "snapshot")
    assert no_clones_left(site)
    states = json.loads((site["app"] / ".aura" / "releases.json").read_text())
    assert states["v1"]["state"] == "verified"


def no_clones_left(site: dict[str, Any]) -> bool:
    name = site["dsn"].rsplit("/", 1)[1]
    with psycopg.connect(site["dsn"]) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (name + "_aura",))
        return rows.fetchall() == []


def test_without_rollback_a_failed_deploy_leaves_services_running_and_says_how_to_undo(
    aura: Aura, site: dict[str, Any]
) -> None:
    deploy(aura, site, "v1")
    source = make_release(site["root"], "v2", healthy=False)
    result = aura("deploy", "--version", "v2", "--source", str(source), check=1)
    assert "runs abort" in result.stderr
    assert serve(site["url"] + "/index.html") == "<h1>shop v2</h1>\n"  # new version left running
    run_id = aura.json("runs", "list")["runs"][0]["id"]
    refused = aura("runs", "abort", run_id, check=2)  # its undo puts the database back: consent first
    assert "migrate" in refused.stderr and "--yes" in refused.stderr
    assert serve(site["url"] + "/index.html") == "<h1>shop v2</h1>\n"
    aura("runs", "abort", run_id, "--yes", check=0)
    assert serve(site["url"] + "/health") == "ok v1\n"


def test_dry_run_changes_nothing(aura: Aura, site: dict[str, Any]) -> None:
    source = make_release(site["root"], "v1")
    plan = aura.json("deploy", "--version", "v1", "--source", str(source), "--dry-run")
    assert [s["name"] for s in plan["steps"]][:6] == ["snapshot", "upload", "clean_clones", "stop", "clone", "migrate"]
    assert not (site["app"] / "releases").exists()
    assert aura.json("snapshots", "list")["snapshots"] == []


def test_rollback_after_a_good_deploy_restores_release_data_and_service(aura: Aura, site: dict[str, Any]) -> None:
    deploy(aura, site, "v1")
    before_v2 = fingerprint(site["dsn"])
    deploy(aura, site, "v2", migration="ALTER TABLE items ADD COLUMN price int; UPDATE items SET name = upper(name);")
    assert serve(site["url"] + "/health") == "ok v2\n"

    refused = aura("rollback", check=2)
    assert "--yes" in refused.stderr and "Writes made since then are discarded" in refused.stderr
    assert fingerprint(site["dsn"]) != before_v2

    done = aura.json("rollback", "--yes")
    assert done["run"]["status"] == "succeeded"
    assert done["target"]["release"] == "v1"
    assert fingerprint(site["dsn"]) == before_v2
    assert serve(site["url"] + "/health") == "ok v1\n"
    states = json.loads((site["app"] / ".aura" / "releases.json").read_text())
    assert states["v2"]["state"] == "rolled_back"
    assert states["v1"]["state"] == "verified"


def test_rollback_keep_data_leaves_the_database_alone(aura: Aura, site: dict[str, Any]) -> None:
    deploy(aura, site, "v1")
    deploy(aura, site, "v2", migration="ALTER TABLE items ADD COLUMN price int;")
    after_v2 = fingerprint(site["dsn"])
    done = aura.json("rollback", "--to-release", "v1", "--keep-data")
    assert done["run"]["status"] == "succeeded"
    assert fingerprint(site["dsn"]) == after_v2
    assert serve(site["url"] + "/health") == "ok v1\n"


def test_a_concurrent_deploy_exits_5(aura: Aura, site: dict[str, Any]) -> None:
    from aura_ops.state.lock import hold

    deploy(aura, site, "v1")
    source = make_release(site["root"], "v2")
    with hold(site["root"] / "state" / "run.lock", "other-deploy", "run deploy"):
        result = aura("deploy", "--version", "v2", "--source", str(source), check=5)
    assert "other-deploy" in result.stderr
    assert serve(site["url"] + "/health") == "ok v1\n"


DEPLOY_STEPS = [
    "snapshot",
    "upload",
    "clean_clones",
    "stop",
    "clone",
    "migrate",
    "switch",
    "start",
    "health",
    "smoke",
    "verified",
    "prune",
    "drop_clone",
]


@pytest.mark.parametrize("then", ["resume", "abort"])
@pytest.mark.parametrize("point", ["before", "after"])
@pytest.mark.parametrize("step", DEPLOY_STEPS)
def test_deploy_killed_at_each_step_ends_all_old_or_all_new(
    aura: Aura, site: dict[str, Any], step: str, point: str, then: str
) -> None:
    deploy(aura, site, "v1")
    old = fingerprint(site["dsn"])
    # idempotent, as migration tools are (they record what they applied): a resumed run re-runs it
    source = make_release(
        site["root"], "v2", migration="ALTER TABLE items ADD COLUMN IF NOT EXISTS price int DEFAULT 1;"
    )
    aura(
        "deploy",
        "--version",
        "v2",
        "--source",
        str(source),
        "--rollback-on-fail",
        check=137,
        env={"AURA_FAULT": f"{step}:{point}"},
    )
    run_id = aura.json("runs", "list")["runs"][0]["id"]
    aura("runs", then, run_id, *(["--yes"] if then == "abort" else []), check=0)
    current = (site["app"] / "current").resolve().name
    if then == "resume":
        assert current == "v2" and serve(site["url"] + "/health") == "ok v2\n"
        assert fingerprint(site["dsn"])[0][0] == "id,name,price"
    else:
        assert current == "v1" and serve(site["url"] + "/health") == "ok v1\n"
        assert fingerprint(site["dsn"]) == old
    assert no_clones_left(site)


def test_preflight_failure_changes_nothing(aura: Aura, site: dict[str, Any]) -> None:
    import yaml

    config = yaml.safe_load(aura.config_path.read_text())
    config["components"]["web"]["containers"] = ["no-such-container"]
    aura.write_config(config)
    source = make_release(site["root"], "v1")
    result = aura("deploy", "--version", "v1", "--source", str(source), "--rollback-on-fail", check=2)
    assert "preflight failed" in result.stderr and "not found" in result.stderr
    assert aura.json("runs", "list")["runs"] == []  # refused before the run lock: no run at all
    assert aura.json("snapshots", "list")["snapshots"] == []
    assert not (site["app"] / "releases").exists()


def test_a_session_left_on_the_database_means_no_clone_and_the_snapshot_path(aura: Aura, site: dict[str, Any]) -> None:
    deploy(aura, site, "v1")
    before = fingerprint(site["dsn"])
    set_deploy(aura, fast_rollback_wait=1)
    with psycopg.connect(site["dsn"], autocommit=True) as other:  # a worker aura-ops does not manage
        other.execute("SELECT 1")
        bad = deploy(aura, site, "v2", check=1, migration="UPDATE items SET name = 'x'; SELECT 1/0;")
    assert bad["steps"][[s["name"] for s in bad["steps"]].index("clone")]["status"] == "compensated"
    assert bad["database_restore"]["path"] == "snapshot"
    assert fingerprint(site["dsn"]) == before
    assert serve(site["url"] + "/health") == "ok v1\n"


def test_required_fast_rollback_fails_the_deploy_when_no_clone_can_be_made(aura: Aura, site: dict[str, Any]) -> None:
    deploy(aura, site, "v1")
    before = fingerprint(site["dsn"])
    set_deploy(aura, fast_rollback="required", fast_rollback_wait=1)
    with psycopg.connect(site["dsn"], autocommit=True) as other:
        other.execute("SELECT 1")
        bad = deploy(aura, site, "v2", check=1, migration="UPDATE items SET name = 'x';")
    failed = [(s["name"], s["error"]) for s in bad["steps"] if s["error"]]
    assert failed[0][0] == "clone" and "other session(s) still connected" in failed[0][1]
    assert bad["run"]["status"] == "rolled_back"
    assert fingerprint(site["dsn"]) == before
    assert serve(site["url"] + "/health") == "ok v1\n"  # the stopped service was started again
    assert no_clones_left(site)


def test_required_fast_rollback_without_the_privilege_fails_preflight(
    aura: Aura, site: dict[str, Any], pg: PostgresCluster
) -> None:
    name = site["dsn"].rsplit("/", 1)[1]
    role = f"app_{name}"
    pg.sql(f'CREATE ROLE "{role}" LOGIN NOCREATEDB')
    try:
        pg.sql(f'GRANT ALL ON DATABASE "{name}" TO "{role}"')
        aura.env["AURA_DB_DSN"] = pg.dsn(name, user=role)
        set_deploy(aura, fast_rollback="required")
        source = make_release(site["root"], "v1")
        result = aura("deploy", "--version", "v1", "--source", str(source), check=1)
        assert "preflight failed" in result.stderr and "CREATEDB" in result.stderr
        assert aura.json("runs", "list")["runs"] == []
        set_deploy(aura, fast_rollback="auto")  # auto: a warning in the preflight report, not a failure
        plan = aura.json("deploy", "--version", "v1", "--source", str(source), "--dry-run")
        assert plan["steps"][4]["name"] == "clone"
    finally:
        pg.sql(f'REVOKE ALL ON DATABASE "{name}" FROM "{role}"')
        pg.sql(f'DROP ROLE "{role}"')


@pytest.mark.parametrize("fast", ["auto", "off"])
def test_database_grants_and_settings_survive_a_rollback(
    aura: Aura, site: dict[str, Any], pg: PostgresCluster, fast: str
) -> None:
    name = site["dsn"].rsplit("/", 1)[1]
    role = f"reader_{name}"
    pg.sql(f'CREATE ROLE "{role}"')
    try:
        pg.sql(f'ALTER DATABASE "{name}" SET search_path = app, "$user", public')
        pg.sql(f"ALTER DATABASE \"{name}\" SET work_mem = '7MB'")
        pg.sql(f'ALTER ROLE "{role}" IN DATABASE "{name}" SET statement_timeout = 1234')
        pg.sql(f'REVOKE CONNECT ON DATABASE "{name}" FROM PUBLIC')
        pg.sql(f'GRANT CONNECT, TEMPORARY ON DATABASE "{name}" TO "{role}" WITH GRANT OPTION')
        pg.sql(f'ALTER DATABASE "{name}" CONNECTION LIMIT 40')
        query = (
            "SELECT (SELECT array_agg(a::text ORDER BY a::text) FROM unnest(d.datacl) a), d.datconnlimit,"
            " (SELECT array_agg(coalesce(r.rolname, '-') || ':' || c"
            " ORDER BY r.rolname, c) FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole,"
            f" unnest(s.setconfig) c WHERE s.setdatabase = d.oid) FROM pg_database d WHERE d.datname = '{name}'"
        )
        before = pg.sql(query)
        set_deploy(aura, fast_rollback=fast)
        deploy(aura, site, "v1")
        bad = deploy(aura, site, "v2", check=1, migration="UPDATE items SET name = 'x'; SELECT 1/0;")
        assert bad["database_restore"]["path"] == ("clone" if fast == "auto" else "snapshot")
        assert pg.sql(query) == before
        assert 'search_path=app, "$user", public' in str(before)
    finally:
        pg.sql(f'REVOKE ALL ON DATABASE "{name}" FROM "{role}" CASCADE')
        pg.sql(f'ALTER ROLE "{role}" IN DATABASE "{name}" RESET ALL')
        pg.sql(f'DROP ROLE "{role}"')


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


@pytest.mark.parametrize("no_clone", ["off", "session"])
def test_a_write_accepted_before_the_stop_survives_a_rollback_on_the_snapshot_path(
    aura: Aura, site: dict[str, Any], no_clone: str
) -> None:
    """No clone (fast_rollback off, or a session that blocks it): the dump a rollback restores
    is taken after the services stopped, so a write the live system accepted between the
    deploy's first snapshot and the stop is not lost."""
    deploy(aura, site, "v1")
    set_deploy(aura, fast_rollback="off" if no_clone == "off" else "auto", fast_rollback_wait=1)
    source = make_release(site["root"], "v2", migration="UPDATE items SET name = 'x'; SELECT 1/0;")
    with psycopg.connect(site["dsn"], autocommit=True) as other:  # a worker aura-ops does not manage
        other.execute("SELECT 1")
        # the deploy stops itself once its snapshot is taken and the release uploaded, services still up
        process = aura.popen(
            "deploy",
            "--version",
            "v2",
            "--source",
            str(source),
            "--rollback-on-fail",
            "--json",
            env={"AURA_PAUSE": "upload:after"},
        )
        try:
            assert wait_until(lambda: process.poll() is not None or _stopped(process.pid), 120)
            assert process.poll() is None, process.communicate()[1]
            assert serve(site["url"] + "/health") == "ok v1\n"  # the live system still serves
            other.execute("INSERT INTO items (name) VALUES ('accepted before the stop')")
            written = fingerprint(site["dsn"])
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
        out, err = process.communicate(timeout=300)
    assert process.returncode == 1, err
    report = json.loads(out)
    assert report["run"]["status"] == "rolled_back"
    assert fingerprint(site["dsn"]) == written  # the late write survived the rollback
    restored = report["database_restore"]
    first = next(s for s in report["steps"] if s["name"] == "snapshot")["outputs"]["snapshot_id"]
    assert restored["path"] == "snapshot" and restored["snapshot"] != first
    assert restored["taken"] == "after the services stopped"
    assert serve(site["url"] + "/health") == "ok v1\n"
