"""Row counts taken from the dump stream (the backup's default: without checksums, the rows of
each table are counted in the COPY data pg_dump writes, not by a second scan on the server) are
exactly ``count(*)`` in the dumped snapshot: values with newlines, backslashes and COPY's own end
marker, empty tables, partitions, inheritance, unlogged tables, large objects that look like COPY
data, odd names, and rows committed while the dump runs (never counted)."""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from aura_ops import logs
from aura_ops.components import postgres
from aura_ops.components.base import SnapshotTarget
from aura_ops.components.postgres import PostgresComponent
from aura_ops.config import PostgresConfig
from aura_ops.dev.sandbox import PostgresCluster, wait_until
from aura_ops.errors import AuraError
from aura_ops.hosts import LocalHost
from tests.conftest import Aura, base_config, db_component

TRICKY = r"""
CREATE SCHEMA other;
CREATE SCHEMA "we""ird
schema";
CREATE TABLE public.texts (id int, body text, raw bytea);
INSERT INTO public.texts VALUES
  (1, E'line one\nline two', '\x0a0d5c2e0a'::bytea),
  (2, E'back\\slash\\.', NULL),
  (3, E'\\.', '\x'::bytea),
  (4, '', NULL),
  (5, NULL, NULL),
  (6, E'tab\there\r\ncrlf\r', NULL),
  (7, E'\n', NULL),
  (8, E'\\.\n\\.\n\n\n', NULL),
  (9, E'\\\n', NULL);
INSERT INTO public.texts SELECT g, repeat(E'x\n', g % 7) || E'\\.', NULL FROM generate_series(10, 30000) g;
CREATE TABLE public.empty (id int);
CREATE TABLE public.no_columns ();
INSERT INTO public.no_columns SELECT FROM generate_series(1, 12);
CREATE TABLE other.texts (id int);
INSERT INTO other.texts SELECT generate_series(1, 3);
CREATE TABLE "we""ird
schema"."ta
ble ""x"" \." (v text);
INSERT INTO "we""ird
schema"."ta
ble ""x"" \." VALUES (E'\\.'), (E'a\nb');
CREATE TABLE public.measures (at date NOT NULL, v int) PARTITION BY RANGE (at);
CREATE TABLE public.measures_2025 PARTITION OF public.measures FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE public.measures_2026 PARTITION OF public.measures FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE public.measures_rest PARTITION OF public.measures DEFAULT;
INSERT INTO public.measures SELECT date '2025-01-01' + (g % 900), g FROM generate_series(1, 5000) g;
CREATE TABLE public.parent (id int);
CREATE TABLE public.child (extra text) INHERITS (public.parent);
INSERT INTO public.parent VALUES (1), (2);
INSERT INTO public.child VALUES (3, 'c'), (4, E'd\ne'), (5, NULL);
CREATE UNLOGGED TABLE public.scratch AS SELECT generate_series(1, 77) AS n;
CREATE TABLE public.generated (a int, b int GENERATED ALWAYS AS (a * 2) STORED);
INSERT INTO public.generated (a) SELECT generate_series(1, 10);
CREATE TABLE public.dropped (a int, b text, c int);
INSERT INTO public.dropped SELECT g, E'x\ny', g FROM generate_series(1, 5) g;
ALTER TABLE public.dropped DROP COLUMN b;
CREATE TABLE public.guarded (owner_name text);
INSERT INTO public.guarded VALUES ('a'), ('b');
ALTER TABLE public.guarded ENABLE ROW LEVEL SECURITY;
CREATE MATERIALIZED VIEW public.mv AS SELECT * FROM other.texts;
SELECT lo_from_bytea(0, '\x0a0a5c2e0a0a0a'::bytea);
SELECT lo_from_bytea(0, '\x'::bytea);
"""


