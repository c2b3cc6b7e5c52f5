"""PostgresComponent's planning that needs no server: its client tools and their versions read
through a FakeHost (scripted ``--version`` answers), the commands it builds, and the inputs a
restore refuses before it connects. The database server is never faked: ``connect`` is replaced
by a tripwire, so a test that reached the server would fail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aura_ops.components import postgres
from aura_ops.components.base import RestoreRequest
from aura_ops.components.postgres import Connection, PostgresComponent, make_pg_dumpall_globals, make_pg_restore
from aura_ops.components.postgres import database as pgdatabase
from aura_ops.config import PostgresConfig
from aura_ops.errors import CommandFailed, ConfigError, ToolMissing, UsageError, VerificationError
from aura_ops.hosts.fake import FakeHost, result
from aura_ops.repository import Snapshot

DSN_ENV = "AURA_TEST_PG_FAKEHOST_DSN"


@pytest.fixture(autouse=True)
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach a server fails the test."""

    def tripwire(conn: Connection, autocommit: bool = False) -> Any:
        raise AssertionError(f"connected to {conn.where}")

    monkeypatch.setattr(postgres, "connect", tripwire)


def _versions(fake: FakeHost, prefix: str = "", **answers: str) -> None:
    for program, text in answers.items():
        fake.on([f"{prefix}{program}", "--version"], result(text + "\n"))


# -- doctor: tools and versions ------------------------------------------------------------------


def test_doctor_reports_each_client_tool_with_its_version_and_a_missing_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DSN_ENV, raising=False)
    fake = FakeHost()
    _versions(
        fake,
        pg_dump="pg_dump (PostgreSQL) 16.2 (Debian 16.2-1.pgdg120+2)",
        pg_restore="pg_restore (PostgreSQL) 16.2",
        pg_dumpall="pg_dumpall (PostgreSQL) 15.8",
    )
    component = PostgresComponent("db", PostgresConfig(type="postgres", dsn_env=DSN_ENV), fake)
    checks = {check["check"]: check for check in component.doctor()}
    assert checks["db: pg_dump"]["ok"] and checks["db: pg_dump"]["detail"].startswith("pg_dump (PostgreSQL) 16.2")
    assert checks["db: pg_dumpall"]["detail"] == "pg_dumpall (PostgreSQL) 15.8"
    assert not checks["db: psql"]["ok"] and "psql: not found on fake" in checks["db: psql"]["detail"]
    assert checks["db: psql"]["exit_code"] == 2
    database = checks["db: database"]  # the DSN cannot be read: no connection tried, no version comparison
    assert not database["ok"] and DSN_ENV in database["detail"] and database["exit_code"] == ConfigError.exit_code
    assert "db: pg_dump not older than server" not in checks
    assert fake.argvs == [[program, "--version"] for program in ("pg_dump", "pg_restore", "pg_dumpall", "psql")]


def test_doctor_runs_the_tools_of_bin_dir_and_flags_an_unreadable_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DSN_ENV, raising=False)
    fake = FakeHost()
    prefix = "/usr/lib/postgresql/16/bin/"
    _versions(
        fake, prefix, pg_dump="pg_dump (PostgreSQL) 16.2", pg_restore="pg_restore 16", psql="psql (PostgreSQL) 16.2"
    )
    _versions(fake, prefix, pg_dumpall="pg_dumpall (PostgreSQL) 16.2")
    config = PostgresConfig(type="postgres", dsn_env=DSN_ENV, bin_dir=Path(prefix))
    checks = {check["check"]: check for check in PostgresComponent("db", config, fake).doctor()}
    assert [checks[f"db: {p}"]["ok"] for p in ("pg_dump", "pg_restore", "pg_dumpall", "psql")] == [
        True,
        False,
        True,
        True,
    ]
    assert "cannot read its version from 'pg_restore 16'" in checks["db: pg_restore"]["detail"]
    assert all(argv[0].startswith(prefix) for argv in fake.argvs) and len(fake.argvs) == 4


@pytest.mark.parametrize(
    ("answer", "major"),
    [
        ("pg_dump (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)", 15),
        ("pg_dump (PostgreSQL) 9.6.24", 9),
        ("pg_dump (PostgreSQL) 17devel", 17),
        ("pg_dump (PostgreSQL) 16beta2", 16),
    ],
)
def test_tool_major_reads_the_major_version_from_the_tools_answer(answer: str, major: int) -> None:
    fake = FakeHost()
    fake.on(["pg_dump", "--version"], result(answer + "\n"))
    assert postgres.tool_major(fake, "pg_dump") == (major, answer)


def test_tool_major_of_a_garbled_or_failing_answer_is_an_error() -> None:
    fake = FakeHost()
    fake.on(["pg_dump", "--version"], result("pg_dump: version unknown\n"))
    with pytest.raises(ToolMissing, match="cannot read its version"):
        postgres.tool_major(fake, "pg_dump")
    fake.on(["pg_restore", "--version"], result(returncode=127, stderr="error while loading shared libraries\n"))
    with pytest.raises(CommandFailed, match="shared libraries"):
        postgres.tool_major(fake, "pg_restore")


def test_a_pg_dump_older_than_the_server_is_refused_naming_the_package() -> None:
    fake = FakeHost()
    fake.on(["pg_dump", "--version"], result("pg_dump (PostgreSQL) 14.11\n"))
    component = PostgresComponent("db", PostgresConfig(type="postgres", dsn="postgresql://u@127.0.0.1/shop"), fake)
    with pytest.raises(ToolMissing, match=r"pg_dump 14 is older than the server \(15\).*postgresql-client-15"):
        component._check_versions(15)
    assert component._check_versions(14) == "pg_dump (PostgreSQL) 14.11"


