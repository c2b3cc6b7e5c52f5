"""PostgresComponent's SQL seam (``execute``, ``query``) and its two users, the ``sql`` action and
the deploy's sql check, against a fake connection: a driver error leaves the component as one
masked AuraError line with its SQLSTATE (exit 1; a missing privilege names it; a lost connection
is exit 6), what was asked is committed or rolled back, and the connection is always closed.
The server is never reached: ``postgres.connect`` is replaced."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from aura_ops import secrets
from aura_ops.components import postgres
from aura_ops.components.postgres import Connection, PostgresComponent
from aura_ops.config import Config, PostgresConfig, SqlCheck, parse
from aura_ops.engine import checks
from aura_ops.engine.actions import REGISTRY, Context
from aura_ops.errors import EXIT_FAILED, EXIT_UNREACHABLE, AuraError, PrivilegeError, UnreachableError
from aura_ops.hosts.fake import FakeHost
from aura_ops.hosts.inventory import Inventory

DSN = "postgresql://app@127.0.0.1:5432/shop"


class _Cursor:
    def __init__(self, rows: list[tuple[Any, ...]] | None) -> None:
        self.rows = rows
        self.description = None if rows is None else [("column",)]

    def fetchall(self) -> list[tuple[Any, ...]]:
        assert self.rows is not None, "fetchall of a statement without rows"
        return self.rows

    def fetchone(self) -> tuple[Any, ...] | None:
        if self.rows is None:
            raise psycopg.ProgrammingError("the last operation didn't produce a result")
        return self.rows[0] if self.rows else None


class _Db:
    """A psycopg connection as the component uses it: execute, commit, close."""

    def __init__(self, rows: list[tuple[Any, ...]] | None = None, error: Exception | None = None) -> None:
        self.rows, self.error = rows, error
        self.statements: list[str] = []
        self.committed = self.closed = False

    def execute(self, statement: str, params: tuple[Any, ...] | None = None) -> _Cursor:
        self.statements.append(statement)
        if self.error is not None:
            raise self.error
        return _Cursor(self.rows)

    def commit(self) -> None:
        self.committed = True

    def cancel(self) -> None:  # what the timeout's timer calls (psycopg's Connection.cancel)
        raise AssertionError("no statement here outlives its timeout")

    def close(self) -> None:
        self.closed = True


@pytest.fixture(autouse=True)
def _no_secrets() -> Iterator[None]:
    yield
    secrets.forget()


class _Server:
    """What ``connect`` hands out (``db``) and the Connection each call asked for."""

    def __init__(self) -> None:
        self.db = _Db()
        self.asked: list[Connection] = []

    def use(self, db: _Db) -> _Db:
        self.db = db
        return db

    def connect(self, conn: Connection, autocommit: bool = False) -> _Db:
        self.asked.append(conn)
        return self.db


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> _Server:
    fake = _Server()
    monkeypatch.setattr(postgres, "connect", fake.connect)
    return fake


def _component() -> PostgresComponent:
    return PostgresComponent("db", PostgresConfig(type="postgres", dsn=DSN), FakeHost())


# -- the component ---------------------------------------------------------------------------------


def test_execute_commits_and_returns_the_rows_as_lists_then_closes(server: _Server) -> None:
    db = server.use(_Db(rows=[(1, "a"), (2, "b")]))
    assert _component().execute("UPDATE t SET v = 1 RETURNING id, v") == [[1, "a"], [2, "b"]]
    assert db.statements == ["UPDATE t SET v = 1 RETURNING id, v"] and db.committed and db.closed
    assert server.asked[0].dbname == "shop" and server.asked[0].attempts == 3


def test_execute_of_a_statement_without_rows_returns_none_and_commits(server: _Server) -> None:
    db = server.use(_Db(rows=None))
    assert _component().execute("ALTER TABLE t ADD COLUMN v2 int") == []
    assert db.committed and db.closed


def test_a_refused_statement_is_one_line_with_its_sqlstate_nothing_committed(server: _Server) -> None:
    error = psycopg.errors.SyntaxError('syntax error at or near "SELEC"\nLINE 1: SELEC 1\n        ^')
    db = server.use(_Db(error=error))
    with pytest.raises(AuraError) as raised:
        _component().execute("SELEC 1")
    assert type(raised.value) is AuraError and raised.value.exit_code == EXIT_FAILED
    assert str(raised.value) == 'db: syntax error at or near "SELEC"; SQLSTATE 42601'
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert not db.committed and db.closed


def test_a_secret_in_the_servers_words_is_masked(server: _Server) -> None:
    secrets.register("tok-9f8e7d6c")
    server.use(
        _Db(error=psycopg.errors.InvalidTextRepresentation('invalid input syntax for type integer: "tok-9f8e7d6c"'))
    )
    with pytest.raises(AuraError, match=r'^db: invalid input syntax for type integer: "\*\*\*"; SQLSTATE 22P02$'):
        _component().execute("SELECT 'tok-9f8e7d6c'::int")


def test_a_missing_privilege_names_it_and_a_lost_connection_is_unreachable(server: _Server) -> None:
    server.use(_Db(error=psycopg.errors.InsufficientPrivilege("permission denied for table items")))
    with pytest.raises(PrivilegeError, match=r"^db: permission denied for table items \(the role needs SELECT"):
        _component().execute("SELECT * FROM items")
    server.use(_Db(error=psycopg.OperationalError("server closed the connection unexpectedly")))
    with pytest.raises(UnreachableError) as lost:
        _component().query("SELECT 1")
    assert lost.value.exit_code == EXIT_UNREACHABLE
    assert str(lost.value) == "db: lost the database connection: server closed the connection unexpectedly"


def test_query_gives_the_first_row_rolls_back_and_connects_as_asked(server: _Server) -> None:
    db = server.use(_Db(rows=[(42,), (43,)]))
    assert _component().query("SELECT 40 + 2", attempts=1, timeout=2) == (42,)
    assert not db.committed and db.closed
    assert (server.asked[0].attempts, server.asked[0].timeout) == (1, 2)
    server.use(_Db(rows=[]))
    assert _component().query("SELECT 1 WHERE false") is None
    assert (server.asked[1].attempts, server.asked[1].timeout) == (3, 10)


def test_an_error_that_is_not_the_drivers_passes_unchanged(server: _Server) -> None:
    db = server.use(_Db(error=KeyError("not a database error")))
    with pytest.raises(KeyError):
        _component().execute("SELECT 1")
    assert db.closed


# -- the sql action and the sql check ------------------------------------------------------------


def _config(tmp_path: Path) -> Config:
    return parse(
        {
            "repository": {"path": str(tmp_path / "repo")},
            "components": {"db": {"type": "postgres", "dsn": DSN}},
        }
    )


def _ctx(config: Config) -> Context:
    hosts = Inventory(config, hosts={"local": FakeHost("local")})
    return Context(config, "r1", "migrate", Path("/state/runs/r1"), None, hosts, None)


def test_the_sql_action_checks_applies_and_undoes_through_the_component(tmp_path: Path, server: _Server) -> None:
    action, ctx = REGISTRY["sql"], _ctx(_config(tmp_path))
    params = action.Params.model_validate(
        {"component": "db", "sql": "ALTER TABLE t ADD c int", "undo": "ALTER TABLE t DROP c", "check": "SELECT true"}
    )
    db = server.use(_Db(rows=[(True,)]))
    assert action.check(params, ctx) is True and db.committed
    db = server.use(_Db(rows=None))
    assert action.apply(params, ctx) == {"rows": []} and db.statements == ["ALTER TABLE t ADD c int"]
    db = server.use(_Db(rows=None))
    action.compensate(params, ctx, {"rows": []})
    assert db.statements == ["ALTER TABLE t DROP c"] and db.committed


def test_a_failing_sql_step_raises_the_components_error_not_the_drivers(tmp_path: Path, server: _Server) -> None:
    action, ctx = REGISTRY["sql"], _ctx(_config(tmp_path))
    params = action.Params.model_validate({"component": "db", "sql": "SELEC 1"})
    server.use(_Db(error=psycopg.errors.SyntaxError('syntax error at or near "SELEC"')))
    with pytest.raises(AuraError, match=r'^db: syntax error at or near "SELEC"; SQLSTATE 42601$'):
        action.apply(params, ctx)


def test_the_sql_check_tries_once_briefly_and_a_refused_query_fails_the_check(tmp_path: Path, server: _Server) -> None:
    config = _config(tmp_path)
    check = SqlCheck(type="sql", component="db", query="SELECT 40 + 2", expect="42", timeout=3)
    server.use(_Db(rows=[(42,)]))
    assert checks.probe(check, config) == "returned '42'"
    assert (server.asked[0].attempts, server.asked[0].timeout) == (1, 3)
    server.use(_Db(rows=[(41,)]))
    with pytest.raises(checks.CheckFailed, match=r"^returned '41', expected '42'$"):
        checks.probe(check, config)
    server.use(_Db(error=psycopg.errors.UndefinedTable('relation "nope" does not exist')))
    with pytest.raises(checks.CheckFailed, match=r'^db: relation "nope" does not exist; SQLSTATE 42P01$'):
        checks.probe(check, config)
