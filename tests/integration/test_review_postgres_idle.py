"""Review of the backup's facts transaction (issue 12): since the rows are counted in the dump
stream, the transaction that exported pg_dump's snapshot sits idle for the whole dump. A server
with ``idle_in_transaction_session_timeout`` (common in production) must not end it: pg_dump's
parallel workers import its snapshot, and the backup ends it itself."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from aura_ops.components.base import SnapshotTarget
from aura_ops.components.postgres import PostgresComponent
from aura_ops.config import PostgresConfig
from aura_ops.dev.sandbox import PostgresCluster, wait_until
from aura_ops.hosts import LocalHost


def _lock_waiters(pg: PostgresCluster, database: str) -> int:
    rows = pg.sql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}' AND wait_event_type = 'Lock'")
    return int(rows[0][0])  # type: ignore[call-overload]


def test_a_backup_outlasting_the_servers_idle_in_transaction_timeout_succeeds(
    pg: PostgresCluster, database: str, tmp_path: Path
) -> None:
    dsn = pg.dsn(database)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE gate (n int); CREATE TABLE t AS SELECT generate_series(1, 1000) AS n")
        conn.execute(f"ALTER DATABASE \"{database}\" SET idle_in_transaction_session_timeout = '1s'")
    blocker = psycopg.connect(dsn)
    blocker.execute("SET idle_in_transaction_session_timeout = 0")
    blocker.execute("LOCK TABLE gate IN ACCESS EXCLUSIVE MODE")  # pg_dump stalls after the snapshot export
    config = PostgresConfig(type="postgres", dsn=dsn, jobs=2, globals=False)
    folder = tmp_path / "db"
    folder.mkdir()
    outcome: list[object] = []

    def backup() -> None:
        try:
            outcome.append(PostgresComponent("db", config, LocalHost()).snapshot(SnapshotTarget("s1", folder)))
        except BaseException as exc:  # noqa: BLE001 - inspected below
            outcome.append(exc)

    thread = threading.Thread(target=backup, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: _lock_waiters(pg, database) > 0, 60), "pg_dump never waited for the lock"
        time.sleep(2.5)  # longer than the server lets a transaction sit idle
    finally:
        blocker.rollback()
        blocker.close()
    thread.join(120)
    assert not thread.is_alive()
    section = outcome[0]
    if isinstance(section, BaseException):
        pytest.fail(f"the backup failed: {section}")
    assert section.row_counts == {"public.gate": 0, "public.t": 1000}  # type: ignore[attr-defined]