# -- commands ------------------------------------------------------------------------------------


def test_pg_restore_argv_is_exact_and_the_password_only_in_env() -> None:
    conn = Connection({"host": "127.0.0.1", "port": "5433", "dbname": "shop", "user": "app", "password": "pw-env"})
    config = PostgresConfig(type="postgres", dsn="postgresql://app@127.0.0.1:5433/shop", bin_dir=Path("/opt/pg/bin"))
    command = make_pg_restore(config, conn.with_db("shop_restore"), "/repo/s1/db/dump", 3, clean=True)
    assert command.argv == (
        "/opt/pg/bin/pg_restore",
        "--format=directory",
        "--jobs=3",
        "--exit-on-error",
        "--dbname=shop_restore",
        "--clean",
        "--if-exists",
        "/repo/s1/db/dump",
    )
    assert command.env["PGPASSWORD"] == "pw-env" and command.env["PGDATABASE"] == "shop_restore"
    assert command.env["PGHOST"] == "127.0.0.1" and command.env["PGPORT"] == "5433"
    assert "pw-env" not in " ".join(command.argv)
    fake = FakeHost()
    fake.on("/opt/pg/bin/pg_restore")
    fake.start(command).wait()
    assert fake.commands == [command]  # what a host receives is the value built, as it is


def test_pg_dumpall_leaves_role_passwords_out_unless_superuser() -> None:
    conn = Connection({"dbname": "shop"})
    config = PostgresConfig(type="postgres", dsn="postgresql://app@127.0.0.1/shop")
    plain = make_pg_dumpall_globals(config, conn, Path("/out/globals.sql"), superuser=False)
    assert plain.argv == (
        "pg_dumpall",
        "--globals-only",
        "--file=/out/globals.sql",
        "--database=shop",
        "--no-role-passwords",
    )
    assert "--no-role-passwords" not in make_pg_dumpall_globals(config, conn, Path("/g"), superuser=True).argv


# -- restores refused before connecting ----------------------------------------------------------

SECTION: dict[str, Any] = {
    "type": "postgres",
    "database": "shop",
    "artifacts": {"dump/toc.dat": {"size": 5, "hash": "a" * 64}},
}


def _snapshot(tmp_path: Path, section: dict[str, Any]) -> Snapshot:
    return Snapshot("s1", tmp_path, {"checksum_algorithm": "sha256", "components": {"db": section}})


def _configured(store: FakeHost | None = None) -> PostgresComponent:
    config = PostgresConfig(type="postgres", dsn="postgresql://app@127.0.0.1:5432/shop")
    return PostgresComponent("db", config, FakeHost(), store)


def test_a_component_no_longer_configured_refuses_to_plan_or_restore(tmp_path: Path) -> None:
    component = PostgresComponent("db", None, FakeHost())
    snapshot = _snapshot(tmp_path, SECTION)
    with pytest.raises(UsageError, match="component db is not in the configuration: no database to restore into"):
        component.restore_target(snapshot, RestoreRequest(to="shop_copy"))
    with pytest.raises(UsageError, match="not in the configuration"):
        component.restore(snapshot, RestoreRequest(dry_run=True))


@pytest.mark.parametrize(
    ("artifacts", "on_disk", "problem"),
    [
        ({"dump/toc.dat": {"size": 5, "hash": "a" * 64}}, None, "db: dump/toc.dat is missing"),
        ({"dump/toc.dat": {"size": 5, "hash": "a" * 64}}, b"12", r"dump/toc\.dat: checksum mismatch \(2 bytes"),
        ({"dump/toc.dat": {"size": 5, "hash": "a" * 64}}, b"PGDMP", r"dump/toc\.dat: checksum mismatch$"),
        ({"dump/3401.dat.zst": {"size": 1, "hash": "b" * 64}}, None, "dump/toc.dat is not in the manifest"),
    ],
)
def test_a_restore_with_a_missing_or_damaged_dump_is_refused_before_connecting(
    tmp_path: Path, artifacts: dict[str, Any], on_disk: bytes | None, problem: str
) -> None:
    store = FakeHost("control")  # the snapshot's files are read through the store host
    if on_disk is not None:
        store.add_file(f"{tmp_path}/db/dump/toc.dat", on_disk)
    snapshot = _snapshot(tmp_path, {**SECTION, "artifacts": artifacts})
    with pytest.raises(VerificationError, match=problem):
        _configured(store).restore(snapshot, RestoreRequest(replace=True))


def test_a_restore_of_a_damaged_section_is_refused_before_connecting(tmp_path: Path) -> None:
    snapshot = _snapshot(tmp_path, {"type": "postgres", "artifacts": {}})
    with pytest.raises(VerificationError, match="db: its manifest section is damaged: database"):
        _configured().restore(snapshot, RestoreRequest(dry_run=True))


@pytest.mark.parametrize("name", ["", "   "])
def test_an_empty_target_database_name_is_refused_before_the_catalog_is_read(name: str) -> None:
    class Untouchable:
        def __getattr__(self, attribute: str) -> Any:
            raise AssertionError(f"the admin connection was used ({attribute})")

    config = PostgresConfig(type="postgres", dsn="postgresql://app@127.0.0.1/shop")
    with pytest.raises(UsageError, match="--to-database needs a database name"):
        pgdatabase.inspect_target(Untouchable(), Connection({"dbname": "shop"}), config, name)
