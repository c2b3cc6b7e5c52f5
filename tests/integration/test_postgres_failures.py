"""PostgreSQL failures end fast with the real reason: missing or corrupt artifacts, a tool killed
mid-operation, unreachable servers, bad connection settings, missing privileges."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from aura_ops.dev.sandbox import PostgresCluster, free_port, wait_until
from tests.conftest import Aura, base_config, db_component
from tests.pgdata import build_rich_database, fingerprint

BIG_TABLE = (
    "CREATE TABLE big AS SELECT g AS n, md5(g::text) AS a, md5((g * 7)::text) AS b FROM generate_series(1, {rows}) g"
)


@pytest.fixture
def rich(pg: PostgresCluster, database: str, aura: Aura) -> str:
    dsn = pg.dsn(database)
    build_rich_database(dsn)
    aura.env["AURA_DB_DSN"] = dsn
    aura.write_config(base_config({"db": db_component()}))
    return dsn


def _largest_data_file(aura: Aura, manifest: dict[str, object]) -> Path:
    entry = manifest["components"]["db"]  # type: ignore[index]
    data = [a for a in entry["artifacts"] if a.endswith(".dat.zst")]
    largest = max(data, key=lambda a: entry["artifacts"][a]["size"])
    return aura.repo / "snapshots" / str(manifest["id"]) / "db" / largest


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("aura-ops: error:")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def _databases(pg: PostgresCluster, prefix: str) -> list[str]:
    return [str(r[0]) for r in pg.sql(f"SELECT datname FROM pg_database WHERE datname LIKE '{prefix}%'")]


# ---------------------------------------------------------------- artifacts


def test_missing_data_file_is_exit_3_naming_it_within_seconds(
    pg: PostgresCluster, database: str, rich: str, aura: Aura
) -> None:
    manifest = aura.json("backup")
    victim = _largest_data_file(aura, manifest)
    victim.unlink()
    started = time.monotonic()
    result = aura("restore", manifest["id"], "--to-database", f"{database}_copy", check=3, timeout=120)
    assert time.monotonic() - started < 60
    line = _error_line(result.stderr)
    assert f"db: dump/{victim.name} is missing" in line
    assert _databases(pg, f"{database}_copy") == []


def test_flipped_byte_in_toc_stops_restore_before_the_target_is_created(
    pg: PostgresCluster, database: str, rich: str, aura: Aura
) -> None:
    """A table of contents changed into another valid one (numeric(12,2) made numeric(12,0)) would
    restore rounded amounts without a word."""
    manifest = aura.json("backup")
    toc = aura.repo / "snapshots" / manifest["id"] / "db" / "dump" / "toc.dat"
    original = toc.read_bytes()
    assert original.count(b"numeric(12,2)") >= 1
    toc.write_bytes(original.replace(b"numeric(12,2)", b"numeric(12,0)"))
    result = aura("restore", manifest["id"], "--to-database", f"{database}_copy", check=3)
    assert "db: dump/toc.dat: checksum mismatch" in _error_line(result.stderr)
    assert _databases(pg, f"{database}_copy") == []
    assert "pg_restore" not in result.stderr  # never started


def test_changed_globals_script_is_never_run(pg: PostgresCluster, database: str, rich: str, aura: Aura) -> None:
    manifest = aura.json("backup")
    script = aura.repo / "snapshots" / manifest["id"] / "db" / "globals.sql"
    script.write_text(script.read_text() + "\nCREATE ROLE aura_intruder SUPERUSER LOGIN;\n")
    result = aura("restore", manifest["id"], "--globals", "--to-database", f"{database}_copy", check=3)
    assert "db: globals.sql: checksum mismatch" in _error_line(result.stderr)
    assert pg.sql("SELECT count(*) FROM pg_roles WHERE rolname = 'aura_intruder'") == [(0,)]
    assert _databases(pg, f"{database}_copy") == []


def test_clean_mode_restore_of_a_corrupt_data_file_leaves_the_live_database_untouched(
    pg: PostgresCluster, database: str, rich: str, aura: Aura
) -> None:
    aura.write_config(base_config({"db": db_component(restore_in_place="clean")}))
    manifest = aura.json("backup")
    with psycopg.connect(rich, autocommit=True) as conn:
        conn.execute("DELETE FROM billing.invoices WHERE id % 3 = 0")
        conn.execute("CREATE TABLE public.added_later (n int)")
    changed = fingerprint(rich)
    victim = _largest_data_file(aura, manifest)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x20  # same size: only reading it all can tell
    victim.write_bytes(bytes(data))
    result = aura("restore", manifest["id"], "--yes", check=3)
    assert f"db: dump/{victim.name}: checksum mismatch" in _error_line(result.stderr)
    assert fingerprint(rich) == changed


def test_corrupt_data_file_stops_the_restore_exit_3_and_drops_what_was_built(
    pg: PostgresCluster, database: str, rich: str, aura: Aura
) -> None:
    manifest = aura.json("backup")
    victim = _largest_data_file(aura, manifest)
    data = bytearray(victim.read_bytes())
    data[len(data) // 3] ^= 0xFF
    victim.write_bytes(bytes(data))
    before = fingerprint(rich)
    result = aura("restore", manifest["id"], "--yes", check=3, timeout=120)
    assert f"db: dump/{victim.name}" in _error_line(result.stderr)
    assert fingerprint(rich) == before
    assert _databases(pg, f"{database}_") == []


def test_a_change_in_the_last_byte_of_the_largest_data_file_fails_the_restore_though_pg_restore_read_it_all(
    pg: PostgresCluster, database: str, rich: str, aura: Aura
) -> None:
    """The last byte of a zstd frame (its checksum, which decompression does not need) changed:
    pg_restore gets every row it expects, and only the feeder's own hash, known after the stream
    ended, can tell. Success is reported only once that verdict is in."""
    manifest = aura.json("backup")
    victim = _largest_data_file(aura, manifest)
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0x01
    victim.write_bytes(bytes(data))
    for target in (["--to-database", f"{database}_copy"], ["--yes"]):
        before = fingerprint(rich)
        result = aura("restore", manifest["id"], *target, check=3, timeout=120)
        assert f"db: dump/{victim.name}" in _error_line(result.stderr), result.stderr[-3000:]
        assert fingerprint(rich) == before
        assert _databases(pg, f"{database}_") == []


def test_a_corrupt_small_data_file_is_refused_exit_3_before_pg_restore_reads_it_and_nothing_is_left(
    pg: PostgresCluster, database: str, rich: str, aura: Aura, tmp_path: Path
) -> None:
    """A small data file is decompressed into the staging folder before pg_restore starts
    (postgres.SMALL_COMPRESSED): its hash is checked first, so a changed byte (same size) stops
    the restore with exit 3 naming it; the new database is never left behind, nor the folder."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    manifest = aura.json("backup")
    entry = manifest["components"]["db"]
    data = [a for a in entry["artifacts"] if a.endswith(".dat.zst") and entry["artifacts"][a]["size"] > 64]
    smallest = min(data, key=lambda a: entry["artifacts"][a]["size"])
    victim = aura.repo / "snapshots" / str(manifest["id"]) / "db" / smallest
    content = bytearray(victim.read_bytes())
    content[len(content) // 2] ^= 0x01
    victim.write_bytes(bytes(content))
    result = aura("restore", manifest["id"], "--to-database", f"{database}_new", check=3, env={"TMPDIR": str(temp)})
    assert f"db: {smallest}: checksum mismatch" in _error_line(result.stderr)
    assert _databases(pg, f"{database}_") == []
    assert list(temp.iterdir()) == []
    before = fingerprint(rich)
    aura("restore", manifest["id"], "--yes", check=3)
    assert fingerprint(rich) == before


# ---------------------------------------------------------------- a tool killed mid-way


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command name) of every process below ``pid``, read from /proc."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        names[int(entry)] = text[text.index("(") + 1 : text.rindex(")")]
        parents[int(entry)] = int(text[text.rindex(")") + 2 :].split()[1])
    found: list[tuple[int, str]] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent:
                found.append((child, names[child]))
                frontier.append(child)
    return found