def _server_counts(dsn: str) -> dict[str, int]:
    """count(*) of every table (ONLY: each partition and inheritance child on its own line)."""
    with psycopg.connect(dsn) as conn:
        tables = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND n.nspname NOT LIKE 'pg\\_toast%'"
        ).fetchall()
        return {
            f"{schema}.{name}": conn.execute(
                sql.SQL("SELECT count(*) FROM ONLY {}").format(sql.Identifier(schema, name))
            ).fetchone()[0]
            for schema, name in tables
        }


def _snapshot_events(aura: Aura) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in aura.log_text().splitlines() if line.startswith("{")]
    return [event for event in events if event.get("event") == "postgres.snapshot"]


@pytest.fixture
def tricky(pg: PostgresCluster, database: str, aura: Aura) -> str:
    dsn = pg.dsn(database)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TRICKY)
    aura.env["AURA_DB_DSN"] = dsn
    return dsn


def test_counts_from_the_dump_stream_equal_count_star_on_tricky_data(
    pg: PostgresCluster, database: str, tricky: str, aura: Aura
) -> None:
    aura.write_config(base_config({"db": db_component()}))
    manifest = aura.json("backup")
    entry = manifest["components"]["db"]
    expected = _server_counts(tricky)
    assert entry["row_counts"] == expected
    assert expected["public.texts"] == 30000 and expected["public.empty"] == 0
    assert sum(expected[f"public.measures_{part}"] for part in ("2025", "2026", "rest")) == 5000
    assert entry["large_objects"] == 2 and entry["materialized_views"] == ["public.mv"]
    assert "table_checksums" not in entry
    # every table was counted in the stream: none was left to a second scan on the server
    assert [event["counted_in_stream"] for event in _snapshot_events(aura)] == [len(expected)]
    # a checksummed backup counts on the server, in its own snapshot: the same figures
    aura.write_config(base_config({"db": db_component(checksums=True)}))
    assert aura.json("backup")["components"]["db"]["row_counts"] == expected
    # and a restore of the stream-counted snapshot has exactly those rows
    report = aura.json("snapshots", "verify", manifest["id"], "--deep")
    assert report["ok"] is True and report["components"]["db"]["tables_compared"] == len(expected)


def test_rows_committed_while_the_dump_runs_are_not_counted(pg: PostgresCluster, database: str, aura: Aura) -> None:
    dsn = pg.dsn(database)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE gate (n int); CREATE TABLE busy (id bigserial, note text);"
            "INSERT INTO busy (note) SELECT repeat(E'r\\n', 20) FROM generate_series(1, 200000)"
        )
    aura.env["AURA_DB_DSN"] = dsn
    aura.write_config(base_config({"db": db_component()}))
    stop = threading.Event()
    inserted = [0]

    def insert_until_stopped() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO busy (note) SELECT E'late\\n' FROM generate_series(1, 50)")
                inserted[0] += 50

    blocker = psycopg.connect(dsn)
    blocker.execute("LOCK TABLE gate IN ACCESS EXCLUSIVE MODE")  # pg_dump stalls after its snapshot
    process = aura.popen("backup", "--json")
    writer = threading.Thread(target=insert_until_stopped)
    try:
        assert wait_until(lambda: _lock_waiters(pg, database) > 0, 60), "the backup never stalled"
        writer.start()
        assert wait_until(lambda: inserted[0] >= 500, 30), "nothing was inserted while the dump waited"
        blocker.rollback()  # the dump goes on while rows keep coming
        out, err = process.communicate(timeout=300)
    finally:
        stop.set()
        if writer.is_alive():
            writer.join()
        blocker.close()
    assert process.returncode == 0, err
    manifest = json.loads(out)
    counted = manifest["components"]["db"]["row_counts"]["public.busy"]
    assert counted == 200000
    aura("restore", manifest["id"], "--to-database", f"{database}_copy")
    assert pg.sql("SELECT count(*) FROM busy", f"{database}_copy")[0][0] == counted
    assert pg.sql("SELECT count(*) FROM busy", database)[0][0] == 200000 + inserted[0]


