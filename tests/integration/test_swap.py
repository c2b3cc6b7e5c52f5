"""The in-place restore's swap is atomic: whatever fails (a kill at any point, a rename the server
refuses), the live name afterwards holds the complete old or the complete new database, and no
temporary database is left once the next command has run. Databases holding logical-replication
subscriptions are dropped cleanly. Real PostgreSQL, the real CLI, faults injected with
AURA_FAULT (the process exits as SIGKILL would) and AURA_PAUSE (it stops itself)."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import psycopg
import pytest

from aura_ops.dev.sandbox import PostgresCluster, wait_until
from tests.conftest import Aura, base_config, db_component
from tests.pgdata import build_rich_database, fingerprint


@pytest.fixture
def rich(pg: PostgresCluster, database: str, aura: Aura) -> str:
    dsn = pg.dsn(database)
    build_rich_database(dsn)
    aura.env["AURA_DB_DSN"] = dsn
    aura.write_config(base_config({"db": db_component(checksums=True)}))
    return dsn


def change(dsn: str) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM billing.invoices WHERE id % 2 = 0")
        conn.execute('INSERT INTO "Odd Schema"."Quoted ""Name"" Table" VALUES (3, \'x\')')
        conn.execute("SELECT nextval('billing.invoice_numbers')")
    return fingerprint(dsn)


def temporary_databases(pg: PostgresCluster, database: str) -> list[str]:
    rows = pg.sql(
        "SELECT datname FROM pg_database WHERE starts_with(datname, %s) OR starts_with(datname, 'aura_')"
        % ("'" + database + "_aura'")
    )
    return [str(r[0]) for r in rows]


def allows_connections(pg: PostgresCluster, database: str) -> bool:
    return bool(pg.sql(f"SELECT datallowconn FROM pg_database WHERE datname = '{database}'")[0][0])


def temporaries_in_doctor(aura: Aura) -> list[dict[str, Any]]:
    report = json.loads(aura("doctor", "--json", check=None).stdout)
    return [c for c in report["checks"] if c["check"].startswith("temporary ")]


# the points of an in-place restore, in order, and which content the live name holds after a
# kill there and the next command: the old one until the restored copy has taken its name
SWAP_POINTS = [
    ("after-create", "old"),  # staging database created, being filled
    ("before-rename-away", "old"),  # restored, checked, settings copied
    ("after-disallow", "old"),  # the live database refuses new connections, not yet renamed
    ("after-rename-away", "old"),  # the live name holds nothing
    ("after-rename-in", "new"),  # the restored copy holds the live name, the old one is still there
]


@pytest.mark.parametrize(("point", "holds"), SWAP_POINTS)
def test_a_restore_killed_at_any_point_of_the_swap_leaves_old_or_new_whole(
    pg: PostgresCluster, database: str, rich: str, aura: Aura, point: str, holds: str
) -> None:
    new = fingerprint(rich)
    aura("backup")
    old = change(rich)

    aura("restore", "latest", "--yes", check=137, env={"AURA_FAULT": f"swap:{point}"})
    listed = temporaries_in_doctor(aura)
    if point == "after-create":  # the staging folder is made while the database is created: it is there too
        staging = [c for c in listed if c["check"].startswith("temporary path ") and "aura-restore-" in c["check"]]
        assert len(staging) == 1 and "left by killed pid" in staging[0]["detail"]
        listed = [c for c in listed if c not in staging]
    assert len(listed) == 1 and "left by killed pid" in listed[0]["detail"]
    assert "pg_swap" in listed[0]["check"]

    aura("backup")  # the next command that takes the lock puts it right
    assert fingerprint(rich) == (new if holds == "new" else old)
    assert allows_connections(pg, database)
    assert temporary_databases(pg, database) == []
    assert temporaries_in_doctor(aura) == []


def test_a_live_name_recreated_with_data_after_a_kill_between_the_renames_keeps_both_and_says_so(
    pg: PostgresCluster, database: str, rich: str, aura: Aura
) -> None:
    """Killed between the renames, the live name is free; something creates it again and writes
    into it before the next command. aura-ops cannot know which one the user wants: it drops
    neither, lets the renamed-away database accept connections again, keeps the journal record
    (doctor fails naming both, each command that takes the lock warns, a restore into it is
    refused with exit 1), and finishes once the user has dropped the new one."""
    aura("backup")
    old = change(rich)
    aura("restore", "latest", "--yes", check=137, env={"AURA_FAULT": "swap:after-rename-away"})
    pg.create_database(database)
    pg.sql("CREATE TABLE provisioned (n int); INSERT INTO provisioned VALUES (1)", database)
    renamed = [d for d in temporary_databases(pg, database) if "_old_" in d]
    assert len(renamed) == 1

    backup = aura("backup")  # not stopped by it: warns
    assert f"your data is in database {renamed[0]}" in backup.stderr
    assert temporary_databases(pg, database) == renamed  # the restored copy is dropped, the data kept
    assert allows_connections(pg, renamed[0]) and fingerprint(pg.dsn(renamed[0])) == old
    assert pg.sql("SELECT n FROM provisioned", database) == [(1,)]
    listed = temporaries_in_doctor(aura)
    assert len(listed) == 1 and not listed[0]["ok"] and "was created again" in listed[0]["detail"]
    assert renamed[0] in listed[0]["detail"]

    refused = aura("restore", "latest", "--yes", check=1)
    assert f"restore into {database} is not settled" in refused.stderr and renamed[0] in refused.stderr
    assert pg.sql("SELECT n FROM provisioned", database) == [(1,)]

    pg.sql(f'DROP DATABASE "{database}"')  # the user's choice: the new one goes
    aura("backup")
    assert fingerprint(rich) == old
    assert allows_connections(pg, database)
    assert temporary_databases(pg, database) == []
    assert temporaries_in_doctor(aura) == []


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


def test_a_rename_refused_because_the_staging_database_is_in_use_keeps_the_old_database(
    pg: PostgresCluster, database: str, rich: str, aura: Aura
) -> None:
    aura("backup")
    old = change(rich)
    process = aura.popen("restore", "latest", "--yes", env={"AURA_PAUSE": "swap:before-rename-in"})
    staging: list[str] = []

    def staging_created() -> bool:
        staging[:] = [d for d in temporary_databases(pg, database) if "_old_" not in d]
        return bool(staging) or process.poll() is not None

    assert wait_until(staging_created, 120, interval=0.01), "the staging database never appeared"
    assert staging, "the restore ended before its staging database was seen"
    # someone connects to the staging database (a monitoring tool, a curious admin)
    session = None
    for _ in range(200):
        try:
            session = psycopg.connect(pg.dsn(staging[0]), autocommit=True)
            break
        except psycopg.OperationalError:  # still being created
            time.sleep(0.05)
    assert session is not None
    paused = False
    try:
        if wait_until(lambda: process.poll() is not None or _stopped(process.pid), 120) and process.poll() is None:
            paused = True  # between the renames: the live name holds nothing right now
            listed = temporaries_in_doctor(aura)  # while it exists, doctor lists the swap in progress
            assert len(listed) == 1 and f"in use by pid {process.pid}" in listed[0]["detail"]
            os.kill(process.pid, signal.SIGCONT)
        _out, err = process.communicate(timeout=300)
    finally:
        session.close()
    assert process.returncode == 1, err
    assert fingerprint(rich) == old
    assert paused
    assert "is being accessed by other users" in err and f"{database} is left as it was" in err
    assert allows_connections(pg, database)
    assert temporary_databases(pg, database) == []
    assert temporaries_in_doctor(aura) == []


# ---------------------------------------------------------------- subscriptions


OWN_SUBSCRIPTIONS = (
    "SELECT subname FROM pg_subscription"
    " WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def drop_subscriptions(pg: PostgresCluster, database: str) -> None:
    for (name,) in pg.sql(OWN_SUBSCRIPTIONS, database):
        pg.sql(f'ALTER SUBSCRIPTION "{name}" DISABLE', database)
        pg.sql(f'ALTER SUBSCRIPTION "{name}" SET (slot_name = NONE)', database)
        pg.sql(f'DROP SUBSCRIPTION "{name}"', database)


def test_a_database_holding_a_subscription_is_verified_and_restored_leaving_nothing(
    pg: PostgresCluster, database: str, aura: Aura
) -> None:
    dsn = pg.dsn(database)
    pg.sql(
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g",
        database,
    )
    pg.sql(
        f"CREATE SUBSCRIPTION sub_{database} CONNECTION 'host=127.0.0.1 port=1 dbname=nowhere' "
        "PUBLICATION p WITH (connect = false)",
        database,
    )
    aura.env["AURA_DB_DSN"] = dsn
    aura.write_config(base_config({"db": db_component()}))
    try:
        snapshot = fingerprint(dsn)
        aura("backup")
        aura("snapshots", "verify", "latest", "--deep")
        assert temporary_databases(pg, database) == []

        pg.sql("DELETE FROM t WHERE id > 50", database)
        aura("restore", "latest", "--yes")
        assert fingerprint(dsn) == snapshot
        assert pg.sql(OWN_SUBSCRIPTIONS, database) == [(f"sub_{database}",)]
        assert temporary_databases(pg, database) == []
    finally:
        for name in [database, *temporary_databases(pg, database)]:
            if pg.sql(f"SELECT datallowconn FROM pg_database WHERE datname = '{name}'") == [(True,)]:
                drop_subscriptions(pg, name)


# ---------------------------------------------------------------- other temporary databases


def test_a_killed_deep_verify_leaves_its_scratch_database_listed_then_removed(
    pg: PostgresCluster, database: str, rich: str, aura: Aura
) -> None:
    aura("backup")
    process = aura.popen("snapshots", "verify", "latest", "--deep", env={"AURA_PAUSE": "verify:after-create"})
    scratch: list[str] = []

    def created() -> bool:
        scratch[:] = [str(r[0]) for r in pg.sql("SELECT datname FROM pg_database WHERE datname LIKE 'aura\\_verify%'")]
        return bool(scratch) or process.poll() is not None

    assert wait_until(created, 120, interval=0.01) and scratch, "the scratch database never appeared"
    process.kill()  # SIGKILL while it restores into its scratch database
    process.wait(timeout=60)
    listed = temporaries_in_doctor(aura)
    assert [c["check"] for c in listed] == [f"temporary pg_database {scratch[0]}"]
    assert "left by killed pid" in listed[0]["detail"]

    aura("backup")  # the next command that takes the lock drops it
    assert pg.sql("SELECT datname FROM pg_database WHERE datname LIKE 'aura\\_verify%'") == []
    assert temporaries_in_doctor(aura) == []


def test_a_full_disk_while_building_leaves_the_live_database_whole(aura: Aura) -> None:
    """The live database's table lives in a tablespace on a small tmpfs, nearly filled: building
    the copy beside it runs out of space (ENOSPC from the server), and the live database stays
    as it was."""
    import pwd
    import subprocess
    import tempfile
    from pathlib import Path

    from tests.conftest import require

    require(os.geteuid() == 0, "root (to mount a small tmpfs as a tablespace)")
    mount = Path(tempfile.mkdtemp(prefix="aura-tmpfs-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        account = pwd.getpwnam("postgres")
        os.chown(mount, account.pw_uid, account.pw_gid)
        with PostgresCluster() as server:
            server.sql(f"CREATE TABLESPACE small LOCATION '{mount}'")
            server.sql("CREATE DATABASE shop")
            server.sql(
                "CREATE TABLE big (id int PRIMARY KEY, pad text) TABLESPACE small;"
                " INSERT INTO big SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, 60000) g",
                "shop",
            )
            aura.env["AURA_DB_DSN"] = server.dsn("shop")
            aura.write_config(base_config({"db": db_component()}))
            aura("backup")
            server.sql("UPDATE big SET pad = 'changed' WHERE id % 1000 = 0", "shop")
            old = fingerprint(server.dsn("shop"))
            size = int(server.sql("SELECT pg_relation_size('big')", "shop")[0][0])
            stat = os.statvfs(mount)
            ballast = stat.f_bavail * stat.f_frsize - size // 4  # a copy of the table cannot fit now
            with open(mount / "ballast", "wb") as fill:
                fill.truncate(0)
                for _ in range(ballast // (1 << 20)):
                    fill.write(b"\0" * (1 << 20))

            aura("restore", "latest", "--yes", check=1)
            assert "No space left on device" in (server.root / "server.log").read_text()
            assert fingerprint(server.dsn("shop")) == old
            assert server.sql("SELECT datname FROM pg_database WHERE datname LIKE 'shop%'") == [("shop",)]
            assert temporaries_in_doctor(aura) == []
            (mount / "ballast").unlink()
            server.sql("DROP DATABASE shop")
            server.sql("DROP TABLESPACE small")
    finally:
        subprocess.run(["umount", str(mount)], check=True)
        mount.rmdir()