def _tool_pid(process: subprocess.Popen[str], tool: str, timeout: float = 120) -> int:
    """The pid of the ``tool --format=directory`` process started by ``process`` (the leader,
    not one of its workers, nor a ``--version`` probe)."""
    found: list[int] = []

    def look() -> bool:
        for child, name in _descendants(process.pid):
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
                parent = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1]
            except OSError:
                continue
            if name == tool and b"--format=directory" in argv and parent == str(process.pid):
                found.append(child)
                return True
        return process.poll() is not None

    assert wait_until(look, timeout, interval=0.01), f"{tool} never started"
    assert found, f"aura-ops exited before {tool} started: {process.communicate()}"
    return found[0]


@pytest.fixture
def big(pg: PostgresCluster, database: str, aura: Aura) -> str:
    dsn = pg.dsn(database)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(BIG_TABLE.format(rows=1_500_000))
        conn.execute("CREATE TABLE small AS SELECT generate_series(1, 10) AS n")
    aura.env["AURA_DB_DSN"] = dsn
    aura.write_config(base_config({"db": db_component()}))
    return dsn


def test_pg_restore_killed_mid_restore_ends_fast_naming_the_signal(
    pg: PostgresCluster, database: str, big: str, aura: Aura
) -> None:
    snapshot = aura.json("backup")["id"]
    process = aura.popen("restore", snapshot, "--to-database", f"{database}_copy")
    os.kill(_tool_pid(process, "pg_restore"), signal.SIGKILL)
    started = time.monotonic()
    _, err = process.communicate(timeout=60)
    assert time.monotonic() - started < 30
    assert process.returncode == 1
    line = _error_line(err)
    assert "pg_restore" in line and "killed by SIGKILL" in line
    assert "stopped reading" not in line
    assert wait_until(lambda: _databases(pg, f"{database}_copy") == [], 30)


