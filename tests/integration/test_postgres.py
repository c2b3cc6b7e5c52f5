"""PostgreSQL snapshots against a real server: round trips, consistency, failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import psycopg
import pytest

from aura_ops.dev.sandbox import PostgresCluster, wait_until
from tests.conftest import Aura, base_config, db_component
from tests.pgdata import build_rich_database, fingerprint, schema_dump


@pytest.fixture
def rich(pg: PostgresCluster, database: str, aura: Aura) -> str:
    dsn = pg.dsn(database)
    build_rich_database(dsn)
    aura.env["AURA_DB_DSN"] = dsn
    aura.write_config(base_config({"db": db_component(checksums=True)}))
    return dsn


def test_round_trip_into_new_database_has_identical_content(
    pg: PostgresCluster, database: str, rich: str, aura: Aura
) -> None:
    before = fingerprint(rich)
    manifest = aura.json("backup")
    entry = manifest["components"]["db"]
    assert entry["row_counts"]["public.users"] == 60000
    assert entry["row_counts"]["billing.invoices"] == 60000
    assert entry["large_objects"] == 5
    assert all(f.endswith((".zst", "toc.dat", "blobs.toc", "globals.sql")) for f in entry["artifacts"])

    aura("restore", manifest["id"], "--to-database", f"{database}_copy")

    copy = pg.dsn(f"{database}_copy")
    assert fingerprint(copy) == before
    assert schema_dump(copy) == schema_dump(rich)
    assert "GRANT SELECT ON TABLE billing.invoices TO aura_reader" in schema_dump(copy)


def test_restore_to_the_maintenance_database_is_refused(
    pg: PostgresCluster, database: str, rich: str, aura: Aura
) -> None:
    aura("backup")
    result = aura("restore", "latest", "--to-database", "postgres", "--yes", check=2)
    assert "postgres is the maintenance database" in result.stderr


def test_in_place_restore_needs_confirmation_then_brings_back_old_content(
    pg: PostgresCluster, database: str, rich: str, aura: Aura
) -> None:
    before = fingerprint(rich)
    aura("backup")
    with psycopg.connect(rich, autocommit=True) as conn:
        conn.execute("DELETE FROM billing.invoices WHERE id % 2 = 0")
        conn.execute('INSERT INTO "Odd Schema"."Quoted ""Name"" Table" VALUES (3, \'x\')')
        conn.execute("SELECT nextval('billing.invoice_numbers')")
    changed = fingerprint(rich)

    refused = aura("restore", "latest", check=2)
    assert "--yes" in refused.stderr
    assert fingerprint(rich) == changed

    aura("restore", "latest", "--yes")
    assert fingerprint(rich) == before


def test_deep_verify_restores_into_scratch_database_and_reports_time(
    pg: PostgresCluster, database: str, rich: str, aura: Aura
) -> None:
    snapshot = aura.json("backup")["id"]
    report = aura.json("snapshots", "verify", snapshot, "--deep")
    db = report["components"]["db"]
    assert report["ok"] is True
    assert db["checksums_compared"] is True
    assert db["tables_compared"] == 3
    assert db["restore_seconds"] > 0
    leftovers = pg.sql("SELECT datname FROM pg_database WHERE datname LIKE 'aura_verify%'")
    assert leftovers == []


def test_counts_describe_exactly_the_dumped_snapshot(pg: PostgresCluster, database: str, aura: Aura) -> None:
    """Writes committed while the dump runs are in neither the counts nor the dump."""
    dsn = pg.dsn(database)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE a (n int); CREATE TABLE b (n int);"
            "INSERT INTO a SELECT generate_series(1, 1000);"
            "INSERT INTO b SELECT generate_series(1, 1000)"
        )
    aura.env["AURA_DB_DSN"] = dsn
    aura.write_config(base_config({"db": db_component()}))
    blocker = psycopg.connect(dsn)
    blocker.execute("LOCK TABLE b IN ACCESS EXCLUSIVE MODE")  # the backup stalls on table b
    process = aura.popen("backup", "--json")
    assert wait_until(lambda: _backend_waiting(pg, database), 30), "backup never blocked"
    # A writer commits to table a after the backup's snapshot was taken, while it runs.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO a SELECT generate_series(1, 500)")
    blocker.rollback()
    blocker.close()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    manifest = json.loads(out)
    counts = manifest["components"]["db"]["row_counts"]
    aura("restore", manifest["id"], "--to-database", f"{database}_copy")
    restored = pg.sql("SELECT count(*) FROM a", f"{database}_copy")[0][0]
    assert counts["public.a"] == restored == 1000
    assert pg.sql("SELECT count(*) FROM a", database)[0][0] == 1500


def _backend_waiting(pg: PostgresCluster, database: str) -> bool:
    rows = pg.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'" % ("'" + database + "'")
    )
    return bool(rows[0][0])


def _start_blocked_backup(
    pg: PostgresCluster, database: str, aura: Aura
) -> tuple[psycopg.Connection, subprocess.Popen[str]]:
    """A backup that stays inside its dump until the returned connection lets go."""
    blocker = psycopg.connect(pg.dsn(database))
    blocker.execute("LOCK TABLE public.users IN ACCESS EXCLUSIVE MODE")
    process = aura.popen("backup")
    assert wait_until(lambda: _backend_waiting(pg, database), 60), "backup never blocked"
    return blocker, process


def test_backup_killed_mid_dump_is_never_listed_and_next_backup_cleans_up(
    pg: PostgresCluster, database: str, rich: str, aura: Aura
) -> None:
    blocker, process = _start_blocked_backup(pg, database, aura)
    partials = list((aura.repo / "snapshots").glob("*.partial"))
    assert len(partials) == 1
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    blocker.rollback()
    blocker.close()

    assert aura.json("snapshots", "list")["snapshots"] == []
    assert aura("restore", partials[0].name.removesuffix(".partial"), "--to-database", "x", check=2).returncode == 2
    # the dead process's children died with it: nothing keeps writing into the partial folder
    assert wait_until(lambda: not _backend_waiting(pg, database), 30)

    done = aura("backup")
    assert "lock.stale_taken_over" in done.stderr
    assert "snapshot.partial_removed" in done.stderr
    assert not list((aura.repo / "snapshots").glob("*.partial"))
    assert len(aura.json("snapshots", "list")["snapshots"]) == 1


def test_second_backup_while_one_runs_exits_5_naming_the_holder(
    pg: PostgresCluster, database: str, rich: str, aura: Aura
) -> None:
    blocker, process = _start_blocked_backup(pg, database, aura)
    try:
        second = aura("backup", check=5)
        assert f"pid {process.pid}" in second.stderr
        assert "backup" in second.stderr
    finally:
        blocker.rollback()
        blocker.close()
    assert process.wait(timeout=120) == 0
    assert len(aura.json("snapshots", "list")["snapshots"]) == 1


def test_sigterm_during_backup_discards_partial_and_releases_lock(
    pg: PostgresCluster, database: str, rich: str, aura: Aura
) -> None:
    blocker, process = _start_blocked_backup(pg, database, aura)
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=60)
    finally:
        blocker.rollback()
        blocker.close()
    assert process.returncode == 1
    assert "interrupted by SIGTERM" in err
    assert not list((aura.repo / "snapshots").glob("*"))
    aura("backup")


def test_unreachable_database_exits_6_with_one_line(aura: Aura) -> None:
    from aura_ops.dev.sandbox import free_port

    aura.env["AURA_DB_DSN"] = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    aura.write_config(base_config({"db": db_component(connect_attempts=2)}))
    result = aura("backup", check=6)
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("aura-ops: error")]
    assert len(error_lines) == 1
    assert "unreachable after 2 attempts" in error_lines[0]
    assert "127.0.0.1" in error_lines[0]
    assert "postgres.connect_retry" in result.stderr
    assert aura.json("snapshots", "list")["snapshots"] == []


def test_missing_pg_dump_is_a_clear_error(pg: PostgresCluster, database: str, aura: Aura, tmp_path: Path) -> None:
    empty = tmp_path / "no-tools"
    empty.mkdir()
    aura.env["AURA_DB_DSN"] = pg.dsn(database)
    aura.write_config(base_config({"db": db_component(bin_dir=str(empty))}))
    result = aura("backup", check=2)
    assert "pg_dump: not found on local" in result.stderr
    assert aura.json("snapshots", "list")["snapshots"] == []


def test_password_never_reaches_logs_or_errors(pg: PostgresCluster, database: str, aura: Aura) -> None:
    password = "S3cr3t-Pa55w0rd-xyz"
    pg.sql(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'aura_secret') "
        f"THEN CREATE ROLE aura_secret LOGIN PASSWORD '{password}'; END IF; END $$"
    )
    pg.sql(f'GRANT ALL ON DATABASE "{database}" TO aura_secret; ALTER DATABASE "{database}" OWNER TO aura_secret')
    with psycopg.connect(pg.dsn(database), autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT generate_series(1, 10) n")
        conn.execute("ALTER TABLE t OWNER TO aura_secret")
    aura.env["AURA_DB_DSN"] = pg.dsn(database, user="aura_secret", password=password)
    aura.write_config(base_config({"db": db_component()}))
    ok = aura("backup", "-v", "--json")
    # the same password through password_env, against a database that does not exist
    aura.env["DB_PASSWORD"] = password
    aura.write_config(
        base_config(
            {
                "db": {
                    "type": "postgres",
                    "dsn": f"postgresql://aura_secret@127.0.0.1:{pg.port}/missing_db",
                    "password_env": "DB_PASSWORD",
                }
            }
        )
    )
    failed = aura("backup", "-v", check=2)
    texts = [ok.stdout, ok.stderr, failed.stdout, failed.stderr, aura.log_text()]
    assert "pg_dump --format=directory" in ok.stderr
    assert "missing_db" in failed.stderr
    for text in texts:
        assert password not in text


def test_verify_of_unknown_snapshot_exits_2(pg: PostgresCluster, database: str, rich: str, aura: Aura) -> None:
    result = aura("snapshots", "verify", "19990101-000000-000", check=2)
    assert "unknown snapshot" in result.stderr


def test_flipped_byte_in_dump_fails_verify_naming_the_file(
    pg: PostgresCluster, database: str, rich: str, aura: Aura
) -> None:
    manifest = aura.json("backup")
    snapshot = manifest["id"]
    aura("snapshots", "verify", snapshot)
    folder = aura.repo / "snapshots" / snapshot / "db"
    artifacts = sorted(manifest["components"]["db"]["artifacts"])
    assert {"dump/toc.dat", "dump/blobs.toc", "globals.sql"} <= set(artifacts)
    for victim in (folder / artifact for artifact in artifacts):
        original = victim.read_bytes()
        flipped = bytearray(original)
        flipped[len(flipped) // 2] ^= 0x01
        victim.write_bytes(bytes(flipped))
        result = aura("snapshots", "verify", snapshot, check=3)
        assert victim.name in result.stderr
        victim.write_bytes(original)
    aura("snapshots", "verify", snapshot)


def test_doctor_reports_all_well_then_unreachable(pg: PostgresCluster, database: str, rich: str, aura: Aura) -> None:
    report = aura.json("doctor")
    assert report["ok"] is True
    names = [c["check"] for c in report["checks"]]
    assert "db: pg_dump not older than server" in names
    pg_port = str(pg.port)
    aura.env["AURA_DB_DSN"] = rich.replace(pg_port, str(int(pg_port) + 1))
    failing = aura.json("doctor", check=6)
    assert failing["ok"] is False


def test_restore_with_globals_onto_a_fresh_server(pg: PostgresCluster, database: str, rich: str, aura: Aura) -> None:
    before = fingerprint(rich)
    snapshot = aura.json("backup")["id"]
    with PostgresCluster() as fresh:
        assert fresh.sql("SELECT count(*) FROM pg_roles WHERE rolname = 'aura_reader'") == [(0,)]
        aura.env["AURA_DB_DSN"] = fresh.dsn("postgres")
        aura("restore", snapshot, "--globals", "--to-database", "shop")
        assert fresh.sql("SELECT count(*) FROM pg_roles WHERE rolname = 'aura_reader'") == [(1,)]
        assert fingerprint(fresh.dsn("shop")) == before
        assert "GRANT SELECT ON TABLE billing.invoices TO aura_reader" in schema_dump(fresh.dsn("shop"))


def test_in_place_restore_in_clean_mode(pg: PostgresCluster, database: str, rich: str, aura: Aura) -> None:
    aura.write_config(base_config({"db": db_component(restore_in_place="clean")}))
    before = fingerprint(rich)
    aura("backup")
    with psycopg.connect(rich, autocommit=True) as conn:
        conn.execute("DROP VIEW billing.big_invoices")
        conn.execute("TRUNCATE billing.invoices")
        conn.execute("CREATE TABLE public.added_later (n int)")
    aura("restore", "latest", "--yes")
    after = fingerprint(rich)
    assert {k: v for k, v in after.items() if k != "public.added_later"} == before
    assert pg.sql("SELECT count(*) FROM billing.big_invoices", database)[0][0] > 0


def test_pg_dump_older_than_the_server_is_refused(
    pg: PostgresCluster, database: str, aura: Aura, tmp_path: Path
) -> None:
    """A stand-in for an old client: a pg_dump that reports major version 14."""
    old = tmp_path / "old-client"
    old.mkdir()
    script = old / "pg_dump"
    script.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 14.11'\n")
    script.chmod(0o700)
    aura.env["AURA_DB_DSN"] = pg.dsn(database)
    aura.write_config(base_config({"db": db_component(bin_dir=str(old))}))
    result = aura("backup", check=2)
    assert "pg_dump 14 is older than the server (15)" in result.stderr
    assert aura.json("snapshots", "list")["snapshots"] == []