def _lock_waiters(pg: PostgresCluster, database: str) -> int:
    rows = pg.sql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}' AND wait_event_type = 'Lock'")
    return int(rows[0][0])  # type: ignore[call-overload]


@pytest.mark.parametrize("listed", ["none", "all but texts"])
def test_a_table_the_stream_cannot_name_is_counted_by_the_server_in_the_same_snapshot(
    pg: PostgresCluster,
    database: str,
    tricky: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    listed: str,
) -> None:
    """When the table of contents cannot be listed (or misses a table), those tables are counted
    with count(*) in the dump's snapshot: rows committed after it are not counted either."""
    real = postgres._data_files_by_table
    texts_oid = pg.sql("SELECT 'public.texts'::regclass::oid::bigint", database)[0][0]

    def partial(host: Any, cfg: Any, dump_dir: Path) -> dict[int, str]:
        with psycopg.connect(tricky, autocommit=True) as conn:  # after the snapshot was exported
            conn.execute("INSERT INTO public.texts (id) SELECT generate_series(1, 10)")
        if listed == "none":
            return {}
        return {oid: file for oid, file in real(host, cfg, dump_dir).items() if oid != texts_oid}

    monkeypatch.setattr(postgres, "_data_files_by_table", partial)
    expected = _server_counts(tricky)
    config = PostgresConfig(type="postgres", dsn=pg.dsn(database), jobs=2, globals=False)
    folder = tmp_path / "db"
    folder.mkdir()
    console = tmp_path / "console.log"
    with open(console, "w") as stream:
        logs.configure(None, "info", console=stream, pretty=False)
        section = PostgresComponent("db", config, LocalHost()).snapshot(SnapshotTarget("s1", folder))
    logs.configure()
    assert section.row_counts == expected
    assert pg.sql("SELECT count(*) FROM ONLY public.texts", database)[0][0] == expected["public.texts"] + 10
    logged = [json.loads(line) for line in console.read_text().splitlines()]
    stream = [event["counted_in_stream"] for event in logged if event["event"] == "postgres.snapshot"]
    assert stream == [0 if listed == "none" else len(expected) - 1]


def test_a_backup_failing_beside_pg_dump_stops_it(pg: PostgresCluster, database: str, tmp_path: Path) -> None:
    """pg_dumpall runs beside pg_dump now: when it cannot even start (missing from bin_dir), the
    snapshot fails naming it and pg_dump (here waiting for a lock) is stopped at once, not left
    running for as long as the process that started it lives."""
    dsn = pg.dsn(database)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT generate_series(1, 10) AS n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ("pg_dump", "pg_restore"):
        (bin_dir / program).symlink_to(pg.bin / program)
    config = PostgresConfig(type="postgres", dsn=dsn, jobs=2, bin_dir=bin_dir)
    folder = tmp_path / "db"
    folder.mkdir()
    blocker = psycopg.connect(dsn)
    try:
        blocker.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")  # pg_dump would wait here forever
        with open(tmp_path / "console.log", "w") as stream:
            logs.configure(None, "info", console=stream, pretty=False)
            with pytest.raises(AuraError, match="pg_dumpall"):
                PostgresComponent("db", config, LocalHost()).snapshot(SnapshotTarget("s1", folder))
        logs.configure()
        assert _pg_dump_children() == [], "pg_dump was left running"
        assert wait_until(lambda: _pg_dump_sessions(pg, database) == 0, 30)
    finally:
        blocker.close()


def _pg_dump_children() -> list[int]:
    """The pg_dump processes this test process started and has not reaped."""
    found = []
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                if b"--format=directory" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(int(pid))
    return found


def _pg_dump_sessions(pg: PostgresCluster, database: str) -> int:
    rows = pg.sql(
        f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}' AND application_name = 'pg_dump'"
    )
    return int(rows[0][0])  # type: ignore[call-overload]