def test_pg_dump_killed_mid_backup_ends_fast_naming_the_signal(
    pg: PostgresCluster, database: str, big: str, aura: Aura
) -> None:
    process = aura.popen("backup")
    os.kill(_tool_pid(process, "pg_dump"), signal.SIGKILL)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    line = _error_line(err)
    assert "pg_dump" in line and "killed by SIGKILL" in line
    assert aura.json("snapshots", "list")["snapshots"] == []


def test_pg_restore_error_line_is_the_reason_given(pg: PostgresCluster, database: str, rich: str, aura: Aura) -> None:
    """A restore that pg_restore refuses (a role the dump grants to is gone) names pg_restore's
    own error, not the tail of its output."""
    pg.sql("DROP ROLE IF EXISTS aura_gone")
    pg.sql("CREATE ROLE aura_gone NOLOGIN")
    with psycopg.connect(rich, autocommit=True) as conn:
        conn.execute("GRANT SELECT ON billing.invoices TO aura_gone")
    snapshot = aura.json("backup")["id"]
    with psycopg.connect(rich, autocommit=True) as conn:
        conn.execute("DROP OWNED BY aura_gone")
    pg.sql("DROP ROLE aura_gone")
    result = aura("restore", snapshot, "--to-database", f"{database}_copy", check=1)
    line = _error_line(result.stderr)
    assert 'role "aura_gone" does not exist' in line
    assert "Command was" not in line
    assert _databases(pg, f"{database}_copy") == []


