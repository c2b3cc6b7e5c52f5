"""Driver and tool failures as one line with the right exit code (pure classification)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aura_ops.components import postgres
from aura_ops.errors import PrivilegeError
from aura_ops.hosts import Result


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (
            'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused\n\tIs the',
            "transient",
        ),
        ("failed to resolve host 'db.invalid': [Errno -2] Name or service not known", "transient"),
        ("connection timeout expired", "transient"),
        (
            'connection failed: connection to server at "h", port 5 failed: FATAL:  the database system is starting up',
            "transient",
        ),
        ('connection is bad: invalid integer value "abc" for connection option "port"', "config"),
        ('connection is bad: invalid sslmode value: "sometimes"', "config"),
        (
            'connection failed: connection to server at "h", port 5 failed: FATAL:  database "x" does not exist',
            "config",
        ),
        ('connection failed: ... failed: FATAL:  password authentication failed for user "u"', "config"),
        ('connection failed: ... failed: FATAL:  permission denied for database "x"', "privilege"),
    ],
)
def test_connection_failures_are_classified_by_what_the_user_must_do(message: str, kind: str) -> None:
    assert postgres.connection_failure_kind(message) == kind


def test_the_reason_is_the_servers_own_words_without_the_preamble() -> None:
    error = Exception(
        'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?"
    )
    assert postgres.failure_reason(error) == "Connection refused"
    fatal = Exception(
        'connection failed: connection to server at "h", port 5 failed: FATAL:  database "x" does not exist'
    )
    assert postgres.failure_reason(fatal) == 'database "x" does not exist'


def test_a_tool_failure_names_its_first_error_line_not_what_follows() -> None:
    stderr = (
        "pg_restore: creating TABLE public.t\n"
        'pg_restore: error: could not execute query: ERROR:  role "gone" does not exist\n'
        "Command was: GRANT SELECT ON TABLE public.t TO gone;\n"
        "pg_restore: error: a worker process died unexpectedly\n"
    )
    error = postgres.tool_failure("db", "pg_restore", Result(1, b"", stderr, 1.0))
    assert str(error) == 'db: pg_restore: error: could not execute query: ERROR: role "gone" does not exist (exit 1)'


def test_a_killed_tool_is_named_with_its_signal() -> None:
    error = postgres.tool_failure("db", "pg_dump", Result(-9, b"", "pg_dump: dumping contents of table t", 1.0))
    assert str(error) == "db: pg_dump was killed by SIGKILL"


def test_a_privilege_failure_of_a_tool_names_the_privilege_and_exits_1() -> None:
    stderr = (
        "pg_dump: error: query failed: ERROR:  permission denied for table secret\npg_dump: detail: Query was: LOCK"
    )
    error = postgres.tool_failure("db", "pg_dump", Result(1, b"", stderr, 1.0))
    assert isinstance(error, PrivilegeError) and error.exit_code == 1
    assert "permission denied for table secret (the role needs SELECT on the table)" in str(error)
    tablespace = postgres.with_privilege_hint("permission denied for tablespace shelf")
    assert tablespace == "permission denied for tablespace shelf (the role needs CREATE on the tablespace)"


def test_a_dsn_without_dbname_names_the_database_libpq_would_reach(monkeypatch: pytest.MonkeyPatch) -> None:
    import pwd

    from aura_ops.config import PostgresConfig

    for name in ("PGDATABASE", "PGUSER", "PGSERVICE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AURA_T_DSN", "host=127.0.0.1 user=app")
    cfg = PostgresConfig(type="postgres", dsn_env="AURA_T_DSN")
    assert postgres.connection("db", cfg).dbname == "app"  # the user's name
    monkeypatch.setenv("PGDATABASE", "shop")
    assert postgres.connection("db", cfg).params["dbname"] == "shop"  # explicit for every tool
    monkeypatch.delenv("PGDATABASE")
    monkeypatch.setenv("AURA_T_DSN", "host=127.0.0.1")
    monkeypatch.setenv("PGUSER", "reader")
    assert postgres.connection("db", cfg).dbname == "reader"
    monkeypatch.delenv("PGUSER")
    assert postgres.connection("db", cfg).dbname == pwd.getpwuid(os.geteuid()).pw_name
    monkeypatch.setenv("AURA_T_DSN", "host=127.0.0.1 dbname=Shop")
    monkeypatch.setenv("PGDATABASE", "other")
    assert postgres.connection("db", cfg).dbname == "Shop"  # the DSN's own wins, as in libpq
    monkeypatch.setenv("AURA_T_DSN", "service=prod")
    monkeypatch.setenv("PGSERVICEFILE", "/nonexistent/pg_service.conf")
    assert "dbname" not in postgres.connection("db", cfg).params  # no such service: libpq says so later


def test_a_dsn_naming_a_service_names_the_database_of_the_service_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """service=prod (or PGSERVICE) reaches the database the service file names: the restore's
    target and every name check mean it (they meant $USER: an in-place restore recreated a
    database named 'root' beside the live one and said it had restored it)."""
    from aura_ops.config import PostgresConfig

    for name in ("PGDATABASE", "PGUSER", "PGSERVICE", "PGHOST", "PGPORT"):
        monkeypatch.delenv(name, raising=False)
    services = tmp_path / "pg_service.conf"
    socket = tmp_path / "no-server"  # nothing listens: libpq reads the file, nothing is sent
    services.write_text(f"[prod]\nhost={socket}\ndbname=shop\nuser=app\n\n[bare]\nhost={socket}\nuser=reader\n")
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    monkeypatch.setenv("USER", "root")
    monkeypatch.setenv("AURA_T_DSN", "service=prod")
    cfg = PostgresConfig(type="postgres", dsn_env="AURA_T_DSN")
    conn = postgres.connection("db", cfg)
    assert conn.dbname == "shop" and conn.params["dbname"] == "shop"
    monkeypatch.setenv("AURA_T_DSN", "service=bare")
    assert postgres.connection("db", cfg).dbname == "reader"  # libpq's default: the service's user
    monkeypatch.setenv("AURA_T_DSN", "service=prod dbname=other")
    assert postgres.connection("db", cfg).dbname == "other"  # the DSN's own wins
    monkeypatch.setenv("AURA_T_DSN", f"host={socket}")
    monkeypatch.setenv("PGSERVICE", "prod")
    assert postgres.connection("db", cfg).dbname == "shop"
