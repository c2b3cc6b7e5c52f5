"""The fast-rollback clone against a real PostgreSQL: swap back after a crash between the two
renames, and the disk-space judgement on a server whose data directory is a small tmpfs."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import psycopg

from aura_ops.components.postgres import PostgresComponent
from aura_ops.components.postgres import clone as pgclone
from aura_ops.config import PostgresConfig
from aura_ops.dev.sandbox import PostgresCluster
from aura_ops.hosts import LocalHost
from tests.conftest import require


def component(cfg: PostgresConfig) -> PostgresComponent:
    return PostgresComponent("db", cfg, LocalHost())


def rows(dsn: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT id, name FROM t ORDER BY id").fetchall()


def test_swap_back_finishes_after_a_crash_between_the_renames(pg: PostgresCluster, database: str) -> None:
    dsn = pg.dsn(database)
    pg.sql("CREATE TABLE t (id int PRIMARY KEY, name text); INSERT INTO t VALUES (1, 'one'), (2, 'two')", database)
    before = rows(dsn)
    db = component(PostgresConfig(type="postgres", dsn=dsn))
    made = pgclone.create(db, "20261122-000000-001", wait=2)
    assert made["clone"] == f"{database}_aura_clone_20261122-000000-001"
    pg.sql("UPDATE t SET name = 'migrated'; ALTER TABLE t ADD COLUMN extra int", database)
    # the process died right after renaming the live database away
    pg.sql(f'ALTER DATABASE "{database}" RENAME TO "{pgclone.failed_name(database, "20261122-000000-001")}"')
    done = pgclone.swap_back(db, "20261122-000000-001")
    assert done is not None and done["path"] == "clone"
    assert rows(dsn) == before
    # repeated (the undo was interrupted before it was journaled): recognised, nothing restored
    assert pgclone.swap_back(db, "20261122-000000-001") == {
        "path": "clone",
        "database": database,
        "seconds": 0.0,
        "note": "already swapped back",
    }
    assert pgclone.drop_replaced(db, "20261122-000000-001")  # the migrated copy, kept until now
    left = pg.sql(f"SELECT datname FROM pg_database WHERE starts_with(datname, '{database}_aura')")
    assert left == []
    assert pgclone.swap_back(db, "20261122-000000-001") is None  # nothing more to do: no clone


def test_stale_clones_of_other_runs_are_dropped(pg: PostgresCluster, database: str) -> None:
    db = component(PostgresConfig(type="postgres", dsn=pg.dsn(database)))
    pgclone.create(db, "20261122-000000-002", wait=2)
    pgclone.create(db, "20261122-000000-003", wait=2)
    # a clone half-built when its run was killed: dropped too, and by a new attempt of that run
    pg.sql(f'CREATE DATABASE "{pgclone.building_name(database, "20261122-000000-004")}"')
    pg.sql(f'CREATE DATABASE "{pgclone.building_name(database, "20261122-000000-003")}"')
    dropped = pgclone.drop_stale(db, keep={"20261122-000000-003"})
    assert sorted(dropped) == [
        f"{database}_aura_clone_20261122-000000-002",
        f"{database}_aura_clonetmp_20261122-000000-004",
    ]
    assert pgclone.drop(db, "20261122-000000-003")
    assert pgclone.create(db, "20261122-000000-003", wait=2)["clone"].endswith("000000-003")
    assert pgclone.exists(db, "20261122-000000-003")
    assert pgclone.drop(db, "20261122-000000-003") and not pgclone.drop(db, "20261122-000000-003")


def test_not_enough_disk_on_the_server_is_judged_before_cloning(pg: PostgresCluster, database: str) -> None:
    require(os.geteuid() == 0, "root (to mount a small tmpfs as a server's data directory)")
    db = component(PostgresConfig(type="postgres", dsn=pg.dsn(database)))
    roomy = pgclone.feasibility(db)
    assert roomy["ok"] and roomy["free"] is not None  # the session cluster is local: free space is known
    mount = Path(tempfile.mkdtemp(prefix="aura-tmpfs-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=90m,mode=0755", "tmpfs", str(mount)], check=True)
    try:
        with PostgresCluster(root=mount / "pg") as small:
            small.sql("CREATE DATABASE app")
            tight = pgclone.feasibility(component(PostgresConfig(type="postgres", dsn=small.dsn("app"))))
            assert not tight["ok"] and "not enough disk" in tight["reason"]
            assert tight["free"] < 90 << 20
    finally:
        subprocess.run(["umount", str(mount)], check=True)
        mount.rmdir()


def test_a_clone_killed_half_built_is_listed_then_dropped_by_the_next_sweep(
    pg: PostgresCluster, database: str, tmp_path: Path
) -> None:
    """The building clone is journaled before CREATE DATABASE; a kill right after leaves a record
    that the next command taking a lock (temporaries.sweep) resolves by dropping it."""
    import sys
    import textwrap
    from types import SimpleNamespace

    from aura_ops.state import temporaries

    state = tmp_path / "state"
    cfg = PostgresConfig(type="postgres", dsn=pg.dsn(database))
    config = SimpleNamespace(state=SimpleNamespace(path=state), component=lambda name: cfg)
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from types import SimpleNamespace
        from aura_ops.state import temporaries
        from aura_ops.components.postgres import PostgresComponent
        from aura_ops.components.postgres import clone as pgclone
        from aura_ops.config import PostgresConfig
        from aura_ops.hosts import LocalHost
        cfg = PostgresConfig(type="postgres", dsn={pg.dsn(database)!r})
        config = SimpleNamespace(state=SimpleNamespace(path=Path({str(state)!r})), component=lambda name: cfg)
        with temporaries.bound(config):
            pgclone.create(PostgresComponent("db", cfg, LocalHost()), "20261122-000000-009", wait=2)
        """
    )
    killed = subprocess.run(
        [sys.executable, "-c", script], check=False, env={**os.environ, "AURA_FAULT": "clone:after-create"}
    )
    assert killed.returncode == 137
    building = pgclone.building_name(database, "20261122-000000-009")
    assert pg.sql(f"SELECT count(*) FROM pg_database WHERE datname = '{building}'") == [(1,)]
    listed = temporaries.listing(config)
    assert [(r["kind"], r["name"], r["owner_alive"]) for r in listed] == [("pg_database", building, False)]

    assert temporaries.sweep(config) == [{"kind": "pg_database", "name": building, "removed": True}]
    assert pg.sql(f"SELECT count(*) FROM pg_database WHERE starts_with(datname, '{database}_aura')") == [(0,)]
    assert temporaries.listing(config) == []