@pytest.mark.parametrize("tmpdir", [True, False], ids=["TMPDIR", "default place"])
def test_staging_folder_of_a_killed_restore_is_listed_then_removed_by_the_next_command(
    pg: PostgresCluster, database: str, big: str, aura: Aura, tmp_path: Path, tmpdir: bool
) -> None:
    """Wherever the staging folder is (TMPDIR, else a memory file system when there is one),
    holding a small table's file written out whole and the big table's pipe."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {"TMPDIR": str(temp)} if tmpdir else {}
    aura.env.pop("TMPDIR", None)
    snapshot = aura.json("backup")["id"]
    process = aura.popen("restore", snapshot, "--to-database", f"{database}_copy", env=env)
    restoring = _tool_pid(process, "pg_restore")
    staging = Path(Path(f"/proc/{restoring}/cmdline").read_bytes().split(b"\0")[-2].decode())  # its last argument
    if tmpdir:
        assert staging.parent == temp
    kinds = {p.name: "pipe" if p.is_fifo() else "file" for p in staging.iterdir()}
    assert "pipe" in kinds.values() and list(kinds.values()).count("file") >= 2, kinds  # toc.dat, small's data
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert staging.exists()
    listed = aura.json("doctor", check=None)
    assert any(check["check"] == f"temporary path {staging}" for check in listed["checks"]), listed
    aura("backup", env=env)
    assert not staging.exists()


def test_a_restore_of_small_files_written_out_whole_and_a_big_one_piped_gives_the_same_content(
    pg: PostgresCluster, database: str, big: str, aura: Aura
) -> None:
    with psycopg.connect(big, autocommit=True) as conn:
        conn.execute("CREATE TABLE empty_one (n int)")
        conn.execute("CREATE TABLE medium AS SELECT g AS n, repeat('x', 300) AS pad FROM generate_series(1, 20000) g")
    before = fingerprint(big)
    snapshot = aura.json("backup")["id"]
    aura("restore", snapshot, "--to-database", f"{database}_copy")
    assert fingerprint(pg.dsn(f"{database}_copy")) == before


# ---------------------------------------------------------------- connections and privileges


def _use_dsn(aura: Aura, dsn: str, **extra: object) -> None:
    """A generous connect timeout: tests that reach the real cluster must not time out under load
    (the one test about a server that never answers passes its own short one)."""
    aura.env["AURA_DB_DSN"] = dsn
    settings: dict[str, object] = {"connect_attempts": 2, "connect_timeout": 30, **extra}
    aura.write_config(base_config({"db": db_component(**settings)}))


def test_connection_refused_is_exit_6_with_host_port_and_reason(
    pg: PostgresCluster, database: str, rich: str, aura: Aura
) -> None:
    snapshot = aura.json("backup")["id"]
    port = free_port()  # nothing listens there
    _use_dsn(aura, f"postgresql://postgres@127.0.0.1:{port}/{database}")
    for command in (("backup",), ("restore", snapshot, "--to-database", f"{database}_copy")):
        line = _error_line(aura(*command, check=6).stderr)
        assert f"127.0.0.1:{port}" in line
        assert "Connection refused" in line
    doctor = aura.json("doctor", check=6)
    failed = [check["detail"] for check in doctor["checks"] if not check["ok"]]
    assert any(f"127.0.0.1:{port}" in detail and "Connection refused" in detail for detail in failed), failed


def test_unknown_host_is_exit_6_naming_the_dns_failure(aura: Aura) -> None:
    _use_dsn(aura, "postgresql://postgres@db.aura-test.invalid:5432/shop")
    line = _error_line(aura("backup", check=6).stderr)
    assert "db.aura-test.invalid:5432" in line
    assert "resolve" in line or "translate host name" in line


def test_server_that_never_answers_is_exit_6_after_the_timeout(aura: Aura) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts in the kernel, never answers
    try:
        port = silent.getsockname()[1]
        # the timeout is what is tested here: nothing ever answers, so a short one cannot flake
        _use_dsn(aura, f"postgresql://postgres@127.0.0.1:{port}/shop", connect_timeout=3)
        line = _error_line(aura("backup", check=6, timeout=120).stderr)
    finally:
        silent.close()
    assert f"127.0.0.1:{port}" in line
    assert "timeout" in line


@pytest.mark.parametrize(
    ("dsn_tail", "reason"),
    [
        ("@127.0.0.1:{port}/shop?port=abc", 'invalid integer value "abc" for connection option "port"'),
        ("@127.0.0.1:99999/shop", "invalid port number"),
        ("@127.0.0.1:{port}/shop?sslmode=sometimes", 'invalid sslmode value: "sometimes"'),
        ("@127.0.0.1:{port}/no_such_database", 'database "no_such_database" does not exist'),
        ("@127.0.0.1:{port}/shop?sslmode=require", "server does not support SSL, but SSL was required"),
        ("@127.0.0.1:{port}/shop?connect_timeout=abc", 'invalid integer value "abc" for connection option'),
    ],
)
def test_bad_connection_settings_are_exit_2_without_retries(
    pg: PostgresCluster, aura: Aura, dsn_tail: str, reason: str
) -> None:
    _use_dsn(aura, "postgresql://postgres" + dsn_tail.format(port=pg.port))
    result = aura("backup", check=2)
    assert reason in _error_line(result.stderr)
    assert "postgres.connect_retry" not in result.stderr
    assert "unexpected" not in result.stderr
    doctor = aura.json("doctor", check=2)
    assert any(reason in check["detail"] for check in doctor["checks"] if not check["ok"])


@pytest.fixture
def limited_role(pg: PostgresCluster, database: str) -> str:
    pg.sql(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'aura_limited') "
        "THEN CREATE ROLE aura_limited LOGIN NOCREATEDB; END IF; END $$"
    )
    pg.sql(f'GRANT ALL ON DATABASE "{database}" TO aura_limited')
    with psycopg.connect(pg.dsn(database), autocommit=True) as conn:
        conn.execute("GRANT ALL ON SCHEMA public TO aura_limited")
    return "aura_limited"


def test_restore_without_createdb_is_exit_1_naming_the_privilege(
    pg: PostgresCluster, database: str, limited_role: str, aura: Aura
) -> None:
    with psycopg.connect(pg.dsn(database, user=limited_role), autocommit=True) as conn:
        conn.execute("CREATE TABLE mine AS SELECT generate_series(1, 100) AS n")
    _use_dsn(aura, pg.dsn(database, user=limited_role), globals=False)
    snapshot = aura.json("backup")["id"]
    result = aura("restore", snapshot, "--to-database", f"{database}_copy", check=1)
    line = _error_line(result.stderr)
    assert "permission denied to create database" in line
    assert "CREATEDB" in line
    assert "unexpected" not in line and "traceback" not in line


def test_backup_of_a_table_the_role_cannot_read_is_exit_1_naming_it(
    pg: PostgresCluster, database: str, limited_role: str, aura: Aura
) -> None:
    with psycopg.connect(pg.dsn(database), autocommit=True) as conn:
        conn.execute("CREATE TABLE secret AS SELECT generate_series(1, 10) AS n")
    _use_dsn(aura, pg.dsn(database, user=limited_role), globals=False)
    result = aura("backup", check=1)
    line = _error_line(result.stderr)
    assert "permission denied for table secret" in line
    assert "unexpected" not in line and "traceback" not in line
    assert aura.json("snapshots", "list")["snapshots"] == []


def test_json_error_of_a_failed_restore_is_one_line(pg: PostgresCluster, database: str, rich: str, aura: Aura) -> None:
    manifest = aura.json("backup")
    _largest_data_file(aura, manifest).unlink()
    out = aura("restore", manifest["id"], "--to-database", f"{database}_copy", "--json", check=3).stdout
    report = json.loads(out)
    assert report["exit_code"] == 3
    assert "\n" not in report["error"]
