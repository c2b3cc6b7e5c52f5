"""PostgreSQL component: consistent, parallel, zstd-compressed dumps and streaming restores.

Backup: a REPEATABLE READ transaction exports its snapshot; ``pg_dump -Fd -Z0 -j N
--snapshot=<id>`` dumps exactly that snapshot while the same transaction records the facts
(with checksums, per-table row counts and content checksums too), so the manifest describes
exactly the dumped data. Each table's data file is compressed with zstd while pg_dump writes it,
hashed as it is written; without checksums its rows are counted there, in the COPY stream.
``pg_dumpall --globals-only`` keeps roles and tablespaces.

Restore: ``pg_restore -j N`` reads a staging folder of named pipes, one per data file, each fed
by a decompressing thread when pg_restore opens it: parallel, streaming, and with no
uncompressed copy on disk.

``PostgresComponent`` is the component (``base.Component``): one configured database on its
host, whose programs (pg_dump, pg_restore, ...) and host-side files (the restore's staging
folder and its pipes) are reached only through that ``Host``; its part of a snapshot (the dump
folder, read and written as pg_dump finishes each file, and fed back to pg_restore) only through
its ``store``, the control machine where the snapshot folders are. Its manifest section is a
``PostgresManifest``. Driver errors become ``AuraError`` subclasses here (``as_aura_error``,
``statement_error``): ``execute`` and ``query`` serve the sql action and the deploy's sql checks.
The module's public functions (``connection``, ``connect``, the command builders, the facts)
serve the other modules of the package (``database``, ``clone``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import errno
import functools
import os
import pwd
import re
import secrets as pysecrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar, Concatenate, ParamSpec, Protocol, TypeVar, cast

from aura_ops import checksum, faults, logs, secrets
from aura_ops.components.base import Artifact, ComponentManifest, RestoreRequest, RestoreTarget, SnapshotTarget
from aura_ops.config import PostgresConfig
from aura_ops.errors import (
    AuraError,
    ConfigError,
    PrivilegeError,
    ToolMissing,
    UnreachableError,
    UsageError,
    VerificationError,
    first_line,
)
from aura_ops.hosts import Command, Host, Process, Result
from aura_ops.repository import Snapshot
from aura_ops.state import temporaries

DUMP = "dump"
GLOBALS = "globals.sql"
COMPRESSED = ".zst"
FINISHED_ITEM = re.compile(r"finished item (\d+) ")
P = ParamSpec("P")
R = TypeVar("R")
STOP_GRACE = 5.0  # seconds a tool gets to stop on SIGTERM before it is killed
# a restore writes small data files out whole (checked first) instead of feeding them through pipes:
SMALL_COMPRESSED = 1 << 20  # a data file is tried when its artifact is at most this size,
SMALL_PLAIN = 2 << 20  # kept when it decompresses to at most this (else a pipe after all),
SMALL_TOTAL = 64 << 20  # while all of them together stay under this (and a quarter of the free space)

# conninfo keyword -> libpq environment variable: the credentials reach tools via env, not argv.
LIBPQ_ENV = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "passfile": "PGPASSFILE",
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
    "service": "PGSERVICE",
    "options": "PGOPTIONS",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
}
# A connection failure whose message holds one of these is the configuration's fault (exit 2,
# never retried): a malformed option, a database or role that does not exist, credentials refused.
CONFIG_FAILURES = (
    "connection is bad:",  # libpq refused the options before any network traffic
    "invalid connection option",
    "invalid integer value",
    "invalid port number",
    "invalid sslmode value",
    "server does not support ssl",  # sslmode=require (or verify-*) against a server without SSL
    "invalid value for parameter",
    "does not exist",
    "no pg_hba.conf entry",
    "authentication failed",
    "no password supplied",
)
# ... or of these, a privilege the role lacks (exit 1, naming it).
PRIVILEGE_FAILURES = ("permission denied", "must be superuser", "does not have connect privilege")
# What the role needs when the server says so, for the one-line reason.
PRIVILEGE_HINTS = (
    ("permission denied to create database", "the role needs CREATEDB"),
    ("permission denied for database", "the role needs CONNECT on the database"),
    ("does not have connect privilege", "the role needs CONNECT on the database"),
    ("permission denied for tablespace", "the role needs CREATE on the tablespace"),  # (before "table")
    ("permission denied for table", "the role needs SELECT on the table"),
    ("permission denied for sequence", "the role needs SELECT on the sequence"),
    ("permission denied for schema", "the role needs USAGE on the schema"),
    ("permission denied for large object", "the role needs SELECT on the large objects"),
    ("permission denied to create role", "the role needs CREATEROLE"),
    ("must be superuser", "the role needs SUPERUSER"),
    ("must be owner of", "the role must own the object"),
)


# ---------------------------------------------------------------- connection


@dataclass(frozen=True)
class Connection:
    """Connection parameters of one database; ``password`` is registered as a secret."""

    params: dict[str, str]
    attempts: int = 3
    timeout: int = 10

    @property
    def dbname(self) -> str:
        return self.params.get("dbname") or self.params.get("user") or os.environ.get("USER", "")

    @property
    def where(self) -> str:
        host = self.params.get("host") or self.params.get("hostaddr") or "local socket"
        return f"{host}:{self.params.get('port', '5432')}"

    def with_db(self, dbname: str) -> Connection:
        return Connection({**self.params, "dbname": dbname}, self.attempts, self.timeout)

    def conninfo(self) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo("", **self.params)

    def env(self) -> dict[str, str]:
        return {LIBPQ_ENV[k]: v for k, v in self.params.items() if k in LIBPQ_ENV and v}


def connection(name: str, cfg: PostgresConfig) -> Connection:
    """Resolve the component's DSN and password from env or file; ConfigError when missing."""
    from psycopg import conninfo

    what = f"component {name}"
    dsn = secrets.from_env(cfg.dsn_env, what) if cfg.dsn_env else (cfg.dsn or "")
    try:
        params = {k: str(v) for k, v in conninfo.conninfo_to_dict(dsn).items()}
    except Exception:
        raise ConfigError(f"{what}: the DSN cannot be parsed") from None
    secrets.register(params.get("password"))
    if not params.get("dbname") and (params.get("service") or os.environ.get("PGSERVICE")):
        # a service file may name the database: libpq's own reading of it (a backup through
        # service=prod dumped the service's database while an in-place restore recreated one
        # named after $USER and said it had restored it)
        resolved = _service_dbname(params)
        if resolved:
            params["dbname"] = resolved
    if not params.get("dbname") and not params.get("service") and not os.environ.get("PGSERVICE"):
        # the database libpq reaches without a dbname: PGDATABASE, else the user's name (the DSN's,
        # PGUSER, the account's). Made explicit, so that pg_dump, pg_restore, every name check
        # (is this the live database?) and the swap all mean the database the driver connects to.
        user = params.get("user") or os.environ.get("PGUSER") or pwd.getpwuid(os.geteuid()).pw_name
        params["dbname"] = os.environ.get("PGDATABASE") or user
    timeout = params.get("connect_timeout")
    if timeout is not None and not re.fullmatch(r"\s*-?\d+\s*", timeout):  # ours would hide it from the driver
        raise ConfigError(f'{what}: invalid integer value "{timeout}" for connection option "connect_timeout"')
    if cfg.password_env:
        params["password"] = secrets.from_env(cfg.password_env, what)
    elif cfg.password_file:
        params["password"] = secrets.from_file(cfg.password_file, what)
    return Connection(params, cfg.connect_attempts, cfg.connect_timeout)


def _service_dbname(params: dict[str, str]) -> str:
    """The database libpq reaches with ``params`` naming (or PGSERVICE giving) a service: libpq
    reads the service file (PGSERVICEFILE, ~/.pg_service.conf, the system one) and its defaults
    as it starts a connection, which is abandoned at once (nothing is sent); '' when it cannot
    tell (a service not found: the connection names that later)."""
    from psycopg import pq
    from psycopg.conninfo import make_conninfo

    started = pq.PGconn.connect_start(make_conninfo("", **params).encode())
    try:
        return (started.db or b"").decode("utf-8", "replace")
    finally:
        started.finish()


def connect(conn: Connection, autocommit: bool = False) -> Any:
    """A psycopg connection. Transient failures (refused, timeout, name resolution, server
    starting) are retried with backoff, then UnreachableError (6) naming host, port and reason;
    bad options, a missing database or refused credentials are ConfigError (2) at once; a
    privilege the role lacks is PrivilegeError (1)."""
    import psycopg
    import tenacity

    log = logs.get()

    def transient(exc: BaseException) -> bool:
        return isinstance(exc, psycopg.OperationalError) and connection_failure_kind(str(exc)) == "transient"

    def before_sleep(state: tenacity.RetryCallState) -> None:
        log.warning(
            "postgres.connect_retry",
            database=conn.dbname,
            where=conn.where,
            attempt=f"{state.attempt_number}/{conn.attempts}",
            error=secrets.mask(failure_reason(exc) if state.outcome and (exc := state.outcome.exception()) else ""),
        )

    try:
        for attempt in tenacity.Retrying(
            stop=tenacity.stop_after_attempt(conn.attempts),
            wait=tenacity.wait_exponential(multiplier=0.5, max=8),
            retry=tenacity.retry_if_exception(transient),
            before_sleep=before_sleep,
            reraise=True,
        ):
            with attempt:
                return psycopg.connect(
                    conn.conninfo(), connect_timeout=conn.timeout, application_name="aura-ops", autocommit=autocommit
                )
    except psycopg.Error as exc:
        reason = secrets.mask(failure_reason(exc))
        kind = connection_failure_kind(str(exc))
        where = f"database {conn.dbname} at {conn.where}"
        if kind == "config":
            raise ConfigError(f"{where}: {reason}") from None
        if kind == "privilege":
            raise PrivilegeError(f"{where}: {with_privilege_hint(reason)}") from None
        raise UnreachableError(f"{where} unreachable after {conn.attempts} attempts: {reason}") from None
    raise AssertionError("unreachable")


def connection_failure_kind(message: str) -> str:
    """'config', 'privilege' or 'transient' for a connection failure's message."""
    text = message.lower()
    if any(marker in text for marker in PRIVILEGE_FAILURES):
        return "privilege"
    if any(marker in text for marker in CONFIG_FAILURES):
        return "config"
    return "transient"


_REASON_PREFIXES = re.compile(
    r"^(?:connection (?:failed|is bad): )?(?:connection to server (?:at|on) .*? failed: )?(?:(?:FATAL|ERROR):\s+)?"
)


def failure_reason(exc: BaseException) -> str:
    """The line of a driver error a user needs: the server's or libpq's own words, without the
    'connection failed: connection to server at ...' preamble (the caller names host and port)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return re.sub(r"\s+", " ", _REASON_PREFIXES.sub("", lines[0])) or lines[0]


def _connection_lost(exc: Any) -> bool:
    """The connection broke (the client's own error, a connection-class SQLSTATE, the server
    shutting down), as opposed to a statement the server refused."""
    import psycopg

    state = getattr(exc, "sqlstate", None)
    if state is None:
        return isinstance(exc, psycopg.OperationalError)
    return bool(state.startswith("08") or state in ("57P01", "57P02", "57P03"))


def with_privilege_hint(reason: str) -> str:
    text = reason.lower()
    for marker, hint in PRIVILEGE_HINTS:
        if marker in text:
            return f"{reason} ({hint})"
    return reason


class _Named(Protocol):
    name: str


N = TypeVar("N", bound=_Named)


def database_errors(function: Callable[Concatenate[N, P], R]) -> Callable[Concatenate[N, P], R]:
    """Turn a driver error escaping an operation on a component (a method, or a function whose
    first argument is the component) into a one-line AuraError naming the component: a missing
    privilege exit 1 naming it, a lost connection exit 6, any other exit 1."""

    @functools.wraps(function)
    def wrapper(owner: N, /, *args: P.args, **kwargs: P.kwargs) -> R:
        import psycopg

        try:
            return function(owner, *args, **kwargs)
        except psycopg.Error as exc:
            raise as_aura_error(owner.name, exc) from None

    return wrapper


def statement_error(name: str, exc: BaseException) -> AuraError:
    """A driver error a statement raised, as ``as_aura_error`` makes it (a missing privilege exit
    1, a lost connection exit 6, anything else exit 1), followed by the SQLSTATE the server gave;
    not retryable (as before the translation, a step's retries do not run it again)."""
    state = getattr(exc, "sqlstate", None)
    error = as_aura_error(name, exc, after=f"SQLSTATE {state}" if state else "")
    error.retryable = False  # a step's retries never run a refused statement again
    return error


def as_aura_error(name: str, exc: BaseException, doing: str = "", after: str = "") -> AuraError:
    """A driver error as the one-line AuraError a user reads: a missing privilege (exit 1) names
    it, a lost connection is exit 6, anything else exit 1. ``doing`` / ``after`` frame the reason."""
    import psycopg

    reason = secrets.mask(failure_reason(exc)) if isinstance(exc, psycopg.Error) else first_line(exc)
    head = f"{name}: {doing}{': ' if doing else ''}"
    tail = f"; {after}" if after else ""
    if isinstance(exc, psycopg.errors.InsufficientPrivilege) or connection_failure_kind(reason) == "privilege":
        return PrivilegeError(f"{head}{with_privilege_hint(reason)}{tail}")
    if isinstance(exc, psycopg.Error) and _connection_lost(exc):
        return UnreachableError(f"{head}lost the database connection: {reason}{tail}")
    return AuraError(f"{head}{reason}{tail}")


# ---------------------------------------------------------------- commands (pure)


def tool(cfg: PostgresConfig | None, program: str) -> str:
    if cfg is not None and cfg.bin_dir is not None:
        return str(cfg.bin_dir / program)
    return program


def make_pg_dump(cfg: PostgresConfig, conn: Connection, out_dir: Path, snapshot_id: str, jobs: int) -> Command:
    argv = (
        tool(cfg, "pg_dump"),
        "--format=directory",
        "--compress=0",
        f"--jobs={jobs}",
        f"--snapshot={snapshot_id}",
        "--no-sync",
        "--verbose",
        f"--file={out_dir}",
        f"--dbname={conn.dbname}",
    )
    return Command(argv, conn.env())


def make_pg_dumpall_globals(cfg: PostgresConfig, conn: Connection, out_file: Path, superuser: bool) -> Command:
    argv = [tool(cfg, "pg_dumpall"), "--globals-only", f"--file={out_file}", f"--database={conn.dbname}"]
    if not superuser:
        argv.append("--no-role-passwords")  # reading pg_authid needs superuser
    return Command(tuple(argv), conn.env())


def make_pg_restore(
    cfg: PostgresConfig | None, conn: Connection, dump_dir: str | Path, jobs: int, clean: bool = False
) -> Command:
    argv = [
        tool(cfg, "pg_restore"),
        "--format=directory",
        f"--jobs={jobs}",
        "--exit-on-error",
        f"--dbname={conn.dbname}",
    ]
    if clean:
        argv += ["--clean", "--if-exists"]
    return Command((*argv, str(dump_dir)), conn.env())


def tool_major(host: Host, program: str) -> tuple[int, str]:
    """(major version, full version line) of a PostgreSQL client program."""
    text = host.run(Command((program, "--version"))).text.strip()
    match = re.search(r"\) (\d+)(?:\.(\d+))?", text)
    if not match:
        raise ToolMissing(f"{program}: cannot read its version from {text!r}")
    return int(match.group(1)), text


def default_jobs(cfg: PostgresConfig, host: Host) -> int:
    """The configured jobs, else one per CPU of ``host`` (where pg_dump and pg_restore run)."""
    return cfg.jobs or host.cpu_count()


# ---------------------------------------------------------------- facts (row counts etc.)

# Ordinary tables (partitions included, each counted ONLY: a parent's count leaves its
# inheritance children to their own line), outside the catalogs and extensions; their columns.
TABLES_SQL = """
SELECT n.nspname, c.relname, c.relkind,
       ARRAY(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
       c.oid::bigint
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""
# How table checksums are computed, recorded in the manifest as ``checksum_method``. A manifest
# without it was made by the first method (``t::text`` in the session's own settings).
CHECKSUM_METHOD = "columns-by-name-v2"
# Settings that change how values are written as text, pinned in the session that counts and
# hashes, so that the backup's and a later verify's sessions agree whatever their defaults.
FACT_SETTINGS = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "lc_monetary": "C",
    "search_path": "",  # reg* values (regclass, regtype, ...) written schema-qualified
    "row_security": "off",  # as pg_dump: an error rather than a silently filtered count
}


@dataclass(frozen=True)
class _Table:
    """A table (or materialized view, ``kind`` 'm') whose facts a snapshot records."""

    oid: int
    key: str  # schema.name, as the manifest names it
    schema: str
    name: str
    kind: str
    columns: tuple[str, ...]


def _row_hash(columns: list[str], method: str) -> Any:
    """The expression hashing one row of ``t``: by default its columns in a fixed order (by
    name, so a child table created with another column order and attached to a parent later,
    or a table with dropped columns, hashes the same after pg_dump rebuilt it), NULL written
    apart from an empty string by the row's text form."""
    from psycopg import sql

    if method != CHECKSUM_METHOD:
        return sql.SQL("hashtextextended(t::text, 0)")
    ordered = sorted(columns, key=lambda column: column.encode())
    row = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(column)) for column in ordered)
    return sql.SQL("hashtextextended(ROW({})::text, 0)").format(row)


def catalog_facts(db: Any, method: str = CHECKSUM_METHOD) -> tuple[dict[str, Any], list[_Table]]:
    """What ``database_facts`` records that the catalogs give at once (sequence values, the
    number of large objects, the materialized views), and the tables whose rows it counts.
    Runs in ``db``'s current transaction, with the text settings pinned there (``method``
    other than the current one: as an old manifest did)."""
    if method == CHECKSUM_METHOD:
        for setting, value in FACT_SETTINGS.items():
            db.execute("SELECT set_config(%s, %s, true)", (setting, value))
    tables = [
        _Table(int(oid), f"{schema}.{name}", schema, name, kind, tuple(columns))
        for schema, name, kind, columns, oid in db.execute(TABLES_SQL).fetchall()
    ]
    sequences = {
        f"{s}.{n}": v
        for s, n, v in db.execute(
            "SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2"
        ).fetchall()
    }
    facts: dict[str, Any] = {
        "sequences": sequences,
        "large_objects": db.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0],
        "materialized_views": [table.key for table in tables if table.kind == "m"],
    }
    return facts, tables


def row_counts(
    db: Any, tables: list[_Table], counted: dict[int, int] | None = None, method: str = CHECKSUM_METHOD
) -> dict[str, int]:
    """Rows of each table (materialized views left out): ``counted`` (by table oid: rows the
    dump stream held, in the same snapshot), else ``count(*)`` in ``db``'s transaction."""
    from psycopg import sql

    only = sql.SQL("ONLY ") if method == CHECKSUM_METHOD else sql.SQL("")
    known = counted or {}
    counts: dict[str, int] = {}
    for table in tables:
        if table.kind == "m":
            continue
        rows = known.get(table.oid)
        if rows is None:
            ident = sql.Identifier(table.schema, table.name)
            rows = db.execute(sql.SQL("SELECT count(*) FROM {}{}").format(only, ident)).fetchone()[0]
        counts[table.key] = rows
    return counts


def database_facts(db: Any, with_checksums: bool, method: str = CHECKSUM_METHOD) -> dict[str, Any]:
    """Per-table row counts (and content checksums), sequence values, large objects, and the
    materialized views (never compared: pg_restore refreshes them, so their content is that of
    the restore, not of the backup). Runs in ``db``'s current transaction, with the text
    settings pinned there (``method`` other than the current one: as an old manifest did)."""
    from psycopg import sql

    facts, tables = catalog_facts(db, method)
    if not with_checksums:
        return {"row_counts": row_counts(db, tables, None, method), **facts}
    counts: dict[str, int] = {}
    sums: dict[str, str] = {}
    only = sql.SQL("ONLY ") if method == CHECKSUM_METHOD else sql.SQL("")
    for table in tables:
        if table.kind == "m":
            continue
        query = sql.SQL("SELECT count(*), coalesce(sum({}::numeric), 0)::text FROM {}{} t").format(
            _row_hash(list(table.columns), method), only, sql.Identifier(table.schema, table.name)
        )
        counts[table.key], sums[table.key] = db.execute(query).fetchone()
    facts = {"row_counts": counts, **facts}
    facts["table_checksums"] = sums
    facts["checksum_method"] = method
    facts["large_object_checksum"] = db.execute(
        "SELECT coalesce(sum(hashtextextended(oid::text || md5(lo_get(oid)), 0)::numeric),"
        " 0)::text FROM pg_largeobject_metadata"
    ).fetchone()[0]
    return facts


def server_facts(db: Any) -> dict[str, Any]:
    row = db.execute(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int,"
        " pg_database_size(current_database()), rolsuper, pg_encoding_to_char(encoding),"
        " datcollate, datctype, current_database()"
        " FROM pg_roles r, pg_database d"
        " WHERE r.rolname = current_user AND d.datname = current_database()"
    ).fetchone()
    return {
        "server_version": row[0],
        "server_major": row[1] // 10000,
        "database_size": row[2],
        "superuser": row[3],
        "encoding": row[4],
        "collate": row[5],
        "ctype": row[6],
        "database": row[7],
        **locale_facts(db),
    }


def locale_facts(db: Any) -> dict[str, Any]:
    """The current database's locale provider and its locale beyond LC_COLLATE/LC_CTYPE (an ICU
    database sorts by its ICU locale): ``locale_provider`` (``c`` libc, ``i`` icu, ``b`` builtin;
    None before PostgreSQL 15), ``icu_locale`` (``daticulocale``, ``datlocale`` since 17) and
    ``icu_rules`` (16+). Read from the row as JSON, whatever columns this server's catalog has."""
    row = db.execute("SELECT to_jsonb(d) FROM pg_database d WHERE d.datname = current_database()").fetchone()
    found = row[0] if row and isinstance(row[0], dict) else {}
    return {
        "locale_provider": found.get("datlocprovider"),
        "icu_locale": found.get("datlocale") or found.get("daticulocale"),
        "icu_rules": found.get("daticurules"),
    }


# ---------------------------------------------------------------- the manifest section


class PostgresManifest(ComponentManifest):
    """A postgres component's part of a snapshot's manifest, as ``snapshot`` writes it and
    verify and restore read it. Only ``database`` is required (the repository checks it); the
    rest may be absent from a manifest written before it existed, and is then None (not
    recorded, not compared). Artifacts: ``dump/toc.dat``, ``dump/<N>.dat.zst`` (each with its
    ``raw_size``), ``dump/blobs.toc`` and ``globals.sql`` when there are any."""

    database: str
    where: str | None = None  # host:port as the DSN gives it
    server_version: str | None = None
    server_major: int | None = None
    database_size: int | None = None
    encoding: str | None = None
    collate: str | None = None
    ctype: str | None = None
    locale_provider: str | None = None  # c (libc), i (icu), b (builtin); None: not recorded (before 15)
    icu_locale: str | None = None  # the provider's own locale (an ICU or builtin database)
    icu_rules: str | None = None
    database_properties: dict[str, Any] | None = None  # pgdatabase.read_properties
    # facts counted in the dump's own snapshot (database_facts)
    row_counts: dict[str, int] | None = None
    table_checksums: dict[str, str] | None = None
    checksum_method: str | None = None  # absent: the first method ("text")
    sequences: dict[str, int | None] | None = None
    large_objects: int | None = None
    large_object_checksum: str | None = None
    materialized_views: list[str] | None = None
    # how it was dumped
    pg_dump_version: str | None = None
    jobs: int | None = None
    compression: str | None = None
    uncompressed_bytes: int | None = None
    globals: str | None = None  # the globals script's artifact name, None when not dumped
    seconds: float | None = None  # set by the backup workflow


# ---------------------------------------------------------------- compression

DATA_FILE = re.compile(r"^(\d+|blob_\d+)\.dat$")
FOLLOWERS = 4  # data files compressed at once by default (_Compressor; a backup: its jobs + 2)
WATCH_PASS = 0.02  # seconds between two listings of the dump folder while pg_dump runs
COPY_END = b"\\.\n\n\n"  # what pg_dump writes after the rows of a table's COPY
_TAIL = len(COPY_END) + 1  # the end of a data file that tells whether its rows can be counted


def _copy_rows(lines: int, tail: bytes) -> int | None:
    """The rows of a table's data file holding ``lines`` newlines and ending with ``tail``
    (its last ``_TAIL`` bytes): whole lines, then ``COPY_END``; None for any other end."""
    if tail.endswith(COPY_END) and (tail == COPY_END or tail.startswith(b"\n")):
        return lines - COPY_END.count(b"\n")
    return None


class _Compressor:
    """Compresses dump data files with zstd while pg_dump is still writing them.

    A watcher finds each new ``N.dat``; a follower thread compresses it as it grows (reading
    from the page cache what pg_dump just wrote) and finishes once pg_dump reports the item
    finished (or exits). The output is hashed as it is written; the plain file is then removed.
    ``folder`` is the dump folder of the snapshot being written, on ``store`` (the control
    machine, where the repository is): every file of it is read and written through ``store``.
    With ``count_rows``, each table's rows are counted in the stream (``rows``, see ``_follow``).
    At most ``followers`` files are followed at once (the others wait on the store, plain, for a
    free follower): each holds a zstd context and a read buffer, and one thread per file found
    let a 600-table backup's peak RSS go from 58 MB to 98 MB whenever the watcher found many
    finished files at once. The caller gives pg_dump's jobs plus 2: every file pg_dump is
    writing can be followed, and finished ones still get a follower.
    """

    def __init__(
        self, store: Host, folder: str, level: int, count_rows: bool = False, followers: int = FOLLOWERS
    ) -> None:
        self.store = store
        self.folder = folder
        self.level = level
        self.count_rows = count_rows
        self.finished: set[str] = set()
        self.exited = threading.Event()
        self.abort = threading.Event()
        self.results: dict[str, dict[str, Any]] = {}
        self.rows: dict[str, int | None] = {}  # data file -> the COPY rows it held, None: not a COPY stream
        self.errors: list[BaseException] = []
        self.followers: dict[str, threading.Thread] = {}
        self.wakers: dict[str, threading.Event] = {}  # set when a file's writer is done with it
        self.toc_written = threading.Event()  # pg_dump writes the whole toc.dat before any data file
        self.on_failure: Callable[[], None] | None = None
        self.lock = threading.Lock()
        self.slots = threading.Semaphore(max(1, followers))
        self.freed = threading.Event()  # set when a follower ends (a slot is free again)
        self.pending: dict[str, None] = {}  # data files found, waiting for a slot (in the order found)
        self.watcher = threading.Thread(target=self._watch, daemon=True)
        self.watcher.start()

    def _waker(self, name: str) -> threading.Event:
        with self.lock:
            event = self.wakers.get(name)
            if event is None:
                event = self.wakers[name] = threading.Event()
            return event

    def item_finished(self, dump_id: str) -> None:
        name = f"{dump_id}.dat"
        with self.lock:
            self.finished.add(name)
        self._waker(name).set()  # its follower, waiting at the end of the file, finishes now

    def _watch(self) -> None:
        final = False  # the folder was listed after pg_dump exited: no file is left to find
        listed = 0.0
        while not self.abort.is_set():
            if not final and (self.exited.is_set() or time.monotonic() - listed >= WATCH_PASS):
                final = self.exited.is_set()
                self._discover()
                listed = time.monotonic()
            self.freed.clear()  # before a slot is asked for: a follower ending from here on wakes the wait
            self._start_pending()
            if final and not self.pending:
                return
            # a freed slot starts the next file at once; the folder is listed again at most every pass
            (self.freed if self.pending else self.exited).wait(WATCH_PASS)

    def _discover(self) -> None:
        try:
            names = [name for name in self.store.listdir(self.folder) if DATA_FILE.match(name)]
        except FileNotFoundError:  # pg_dump has not created the folder yet
            return
        if names:
            self.toc_written.set()
        for name in names:
            if name not in self.followers:
                self.pending.setdefault(name)

    def _start_pending(self) -> None:
        """A follower for each file found, in the order found, while a slot is free."""
        while self.pending and self.slots.acquire(blocking=False):
            name = next(iter(self.pending))
            del self.pending[name]
            thread = threading.Thread(target=self._follow_in_slot, args=(name,), daemon=True)
            self.followers[name] = thread
            try:
                thread.start()
            except BaseException:
                self.slots.release()
                raise

    def _follow_in_slot(self, name: str) -> None:
        try:
            self._follow(name)
        finally:
            self.slots.release()
            self.freed.set()

    def _done_writing(self, name: str) -> bool:
        with self.lock:
            return name in self.finished or self.exited.is_set()

    def _follow(self, name: str) -> None:
        """Compress ``name`` as it grows. Counting rows: a table's data file holds its COPY text
        rows, one line each (a newline in a value is written as ``\\n``), then ``\\.`` and two
        empty lines; a file that does not end so is not counted (None)."""
        import zstandard

        source = f"{self.folder}/{name}"
        target = source + COMPRESSED
        waker = self._waker(name)
        counting = self.count_rows and name[0].isdigit()  # not a large object's blob_N.dat
        lines, tail = 0, b""
        try:
            with self.store.open_read(source) as reader, self.store.open_write(target) as raw:
                writer = checksum.HashingWriter(raw)
                compressor = zstandard.ZstdCompressor(level=self.level, write_checksum=True)
                stream = compressor.stream_writer(cast(IO[bytes], writer), closefd=False)
                read = 0
                while not self.abort.is_set():
                    done = self._done_writing(name)  # checked before reading: no bytes missed
                    chunk = reader.read(checksum.CHUNK)
                    if chunk:
                        stream.write(chunk)
                        read += len(chunk)
                        if counting:
                            lines += chunk.count(b"\n")
                            tail = (tail + chunk[-_TAIL:])[-_TAIL:]
                    elif done:
                        break
                    else:
                        waker.wait(0.01)  # pg_dump writes on: read again soon, at once when it is done
                stream.close()  # type: ignore[no-untyped-call]
            self.store.remove(source)
            with self.lock:
                self.results[name + COMPRESSED] = {"size": writer.size, "hash": writer.hexdigest(), "raw_size": read}
                if counting:
                    self.rows[name] = _copy_rows(lines, tail)
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            with self.lock:
                self.errors.append(exc)
            callback = self.on_failure
            if callback is not None:
                callback()  # stop pg_dump now, not after it dumped everything else

    def finish(self, succeeded: bool) -> dict[str, dict[str, Any]]:
        """After pg_dump exited: compress what is left, wait, return artifacts by file name."""
        if not succeeded:
            self.abort.set()
        self.exited.set()
        self.toc_written.set()  # or never will be: its readers go on
        with self.lock:
            waiting = list(self.wakers.values())
        for event in waiting:
            event.set()
        self.watcher.join()
        for thread in list(self.followers.values()):
            thread.join()
        if self.errors:
            error = self.errors[0]
            if isinstance(error, OSError) and error.errno == errno.ENOSPC:
                raise error  # the backup names the full device
            raise AuraError(f"compressing the dump in {self.folder}: {first_line(error)}") from error
        return dict(self.results)


@contextlib.contextmanager
def _bounded(name: str, db: Any, timeout: float | None) -> Iterator[None]:
    """The statements run in the block end within ``timeout`` seconds (None: no bound): the server
    cancels each one at it (``statement_timeout``, lock waits included), and all of them together
    are cancelled at it too (the server times each statement of a script alone: three naps of
    1.5 s ran under a timeout of 2 and were committed). A cancel at the bound is AuraError; the
    block raises before anything could be committed. Ended before any commit that follows."""
    import psycopg

    if timeout is None:
        yield
        return
    fired = threading.Event()

    def stop() -> None:
        fired.set()
        (getattr(db, "cancel_safe", None) or db.cancel)()  # (cancel_safe: psycopg 3.2 and later)

    db.execute("SELECT set_config('statement_timeout', %s, false)", (f"{max(1, round(timeout * 1000))}",))
    timer = threading.Timer(timeout, stop)
    timer.daemon = True
    timer.start()
    try:
        yield
    except psycopg.errors.QueryCanceled as exc:
        if not fired.is_set():  # (the server's statement_timeout: its own words)
            raise
        raise AuraError(
            f"{name}: canceling statement due to statement timeout (the timeout of {timeout:g}s, its "
            f"statements together); nothing was committed; SQLSTATE {exc.sqlstate}"
        ) from None
    finally:
        timer.cancel()
        timer.join()  # a cancel under way has reached the server before anything that follows


def _file_digest(store: Host, path: str, algorithm: str = checksum.ALGORITHM) -> tuple[str, int]:
    """(hexdigest, size) of the file ``path`` on ``store``, read through it."""
    hasher = checksum.new(algorithm)
    size = 0
    with store.open_read(path) as source:
        while chunk := source.read(checksum.CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return hasher.hexdigest(), size


def _hash_plain(store: Host, path: str) -> dict[str, Any]:
    """Size and hash of a file a tool wrote into the snapshot, made 0600 first (pg_dump and
    pg_dumpall write with the user's umask; the repository's files are owner-only)."""
    store.chmod(path, 0o600)
    digest, size = _file_digest(store, path)
    return {"size": size, "hash": digest}


# ---------------------------------------------------------------- snapshot (helpers)


@contextlib.contextmanager
def _cancel_if_failed(process: Process, db: Any) -> Iterator[threading.Event]:
    """While the block runs, cancel ``db``'s query as soon as ``process`` fails: the row counts
    and checksums of a big database are not worth waiting for once pg_dump is dead. The event
    is set when that happened (the tool's failure is then the reason to report)."""
    died = threading.Event()
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.2):
            returncode = process.poll()
            if returncode is not None:
                if returncode != 0:
                    died.set()
                    with contextlib.suppress(Exception):
                        db.cancel_safe()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield died
    finally:
        done.set()
        watcher.join()


def _facts_while_dumping(
    process: Process, db: Any, checksums: bool, facts_of: Callable[[Any], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """``database_facts`` of ``db`` (or ``facts_of(db)``) while pg_dump (``process``) runs; {}
    when pg_dump failed first (the query was cancelled for it: its failure, found by the caller's
    wait, is the reason to report). Any other exception stops pg_dump and goes on, an
    interruption always: stopping pg_dump here makes it fail too, which must not pass for the
    cause (a SIGTERM would be reported as pg_dump's failure, and a step that may fail would let
    the run go on)."""
    with _cancel_if_failed(process, db) as died:
        try:
            return database_facts(db, checksums) if facts_of is None else facts_of(db)
        except BaseException as exc:
            dump_failed_first = died.is_set() and not isinstance(exc, KeyboardInterrupt)
            process.terminate(STOP_GRACE)
            if not dump_failed_first:
                raise
    return {}


def _repeatable_read() -> Any:
    from psycopg import IsolationLevel

    return IsolationLevel.REPEATABLE_READ


def _on_pg_dump_line(line: str, compressor: _Compressor) -> None:
    match = FINISHED_ITEM.search(line)
    if match:
        compressor.item_finished(match.group(1))


def _facts_of_snapshot(db: Any, checksums: bool) -> dict[str, Any]:
    """What a backup records of the database, read in the dumped snapshot while pg_dump runs:
    ``server_facts``, its properties, and ``database_facts`` with ``checksums``; without them,
    ``catalog_facts`` and the tables to count (under ``tables``, taken out by the caller: their
    rows are counted in the dump stream)."""
    from aura_ops.components.postgres import database as pgdatabase

    facts = server_facts(db)
    facts["database_properties"] = pgdatabase.read_properties(db, facts["database"])
    if checksums:
        return {**facts, **database_facts(db, True)}
    found, tables = catalog_facts(db)
    return {**facts, **found, "tables": tables}


def _in_background(function: Callable[[], R]) -> concurrent.futures.Future[R]:
    """``function()`` in a thread of its own, with this thread's log context; its result (or
    exception) in the future returned."""
    future: concurrent.futures.Future[R] = concurrent.futures.Future()
    context = contextvars.copy_context()

    def run() -> None:
        try:
            future.set_result(context.run(function))
        except BaseException as exc:  # noqa: BLE001 - the caller's result() raises it
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return future


TOC_TABLE_DATA = re.compile(r"^(\d+); 0 (\d+) TABLE DATA ")


def _data_files_by_table(host: Host, cfg: PostgresConfig, dump_dir: Path) -> dict[int, str]:
    """The data file of each table (by oid) a dump's table of contents lists (``pg_restore
    --list``: a TABLE DATA entry carries the table's oid); {} when it cannot be listed."""
    try:
        listing = host.run(Command((tool(cfg, "pg_restore"), "--list", str(dump_dir))), check=False)
    except ToolMissing as exc:  # the backup itself needs only pg_dump (and pg_dumpall)
        logs.get().warning("postgres.toc_unlisted", reason=str(exc))
        return {}
    if listing.returncode != 0:
        lines = [line.strip() for line in listing.stderr.splitlines() if line.strip()]
        logs.get().warning("postgres.toc_unlisted", reason=lines[0] if lines else f"exit {listing.returncode}")
        return {}
    files: dict[int, str] = {}
    for line in listing.text.splitlines():
        match = TOC_TABLE_DATA.match(line)
        if match:
            files[int(match.group(2))] = f"{match.group(1)}.dat"
    return files


def _toc_when_written(compressor: _Compressor, host: Host, cfg: PostgresConfig, dump_dir: Path) -> dict[int, str]:
    """``_data_files_by_table`` once pg_dump has written its table of contents; {} when the
    dump stopped first."""
    compressor.toc_written.wait()
    if compressor.abort.is_set():
        return {}
    return _data_files_by_table(host, cfg, dump_dir)


def _stream_counts(files: dict[int, str], rows: dict[str, int | None]) -> dict[int, int]:
    """Rows by table oid, as counted in the dump stream (``_Compressor.rows``) of each table's
    data file (``files``); a table whose file was not counted is left out."""
    counted: dict[int, int] = {}
    for oid, file in files.items():
        found = rows.get(file)
        if found is not None:
            counted[oid] = found
    return counted


# ---------------------------------------------------------------- restore (streaming)


class _Feeder:
    """Feeds each named pipe of a staging folder with its decompressed file once a reader
    opens it, checking every compressed stream against its recorded hash as it goes.

    No polling while pg_restore runs as expected: a thread waits in a blocking open of each
    pipe's write end (``Host.open_fifo_writer_waiting``), for at most ``window`` pipes at once,
    taken in the order of ``pipes`` (the order pg_restore is expected to open them in:
    ``_expected_order``); a pipe whose writer opened makes room for the next. Should pg_restore
    open a pipe past the window (another order), the coordinator finds it by a non-blocking open
    of the pipes past the window, only after nothing opened for a while (50 ms, doubling to 1 s
    while nothing is found): a wrong order costs speed, never a hang. At most ``workers`` feeds
    run at once, each with bounded buffers (the decompressed data is written in chunks of
    ``checksum.CHUNK``, whatever the compression ratio). ``finish`` releases the pipes no
    reader opened (it opens their read end itself) and joins every thread.

    A source-side problem (missing, unreadable, corrupt or changed file) is recorded in
    ``errors`` and ``on_failure`` (which stops pg_restore) is called *before* that pipe is
    closed, so pg_restore never sees a clean end of a bad file. ``finish`` joins every feed:
    only after it are ``errors`` complete.
    """

    WINDOW = 256  # threads waiting in open at once (about 16 KB of memory each)
    STALL = (0.05, 1.0)  # seconds without an open before the pipes past the window are looked at

    def __init__(
        self,
        pipes: dict[str, tuple[str, str, str]],
        workers: int,
        algorithm: str,
        open_writer: Callable[[str], IO[bytes]],
        release: Callable[[str], IO[bytes]],
        open_reader: Callable[[str], IO[bytes]],
        poll: Callable[[str], IO[bytes] | None],
        window: int | None = None,
    ) -> None:
        self.pipes = dict(pipes)  # pipe -> (source, artifact name, expected hash)
        self.open_writer = open_writer  # Host.open_fifo_writer_waiting of the host pg_restore runs on
        self.release = release  # Host.open_fifo_reader of that host: ends a writer's wait
        self.poll = poll  # Host.open_fifo_writer of that host: never waits
        self.open_reader = open_reader  # Host.open_read of the store the snapshot is on
        self.algorithm = algorithm
        self.window = window or self.WINDOW
        self.slots = threading.Semaphore(workers)
        self.unassigned = list(self.pipes)  # pipes no thread has yet, in the order expected
        self.waiting: set[str] = set()  # pipes whose thread waits for a reader
        self.opened = 0  # pipes whose write end opened
        self.threads: list[threading.Thread] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.progress = threading.Condition(self.lock)
        self.errors: list[str] = []  # the snapshot's fault: the restore must not be trusted
        self.broken: list[str] = []  # pg_restore went away while being fed
        self.failed: list[str] = []  # the feeder's own failure (no thread for a pipe): not the snapshot's
        self.on_failure: Callable[[], None] | None = None
        self.coordinator = threading.Thread(target=self._coordinate, daemon=True)

    def _coordinate(self) -> None:
        try:
            self._assign()
        except BaseException as exc:  # noqa: BLE001 - a pipe left without its thread would hang pg_restore
            with self.lock:
                self.failed.append(f"cannot feed pg_restore: {first_line(exc)}")
            callback = self.on_failure
            if callback is not None:
                callback()
            self.stop.set()

    def _assign(self) -> None:
        stall = self.STALL[0]
        while True:
            with self.progress:
                if self.stop.is_set():
                    return
                while self.unassigned and len(self.waiting) < self.window:
                    self._start(self._serve, self.unassigned.pop(0))
                if not self.unassigned:
                    return  # every pipe has its thread: nothing left to look for
                seen = self.opened
                self.progress.wait(stall)
                if self.stop.is_set():
                    return
                if self.opened != seen:
                    stall = self.STALL[0]
                    continue
                beyond = list(self.unassigned)
            found = self._look_beyond(beyond)
            stall = self.STALL[0] if found else min(stall * 2, self.STALL[1])

    def _look_beyond(self, pipes: list[str]) -> bool:
        """Feed any pipe past the window that a reader opened; whether one was."""
        found = False
        for pipe in pipes:
            try:
                out = self.poll(pipe)
            except OSError as exc:
                with self.lock:
                    self.unassigned.remove(pipe)
                self._fail(f"{self.pipes[pipe][1]}: cannot open its pipe: {exc.strerror}")
                return True
            if out is not None:
                with self.lock:
                    self.unassigned.remove(pipe)
                    self.opened += 1
                    try:
                        self._start(self._serve_opened, pipe, out)
                    except BaseException:
                        out.close()
                        raise
                found = True
        return found

    def _start(self, target: Callable[..., None], *args: Any) -> None:
        """A thread for a pipe (``self.lock`` held)."""
        if target == self._serve:
            self.waiting.add(args[0])
        if len(self.threads) > 4 * self.window:  # a thread a pipe, but not kept once it ended
            self.threads = [thread for thread in self.threads if thread.is_alive()]
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)  # (once started: finish() joins it)

    def _serve(self, pipe: str) -> None:
        """Wait for a reader of ``pipe``, then feed it (unless the restore is ending)."""
        try:
            out = self.open_writer(pipe)
        except OSError as exc:
            with self.progress:
                self.waiting.discard(pipe)
                self.progress.notify_all()
            self._fail(f"{self.pipes[pipe][1]}: cannot open its pipe: {exc.strerror}")
            return
        with self.progress:
            self.waiting.discard(pipe)
            self.opened += 1
            self.progress.notify_all()
        self._serve_opened(pipe, out)

    def _serve_opened(self, pipe: str, out: IO[bytes]) -> None:
        if self.stop.is_set():  # finish() opened it to end the wait, or the restore is being stopped
            with contextlib.suppress(OSError):
                out.close()
            return
        with self.slots:
            self._feed(out, *self.pipes[pipe])

    def _fail(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)
        callback = self.on_failure
        if callback is not None:
            callback()  # pg_restore first: the other feeds must not end their files cleanly before
        self.stop.set()

    def _feed(self, out: IO[bytes], source: str, artifact: str, expected: str) -> None:
        """Owns the pipe's write end ``out``: closed whatever happens."""
        try:
            problem = self._copy(source, out, expected)
            if problem:
                self._fail(f"{artifact}: {problem}")  # pg_restore is stopped before the pipe closes
        except BrokenPipeError:
            with self.lock:
                self.broken.append(f"pg_restore stopped reading {artifact}")
        except BaseException as exc:  # noqa: BLE001 - a feed must never end silently
            self._fail(f"{artifact}: {first_line(exc)}")
        finally:
            with contextlib.suppress(OSError):
                out.close()

    def _copy(self, source: str, out: IO[bytes], expected: str) -> str | None:
        """Decompress ``source`` (an artifact in the repository, read through the store) into
        ``out`` in bounded chunks while hashing it; the problem found, else None."""
        import zstandard

        try:
            raw = self.open_reader(source)
        except FileNotFoundError:
            return "is missing"
        except OSError as exc:
            return f"cannot be read: {exc.strerror}"
        compressed = _HashedFrame(raw, checksum.new(self.algorithm), self.stop)
        corrupt: str | None = None
        with raw:
            try:
                reader = zstandard.ZstdDecompressor().stream_reader(
                    cast(IO[bytes], compressed), read_size=checksum.CHUNK, closefd=False
                )
                with reader:
                    while data := reader.read(checksum.CHUNK):
                        out.write(data)
            except zstandard.ZstdError as exc:
                corrupt = str(exc)
            if self.stop.is_set():
                return None  # the restore is being stopped for another reason
            compressed.drain()  # the verdict is the whole file's hash
        if compressed.hexdigest() != expected:
            return "checksum mismatch"
        if corrupt is not None or not compressed.frame.ended:
            return f"cannot be decompressed: {corrupt or 'truncated'}"
        if compressed.beyond:  # a backup writes one frame and nothing after it: only a part was fed
            return "cannot be decompressed: data after the end of its frame"
        out.flush()
        return None

    def finish(self) -> None:
        """Release every pipe no reader opened, wait for every feed to end."""
        with self.progress:
            self.stop.set()
            self.progress.notify_all()
        if self.coordinator.is_alive():
            self.coordinator.join()
        with self.lock:  # no thread starts now; a pipe only leaves ``waiting``
            waiting = sorted(self.waiting)
            threads = list(self.threads)
        held: list[IO[bytes]] = []
        try:
            for pipe in waiting:  # held open until its writer is gone: a late open does not wait
                with contextlib.suppress(OSError):
                    held.append(self.release(pipe))
            for thread in threads:
                thread.join()
        finally:
            for reader in held:
                with contextlib.suppress(OSError):
                    reader.close()

    def __enter__(self) -> _Feeder:
        self.coordinator.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()


def _expected_order(pipes: list[str], listing: str | None, serial: bool) -> list[str]:
    """``pipes`` in the order pg_restore is expected to open them. A serial restore follows its
    table of contents (``listing``, as ``pg_restore --list`` writes it); pg_restore -j takes the
    ready data items largest first (it sizes each by a stat of its file: the small files written
    out whole come first, then the pipes), and a named pipe's size is 0, so by dump id; it sizes the
    BLOBS entry as 1024 times its blobs.toc, so that one first. Large objects are read in oid
    order by whoever restores the BLOBS entry: they go where it is. Without a listing: by dump
    id, large objects last."""
    position: dict[str, int] = {}
    for line in (listing or "").splitlines():
        match = TOC_DATA_ENTRY.match(line)
        if match:
            position["blob" if match.group(2) == "BLOBS" else match.group(1)] = int(match.group(1))
    rank = {key: index for index, key in enumerate(position)} if serial else position
    if not serial and "blob" in rank:  # pg_restore -j sizes the BLOBS entry as blobs.toc x 1024: it goes first
        rank["blob"] = -1

    def key(pipe: str) -> tuple[int, int, str]:
        name = pipe.rsplit("/", 1)[-1].removesuffix(".dat")
        number = name.removeprefix("blob_")
        if not number.isdigit():
            return (1 << 62, 0, name)
        if name.startswith("blob_"):
            return (rank.get("blob", 1 << 61), int(number), name)
        return (rank.get(number, int(number) if not serial else 1 << 60), int(number), name)

    return sorted(pipes, key=key)


class _HashedFrame:
    """A compressed artifact as the decompressor reads it: every byte read is hashed, and only
    the bytes of its first zstd frame are passed on (``frame`` follows its layout, so a frame
    cut short is told from a whole one: the decompressor itself ends quietly at a truncation).
    ``drain`` hashes the rest of the file. ``stop`` set: reads end early."""

    def __init__(self, raw: IO[bytes], hasher: Any, stop: threading.Event) -> None:
        self.raw, self.hasher, self.stop = raw, hasher, stop
        self.frame = _ZstdFrame()
        self.beyond = 0  # bytes read past the end of the frame

    def read(self, size: int = -1) -> bytes:
        if self.frame.ended or self.stop.is_set():
            return b""
        chunk = self.raw.read(size if size > 0 else checksum.CHUNK)
        self.hasher.update(chunk)
        used = self.frame.feed(chunk)
        self.beyond += len(chunk) - used
        return chunk if used == len(chunk) else chunk[:used]

    def drain(self) -> None:
        while chunk := self.raw.read(checksum.CHUNK):
            self.hasher.update(chunk)
            self.beyond += len(chunk)

    def hexdigest(self) -> str:
        return str(self.hasher.hexdigest())


class _ZstdFrame:
    """Follows one zstd frame's layout (RFC 8878: frame header, block headers, optional content
    checksum) through its bytes as they are read. ``feed`` returns how many bytes of a chunk
    belong to the frame; ``ended`` says whether its end has been seen. Bytes that are no zstd
    frame all belong to it and never end it (the decompressor rejects them)."""

    MAGIC = b"\x28\xb5\x2f\xfd"
    ENDLESS = 1 << 62

    def __init__(self) -> None:
        self.head = bytearray()
        self.need = 5  # magic and frame header descriptor
        self.state = "frame"
        self.skip = 0  # bytes of a block's content (and the checksum after the last) to pass
        self.last = False
        self.checksum = 0
        self.ended = False

    def feed(self, chunk: bytes) -> int:
        at, size = 0, len(chunk)
        while at < size and not self.ended:
            if self.skip:
                step = min(self.skip, size - at)
                at += step
                self.skip -= step
                self.ended = self.last and not self.skip
                continue
            take = min(self.need - len(self.head), size - at)
            self.head += chunk[at : at + take]
            at += take
            if len(self.head) == self.need:
                self._parse(bytes(self.head))
                self.head.clear()
        return at

    def _parse(self, head: bytes) -> None:
        if self.state == "frame":
            if head[:4] != self.MAGIC:
                self.skip = self.ENDLESS
                return
            descriptor = head[4]
            single = descriptor >> 5 & 1
            self.checksum = 4 if descriptor & 4 else 0
            window = 0 if single else 1
            dictionary = (0, 1, 2, 4)[descriptor & 3]
            content_size = (single, 2, 4, 8)[descriptor >> 6]
            self.state, self.need = "header", window + dictionary + content_size
        elif self.state == "header":
            self.state, self.need = "block", 3
        else:
            value = int.from_bytes(head, "little")
            kind, length = value >> 1 & 3, value >> 3
            if kind == 3:  # reserved: no frame
                self.skip = self.ENDLESS
                return
            self.last = bool(value & 1)
            self.skip = (1 if kind == 1 else length) + (self.checksum if self.last else 0)
            self.ended = self.last and not self.skip


class _Ready(contextlib.AbstractContextManager["tuple[str, _Feeder]"]):
    """A staging folder being made by ``thread`` (``_staging_in_background``): entered, waits
    for it and gives it (or raises what made it fail); left, or ``close``, lets the thread
    remove it and forgets its record once it is gone."""

    def __init__(
        self,
        ready: concurrent.futures.Future[tuple[str, _Feeder]],
        done: threading.Event,
        thread: threading.Thread,
        ended: list[BaseException],
        temporary: temporaries.Temporary,
    ) -> None:
        self.ready, self.done, self.thread, self.ended, self.temporary = ready, done, thread, ended, temporary
        self.closed = False

    def __enter__(self) -> tuple[str, _Feeder]:
        return self.ready.result()

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is None:
            self.close()
            return
        with contextlib.suppress(Exception):  # the restore's own failure is the one to report
            self.close()

    def close(self) -> None:
        """Remove the folder (once it is made): what the removal raised, else the record is
        forgotten (the caller's ``temporaries.track`` retries a failed one)."""
        if self.closed:
            return
        self.closed = True
        self.done.set()
        self.thread.join()
        if self.ended:
            raise self.ended[0]
        if self.ready.exception() is None:  # else its record's handler makes sure (the caller's track)
            self.temporary.release()


def _dump_artifacts(name: str, recorded: PostgresManifest) -> dict[str, Artifact]:
    """The dump's artifacts by file name; VerificationError when the table of contents is not
    among them (nothing could be checked)."""
    found = {a.split("/", 1)[1]: info for a, info in recorded.artifacts.items() if a.startswith(DUMP + "/")}
    if "toc.dat" not in found:
        raise VerificationError(f"{name}: {DUMP}/toc.dat is not in the manifest")
    return found


def check_inputs(
    store: Host,
    snapshot: Snapshot,
    name: str,
    recorded: PostgresManifest,
    full: bool = False,
    with_globals: bool = False,
) -> None:
    """Before a restore touches anything: every dump artifact the manifest lists is present with
    its recorded size, the table of contents (and the globals script) hash as recorded; with
    ``full``, every artifact is hashed (the clean mode's pre-pass). VerificationError naming the
    artifact otherwise. The snapshot's files are read through ``store``."""
    folder = snapshot.component_dir(name)
    algorithm = snapshot.manifest.get("checksum_algorithm", checksum.ALGORITHM)
    wanted: dict[str, Artifact | None] = {
        f"{DUMP}/{file}": info for file, info in _dump_artifacts(name, recorded).items()
    }
    if with_globals and recorded.globals:
        wanted[recorded.globals] = recorded.artifacts.get(recorded.globals)
    for artifact, info in wanted.items():
        if info is None:
            raise VerificationError(f"{name}: {artifact} is not in the manifest")
        path = f"{folder}/{artifact}"
        found = store.stat(path)
        if found is None:
            raise VerificationError(f"{name}: {artifact} is missing")
        size = found.size
        if size != info.size:
            raise VerificationError(f"{name}: {artifact}: checksum mismatch ({size} bytes, recorded {info.size})")
        hashed = full or not artifact.endswith(COMPRESSED)
        if hashed and _file_digest(store, path, algorithm)[0] != info.sha256:
            raise VerificationError(f"{name}: {artifact}: checksum mismatch")


def verified_artifact(store: Host, snapshot: Snapshot, name: str, recorded: PostgresManifest, artifact: str) -> bytes:
    """A small artifact's content (the globals script), read once through ``store`` and checked
    against the manifest before anyone uses it; VerificationError naming it otherwise."""
    info = recorded.artifacts.get(artifact)
    if info is None:
        raise VerificationError(f"{name}: {artifact} is not in the manifest")
    try:
        data = store.read_bytes(f"{snapshot.component_dir(name)}/{artifact}")
    except FileNotFoundError:
        raise VerificationError(f"{name}: {artifact} is missing") from None
    hasher = checksum.new(snapshot.manifest.get("checksum_algorithm", checksum.ALGORITHM))
    hasher.update(data)
    if hasher.hexdigest() != info.sha256:
        raise VerificationError(f"{name}: {artifact}: checksum mismatch")
    return data


def _read_small(store: Host, source: str, size: int) -> bytes:
    """At most ``size`` + 1 bytes of ``source`` on ``store``: a file that grew after it was
    checked is never read whole into memory, and one replaced by a FIFO never waits for a
    writer (``Host.open_read`` refuses anything but a regular file)."""
    with store.open_read(source) as stream:
        return stream.read(size + 1)


def _read_verified(store: Host, source: str, expected: str, algorithm: str, size: int) -> bytes | str:
    """The content of a small dump file (the table of contents) of ``size`` bytes on ``store``,
    or the problem found: "is missing", "cannot be read: ..." or "checksum mismatch"."""
    try:
        data = _read_small(store, source, size)
    except FileNotFoundError:
        return "is missing"
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    if len(data) != size:
        return "checksum mismatch"
    hasher = checksum.new(algorithm)
    hasher.update(data)
    return data if hasher.hexdigest() == expected else "checksum mismatch"


def _materialize(
    store: Host,
    source: str,
    host: Host,
    target: str,
    expected: str,
    algorithm: str,
    cap: int,
    decompressor: Any = None,
    size: int | None = None,
) -> int | str:
    """Write the small compressed artifact ``source`` (on ``store``) decompressed into the new
    regular file ``target`` on ``host``, once its bytes hash as ``expected`` and hold exactly
    one whole zstd frame (nothing unchecked is ever written there). Returns the bytes written;
    -1 when it decompresses to more than ``cap`` (nothing is left at ``target``: the caller
    feeds it through a pipe instead); or the problem found (as ``_Feeder`` words it).
    ``decompressor``: a ``zstandard.ZstdDecompressor`` to reuse (one call at a time); ``size``:
    the recorded size (else ``SMALL_COMPRESSED``), never more read (``_read_small``)."""
    import zstandard

    limit = SMALL_COMPRESSED if size is None else size
    try:
        data = _read_small(store, source, limit)
    except FileNotFoundError:
        return "is missing"
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    if len(data) > limit or (size is not None and len(data) != size):
        return "checksum mismatch"  # not the file recorded (and not read past its recorded size)
    hasher = checksum.new(algorithm)
    hasher.update(data)
    if hasher.hexdigest() != expected:
        return "checksum mismatch"
    frame = _ZstdFrame()
    used = frame.feed(data)
    if not frame.ended:
        return "cannot be decompressed: truncated"
    if used != len(data):
        return "cannot be decompressed: data after the end of its frame"
    written = 0
    try:
        decompressor = decompressor or zstandard.ZstdDecompressor()
        with host.open_write(target, mode=0o600) as out, decompressor.stream_reader(data) as reader:
            while chunk := reader.read(checksum.CHUNK):
                written += len(chunk)
                if written > cap:
                    break
                out.write(chunk)
    except zstandard.ZstdError as exc:
        host.remove(target, missing_ok=True)
        return f"cannot be decompressed: {exc}"
    except BaseException:
        host.remove(target, missing_ok=True)
        raise
    if written > cap:
        host.remove(target)
        return -1
    return written


def _staging_failure(name: str, staging: str, exc: OSError) -> AuraError:
    """A system call refused while the staging folder was made (a full or read-only memory file
    system, a denied permission) as the one line a user reads (exit 1), naming the file."""
    reason = exc.strerror or str(exc)
    where = f" ({exc.filename})" if exc.filename and exc.filename != staging else ""
    hint = " (TMPDIR chooses another folder)" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) else ""
    return AuraError(f"{name}: cannot prepare the restore's staging folder {staging}: {reason}{where}{hint}")


def tool_failure(name: str, program: str, result: Result) -> AuraError:
    """A PostgreSQL client tool's failure as one line: its own first ``error:`` line (not the
    ``Command was:`` or progress lines that follow it), or the signal that killed it."""
    if result.returncode < 0:
        with contextlib.suppress(ValueError):
            return AuraError(f"{name}: {program} was killed by {signal.Signals(-result.returncode).name}")
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"\b(error|fatal):", line, re.IGNORECASE)]
    reason = errors[0] if errors else (lines[-1] if lines else "no output on stderr")
    reason = re.sub(r"\s+", " ", reason)
    if not reason.startswith(program):
        reason = f"{program}: {reason}"
    message = f"{name}: {reason} (exit {result.returncode})"
    if connection_failure_kind(reason) == "privilege":
        return PrivilegeError(f"{name}: {with_privilege_hint(reason)} (exit {result.returncode})")
    return AuraError(message)


def compare_facts(name: str, recorded: PostgresManifest, actual: dict[str, Any]) -> None:
    """VerificationError naming the first table whose count or checksum differs from what the
    snapshot recorded (``actual``: ``database_facts``). Materialized views (listed on either
    side) are not compared: a restore refreshes them. A fact the manifest lacks is not compared."""
    matviews = set(recorded.materialized_views or []) | set(actual.get("materialized_views", []))
    for key in ("row_counts", "table_checksums"):
        want: dict[str, Any] | None = getattr(recorded, key)
        got: dict[str, Any] | None = actual.get(key)
        if want is None or got is None:
            continue
        for table in sorted((set(want) | set(got)) - matviews):
            if want.get(table) != got.get(table):
                raise VerificationError(
                    f"{name}: {key.replace('_', ' ')[:-1]} of {table} is "
                    f"{got.get(table)}, the snapshot recorded {want.get(table)}"
                )
    for key in ("large_objects", "large_object_checksum", "sequences"):
        if key in recorded.model_fields_set and key in actual and getattr(recorded, key) != actual[key]:
            raise VerificationError(f"{name}: {key.replace('_', ' ')} differ from the snapshot")


TOC_DATA_ENTRY = re.compile(r"^(\d+); \d+ \d+ (TABLE DATA|BLOBS) ")


def _blob_files(store: Host, blobs_toc: str) -> list[str]:
    """The data files a dump's blobs.toc (on ``store``) names (``<oid> blob_<oid>.dat`` lines)."""
    try:
        text = store.read_text(blobs_toc)
    except FileNotFoundError:
        return ["blobs.toc"]  # reported as named by the dump and missing from the manifest
    return [parts[1] for parts in (line.split() for line in text.splitlines()) if len(parts) == 2]


# ---------------------------------------------------------------- the component


class PostgresComponent:
    """One configured database (config ``type: postgres``) on its host.

    ``config`` may be None for a snapshot's component that is no longer configured: it can
    still be described and verified (not deeply); what needs the database says so
    (UsageError). Every operation that talks to the server turns a driver error into an
    AuraError naming the component (``database_errors``, ``statement_error``). ``store`` is the
    host its snapshot folders are on (its own host when not given)."""

    manifest_model: ClassVar[type[ComponentManifest]] = PostgresManifest
    type: ClassVar[str] = "postgres"
    restore_to: ClassVar[str | None] = "database"

    def __init__(self, name: str, config: PostgresConfig | None, host: Host, store: Host | None = None) -> None:
        if config is not None and not isinstance(config, PostgresConfig):
            raise ConfigError(f"component {name} is not a postgres component")
        self.name = name
        self.config = config
        self.host = host
        self.store = store if store is not None else host
        self._connection: Connection | None = None

    @classmethod
    def unconfigured(cls, name: str, section: dict[str, Any], host: Host) -> PostgresComponent:
        """Without its configuration: what the snapshot recorded only (acting raises UsageError)."""
        return cls(name, None, host)

    # -- what it is ------------------------------------------------------------------------------

    def describe(self, database: str | None = None) -> str:
        """``database shop on 127.0.0.1:5432`` (naming ``database`` instead of its own). Never
        connects and never fails: a DSN that cannot be read is said as such."""
        if self.config is None:
            return f"database {database or self.name}"
        try:
            conn = self.connection()
        except AuraError:
            source = f"${self.config.dsn_env}" if self.config.dsn_env else "its dsn"
            return f"database {database or '?'} (from {source}, which cannot be read)"
        return f"database {database or conn.dbname} on {conn.where}"

    def configured(self, why: str) -> PostgresConfig:
        """Its configuration; UsageError ``component N is not in the configuration: <why>``."""
        if self.config is None:
            raise UsageError(f"component {self.name} is not in the configuration: {why}")
        return self.config

    def connection(self) -> Connection:
        """Its database's connection parameters (DSN and password resolved once, from the
        environment or a file); ConfigError when they cannot be read."""
        if self._connection is None:
            self._connection = connection(self.name, self.configured("no database to connect to"))
        return self._connection

    @contextlib.contextmanager
    def admin(self) -> Iterator[Any]:
        """A psycopg connection (autocommit) to the server's maintenance database, where
        databases are created, renamed and dropped; closed after the block."""
        cfg = self.configured("no database to connect to")
        with contextlib.closing(connect(self.connection().with_db(cfg.maintenance_db), autocommit=True)) as admin:
            yield admin

    def recorded(self, snapshot: Snapshot) -> PostgresManifest:
        """Its section of ``snapshot``'s manifest; VerificationError when it cannot be read as one."""
        from pydantic import ValidationError

        try:
            return PostgresManifest.model_validate(snapshot.manifest["components"][self.name])
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            raise VerificationError(f"{self.name}: its manifest section is damaged: {where}: {error['msg']}") from None

    # -- SQL (the sql action, the deploy's sql checks) --------------------------------------------

    def execute(self, statement: str, *, timeout: float | None = None) -> list[list[Any]]:
        """Run ``statement`` (SQL, one or more statements) in one transaction on its database and
        commit; return the rows the last one gave (none for a statement that gives none). A
        connection failure is the AuraError ``connect`` raises; a statement the server refuses
        (or cancels after ``timeout`` seconds) is ``statement_error``'s one masked line, with
        nothing committed."""
        with self._session() as db:
            with _bounded(self.name, db, timeout):
                cursor = db.execute(statement)
                rows = cursor.fetchall() if cursor.description else []
            db.commit()
        return [list(row) for row in rows]

    def query(
        self, statement: str, *, attempts: int | None = None, timeout: int | None = None
    ) -> tuple[Any, ...] | None:
        """The first row ``statement`` gives (None when it gives no row), in a transaction that is
        rolled back: nothing it changes is kept. ``attempts`` and ``timeout`` (seconds) replace
        the configured connection's (a health check tries once, briefly). Errors as ``execute``."""
        with self._session(attempts, timeout) as db, _bounded(self.name, db, timeout):
            row = db.execute(statement).fetchone()  # (a query a lock holds waited for ever)
        return None if row is None else tuple(row)

    @contextlib.contextmanager
    def _session(self, attempts: int | None = None, timeout: int | None = None) -> Iterator[Any]:
        """A connection to its database (closed after the block, rolling back what was not
        committed); a driver error in the block leaves it as ``statement_error``."""
        import psycopg

        conn = self.connection()
        if attempts is not None or timeout is not None:
            conn = Connection(conn.params, attempts or conn.attempts, timeout or conn.timeout)
        with contextlib.closing(connect(conn)) as db:
            try:
                yield db
            except psycopg.Error as exc:
                raise statement_error(self.name, exc) from None

    # -- snapshot --------------------------------------------------------------------------------

    @database_errors
    def snapshot(self, target: SnapshotTarget) -> PostgresManifest:
        """Dump the database into ``target.folder``; return its section (facts and artifacts).
        Without checksums, each table's rows are counted in the dump stream itself (the rows
        pg_dump dumped, from the same snapshot) instead of by a second scan on the server; a
        table whose stream cannot be counted so is counted by the server, in that snapshot."""
        cfg = self.configured("nothing to back up")
        conn = self.connection()
        jobs = default_jobs(cfg, self.host)
        dest = target.folder
        dump_dir = dest / DUMP
        version = _in_background(lambda: tool_major(self.host, tool(cfg, "pg_dump")))  # while connecting
        db = connect(conn)
        try:
            pg_dump_version = self._check_versions(db.info.server_version // 10000, version.result())
            db.isolation_level = _repeatable_read()
            db.read_only = True
            # idle for most of the dump (rows are counted in its stream): a server's timeout must not
            # end it, its snapshot is pg_dump's (pg_dump exempts its own sessions the same way)
            db.execute("SELECT set_config('idle_in_transaction_session_timeout', '0', true)")
            snapshot_id = db.execute("SELECT pg_export_snapshot()").fetchone()[0]
            # the other facts are read while pg_dump runs; pg_dumpall needs this one first
            facts: dict[str, Any] = {"superuser": db.info.parameter_status("is_superuser") == "on"}
            started = time.monotonic()
            data, counted = self._dump(cfg, conn, db, dest, snapshot_id, jobs, facts)
            db.rollback()  # the exported snapshot may end now: pg_dump has finished with it
            dump_seconds = time.monotonic() - started
        finally:
            db.close()
        artifacts: dict[str, dict[str, Any]] = {}
        if cfg.globals:
            artifacts[GLOBALS] = _hash_plain(self.store, f"{dest}/{GLOBALS}")
        for plain in ("toc.dat", "blobs.toc"):
            if self.store.exists(f"{dump_dir}/{plain}"):
                artifacts[f"{DUMP}/{plain}"] = _hash_plain(self.store, f"{dump_dir}/{plain}")
        artifacts.update({f"{DUMP}/{file}": info for file, info in data.items()})
        raw = sum(info.get("raw_size", info["size"]) for info in artifacts.values())
        logs.get().info(
            "postgres.snapshot",
            database=facts["database"],
            seconds=round(dump_seconds, 2),
            tables=len(facts["row_counts"]),
            counted_in_stream=counted,
            raw_bytes=raw,
        )
        return PostgresManifest.model_validate(
            {
                "type": "postgres",
                **{k: v for k, v in facts.items() if k != "superuser"},
                "where": conn.where,
                "pg_dump_version": pg_dump_version,
                "jobs": jobs,
                "compression": f"zstd:{cfg.compression_level}",
                "uncompressed_bytes": raw,
                "globals": GLOBALS if cfg.globals else None,
                "artifacts": artifacts,
            }
        )

    def _dump(
        self, cfg: PostgresConfig, conn: Connection, db: Any, dest: Path, snapshot_id: str, jobs: int, facts: Any
    ) -> tuple[dict[str, dict[str, Any]], int]:
        """pg_dump (and pg_dumpall's globals beside it) into ``dest`` while ``db``, in the
        dumped snapshot, records the facts into ``facts``; returns the compressed data files
        (``_Compressor.finish``) and how many tables were counted in the stream."""
        name, host = self.name, self.host
        dump_dir = dest / DUMP
        stream_counts = not cfg.checksums
        compressor = _Compressor(
            self.store, str(dump_dir), cfg.compression_level, count_rows=stream_counts, followers=jobs + 2
        )
        succeeded = False
        process: Process | None = None
        globals_dump: tuple[Process, concurrent.futures.Future[Result]] | None = None
        listed: concurrent.futures.Future[dict[int, str]] | None = None
        try:
            process = dump = host.start(make_pg_dump(cfg, conn, dump_dir, snapshot_id, jobs), stdout=None)
            compressor.on_failure = lambda: dump.terminate(STOP_GRACE)
            process.drain_in_background(lambda line: _on_pg_dump_line(line, compressor))
            if cfg.globals:
                globals_dump = self._dump_globals(cfg, conn, dest / GLOBALS, facts["superuser"], process)
            facts_of = functools.partial(_facts_of_snapshot, checksums=cfg.checksums)
            if stream_counts:  # read as soon as pg_dump has written it, beside the data
                listed = _in_background(lambda: _toc_when_written(compressor, host, cfg, dump_dir))
            facts.update(_facts_while_dumping(process, db, cfg.checksums, facts_of))
            result = process.wait(check=False)
            if globals_dump is not None and (dumped := globals_dump[1].result()).returncode != 0:
                raise tool_failure(name, "pg_dumpall", dumped)
            if result.returncode != 0:
                raise tool_failure(name, "pg_dump", result)
            succeeded = True
        finally:
            if not succeeded and process is not None:
                process.terminate(STOP_GRACE)  # whatever stopped the backup (pg_dumpall missing too) stops pg_dump
            if globals_dump is not None and not globals_dump[1].done():
                globals_dump[0].terminate(STOP_GRACE)  # the backup stops: so does pg_dumpall
                concurrent.futures.wait([globals_dump[1]])
            data = compressor.finish(succeeded)
        counted: dict[int, int] = {}
        if listed is not None:
            counted = _stream_counts(listed.result(), compressor.rows)
            facts["row_counts"] = row_counts(db, facts.pop("tables"), counted)
            facts["checksum_method"] = CHECKSUM_METHOD  # each table counted ONLY: a verify counts so too
        return data, len(counted)

    def _dump_globals(
        self, cfg: PostgresConfig, conn: Connection, out_file: Path, superuser: bool, dump: Process
    ) -> tuple[Process, concurrent.futures.Future[Result]]:
        """Start pg_dumpall --globals-only beside pg_dump (``dump``), which is stopped at once
        if it fails; the process, and its result in a future."""
        process = self.host.start(make_pg_dumpall_globals(cfg, conn, out_file, superuser), stdout=None)

        def wait() -> Result:
            try:
                result = process.wait(check=False)
            except BaseException:
                dump.terminate(STOP_GRACE)
                raise
            if result.returncode != 0:
                dump.terminate(STOP_GRACE)  # the backup fails for it: pg_dump's work would be lost
            return result

        return process, _in_background(wait)

    def _check_versions(self, server_major: int, known: tuple[int, str] | None = None) -> str:
        """pg_dump's version line (``known``: as ``tool_major`` already read it); ToolMissing
        when it is older than the server."""
        major, version = known or tool_major(self.host, tool(self.config, "pg_dump"))
        if major < server_major:
            raise ToolMissing(
                f"pg_dump {major} is older than the server ({server_major}); install "
                f"postgresql-client-{server_major} or set bin_dir"
            )
        return version

    # -- verify ----------------------------------------------------------------------------------

    @database_errors
    def verify(self, snapshot: Snapshot, deep: bool) -> dict[str, Any]:
        """The dump as the manifest lists it: every artifact present with its size, the table of
        contents as recorded and readable by ``pg_restore --list``, every data file it names
        listed in the manifest, no file in the dump folder that the manifest does not list.
        ``deep``: restore into a scratch database and compare counts and checksums
        (materialized views excepted: reported as not compared). VerificationError naming what
        differs."""
        name = self.name
        recorded = self.recorded(snapshot)
        check_inputs(self.store, snapshot, name, recorded)
        dump_dir = snapshot.component_dir(name) / DUMP
        listed = _dump_artifacts(name, recorded)
        for extra in sorted(set(self.store.listdir(str(dump_dir))) - set(listed)):
            raise VerificationError(f"{name}: {DUMP}/{extra} is not in the manifest")
        listing = self.host.run(Command((tool(self.config, "pg_restore"), "--list", str(dump_dir))), check=False)
        if listing.returncode != 0:
            raise VerificationError(str(tool_failure(name, "pg_restore --list", listing)))
        lines = [line for line in listing.text.splitlines() if line and not line.startswith(";")]
        for line in lines:
            match = TOC_DATA_ENTRY.match(line)
            if match is None:
                continue
            wanted = (
                [f"{match.group(1)}.dat"]
                if match.group(2) == "TABLE DATA"
                else _blob_files(self.store, f"{dump_dir}/blobs.toc")
            )
            for data in wanted:
                if data + COMPRESSED not in listed:
                    raise VerificationError(f"{name}: {DUMP}/{data}{COMPRESSED} is in the dump but not in the manifest")
        report: dict[str, Any] = {"toc_entries": len(lines)}
        if recorded.materialized_views:
            report["materialized_views_not_compared"] = recorded.materialized_views
        if not deep:
            return report
        report.update(self._deep_verify(snapshot, recorded))
        return report

    def _deep_verify(self, snapshot: Snapshot, recorded: PostgresManifest) -> dict[str, Any]:
        """Restore into a scratch database (journaled before it exists, dropped after) and
        compare it with the manifest."""
        from aura_ops.components.postgres import database as pgdatabase

        cfg = self.configured("cannot deep-verify")
        conn = self.connection()
        scratch = f"aura_verify_{pysecrets.token_hex(4)}"
        with self.admin() as admin, pgdatabase.temporary_database(admin, self.name, scratch):
            pgdatabase.create_database(admin, scratch, recorded)
            faults.point("verify:after-create")
            seconds = self._run_restore(snapshot, recorded, conn.with_db(scratch), default_jobs(cfg, self.host))
            self._check_restored(conn.with_db(scratch), recorded)
        return {
            "restore_seconds": round(seconds, 2),
            "tables_compared": len(recorded.row_counts or {}),
            "checksums_compared": recorded.table_checksums is not None,
        }

    # -- restore ---------------------------------------------------------------------------------

    def damage(self, snapshot: Snapshot, verified: object = None) -> str | None:
        """None: nothing beyond the manifest's checksums to distrust."""
        return None

    @database_errors
    def restore_target(self, snapshot: Snapshot, request: RestoreRequest) -> RestoreTarget:
        """Where a restore would go (``request.to``, else the live database) and what is there
        (read-only; ``details`` is ``pgdatabase.Target.as_dict``). UsageError for a target that
        must not be used (``pgdatabase.inspect_target``)."""
        from aura_ops.components.postgres import database as pgdatabase

        cfg = self.configured("no database to restore into")
        with self.admin() as admin:
            target = pgdatabase.inspect_target(admin, self.connection(), cfg, request.to)
        return RestoreTarget(self.name, target.describe(), target.replaces, target.live, target.as_dict())

    @database_errors
    def restore(self, snapshot: Snapshot, request: RestoreRequest) -> dict[str, Any]:
        """Restore into ``request.to`` or, when None, in place of the original. The database is
        built beside its target and put in its place atomically (``pgdatabase.put_in_place``);
        a target that does not exist is created with the snapshot's database-level properties.
        With ``restore_in_place: clean`` an existing live database is restored into with
        ``pg_restore --clean --if-exists`` instead. ``request.replace`` False: UsageError when
        the target holds data (no consent to replace it). ``with_globals``: roles and
        tablespaces first (``pgglobals``; ``globals_overwrite`` also changes existing ones).
        ``dry_run``: judge the target and the globals, change nothing."""
        from aura_ops.components.postgres import database as pgdatabase
        from aura_ops.components.postgres import globals as pgglobals

        name = self.name
        cfg = self.configured("no database to restore into")
        recorded = self.recorded(snapshot)
        conn = self.connection()
        admin_conn = conn.with_db(cfg.maintenance_db)
        jobs = default_jobs(cfg, self.host)
        report: dict[str, Any] = {}
        # nothing is touched before every artifact it needs is present and the small ones hash as recorded;
        # globals change the server outside the target (roles), so with them every artifact is hashed first
        wants_globals = request.with_globals or request.globals_overwrite
        applies_globals = bool(wants_globals and recorded.globals)
        check_inputs(
            self.store,
            snapshot,
            name,
            recorded,
            full=applies_globals and not request.dry_run,
            with_globals=wants_globals,
        )
        with contextlib.closing(connect(admin_conn, autocommit=True)) as admin:
            target = pgdatabase.inspect_target(admin, conn, cfg, request.to)
            pgdatabase.refuse_unsettled(name, target.database)  # a killed swap's conflict is the user's to settle
            report["database"] = target.database
            if target.replaces and not request.replace and not request.dry_run:
                raise UsageError(
                    f"{name}: the restore would {target.describe()}, which was not confirmed; nothing changed"
                )
            if applies_globals and recorded.globals:
                script = verified_artifact(self.store, snapshot, name, recorded, recorded.globals).decode()
                report["globals"] = pgglobals.apply(
                    admin, script, overwrite=request.globals_overwrite, dry_run=request.dry_run
                )
                report["notes"] = pgglobals.summary(report["globals"])
            if request.dry_run:
                return {**report, "dry_run": True, "changes": [f"{target.describe()} from snapshot {snapshot.id}"]}
            if target.live and target.exists and cfg.restore_in_place == "clean":
                seconds = self._run_restore(snapshot, recorded, conn, jobs, clean=True)
                return {**report, "mode": "clean", "restore_seconds": round(seconds, 2)}
            check = None
            if target.live or target.exists:  # what takes a name in use (or the live one) is checked first
                check = lambda built: self._check_restored(conn.with_db(built), recorded)  # noqa: E731
            # the staging folder is made while the server creates the database (put_in_place)
            with self._staging_in_background(snapshot, recorded, jobs) as staged:
                seconds = pgdatabase.put_in_place(
                    admin_conn,
                    admin,
                    name,
                    target,
                    recorded,
                    lambda built: self._run_restore(snapshot, recorded, conn.with_db(built), jobs, staged=staged),
                    check,
                )
        mode = "swap" if target.exists else ("created" if target.live else "new")
        return {**report, "mode": mode, "restore_seconds": round(seconds, 2)}

    def _check_restored(self, conn: Connection, recorded: PostgresManifest) -> None:
        with contextlib.closing(connect(conn)) as db:
            # no method recorded: checksums by the first method ("text"); without checksums the
            # counts were taken table by table, ONLY, as the current method does
            method = recorded.checksum_method or ("text" if recorded.table_checksums is not None else CHECKSUM_METHOD)
            compare_facts(self.name, recorded, database_facts(db, recorded.table_checksums is not None, method))

    def _run_restore(
        self,
        snapshot: Snapshot,
        recorded: PostgresManifest,
        conn: Connection,
        jobs: int,
        clean: bool = False,
        staged: AbstractContextManager[tuple[str, _Feeder]] | None = None,
    ) -> float:
        """pg_restore from a staging folder; returns the seconds it took. Success is reported
        only after pg_restore and every feed have ended and been checked: a bad artifact stops
        pg_restore at once (VerificationError naming it), pg_restore's own failure names its
        error line. ``clean`` (restoring into the live database) hashes every artifact before
        anything starts. ``staged``: the staging folder, made already (``_staging_in_background``)."""
        name = self.name
        started = time.monotonic()
        staged = staged or self._staging(snapshot, recorded, jobs + 2, verify_first=clean, serial=jobs == 1)
        with staged as (staging, feeder):
            process = self.host.start(make_pg_restore(self.config, conn, staging, jobs, clean=clean), stdout=None)
            feeder.on_failure = lambda: process.terminate(STOP_GRACE)
            if feeder.errors or feeder.failed:  # failed before it could stop pg_restore
                process.terminate(STOP_GRACE)
            process.drain_in_background()
            try:
                result = process.wait(check=False)
            except BaseException:
                process.terminate(STOP_GRACE)
                raise
            finally:
                feeder.finish()
        if feeder.errors:
            raise VerificationError(f"{name}: {feeder.errors[0]}")
        if feeder.failed:
            raise AuraError(f"{name}: {feeder.failed[0]}")
        if result.returncode != 0:
            raise tool_failure(name, "pg_restore", result)
        if feeder.broken:
            raise AuraError(f"{name}: {feeder.broken[0]}")
        return time.monotonic() - started

    @contextlib.contextmanager
    def _staging(
        self,
        snapshot: Snapshot,
        recorded: PostgresManifest,
        workers: int,
        verify_first: bool = False,
        serial: bool = False,
        checked: bool = False,
        folder: str | None = None,
    ) -> Iterator[tuple[str, _Feeder]]:
        """A folder on the host that pg_restore can read (on a memory file system when the host
        has one with room: ``Host.fast_temp_root``): the table of contents (checked as recorded);
        each small data file written out whole, checked before pg_restore starts
        (``_materialize``, within ``SMALL_*``); a named pipe for each other one, fed while
        pg_restore reads. Recorded as a temporary before it is created, removed after.
        ``checked``: the caller ran ``check_inputs`` already; ``folder``: its path, recorded as a
        temporary by the caller (which removes it after a failed removal here)."""
        import zstandard

        name, host = self.name, self.host
        dump_dir = snapshot.component_dir(name) / DUMP
        algorithm = snapshot.manifest.get("checksum_algorithm", checksum.ALGORITHM)
        if not checked:
            check_inputs(self.store, snapshot, name, recorded, full=verify_first)
        staging = folder or self._staging_name()
        with contextlib.nullcontext(None) if folder else temporaries.track("path", staging) as temporary:
            try:
                host.mkdir(staging, mode=0o700)
            except OSError as exc:
                raise _staging_failure(name, staging, exc) from None
            prepared = False
            try:
                pipes: dict[str, tuple[str, str, str]] = {}
                room = min(SMALL_TOTAL, host.disk_usage(staging)[0] // 4)
                decompressor = zstandard.ZstdDecompressor()  # one for every small file: made once
                for file, info in _dump_artifacts(name, recorded).items():
                    if file.endswith(COMPRESSED):
                        plain, source = f"{staging}/{file[: -len(COMPRESSED)]}", f"{dump_dir}/{file}"
                        if info.size <= SMALL_COMPRESSED and room > 0:
                            cap = min(SMALL_PLAIN, room)
                            written = _materialize(
                                self.store, source, host, plain, info.sha256, algorithm, cap, decompressor, info.size
                            )
                            if isinstance(written, str):
                                raise VerificationError(f"{name}: {DUMP}/{file}: {written}")
                            if written >= 0:
                                room -= written
                                continue
                        host.make_fifo(plain)
                        pipes[plain] = (source, f"{DUMP}/{file}", info.sha256)
                        continue
                    content = _read_verified(self.store, f"{dump_dir}/{file}", info.sha256, algorithm, info.size)
                    if isinstance(content, str):
                        raise VerificationError(f"{name}: {DUMP}/{file}: {content}")
                    with host.open_write(f"{staging}/{file}", mode=0o600) as out:  # read soon, never kept
                        out.write(content)
                # the table of contents tells the order of a serial restore, and where large objects go
                blobs = any(pipe.rsplit("/", 1)[-1].startswith("blob_") for pipe in pipes)
                needed = len(pipes) > _Feeder.WINDOW and (serial or blobs)
                listing = self._listing(staging) if needed else None
                order = _expected_order(list(pipes), listing, serial)
                feeder = _Feeder(
                    {pipe: pipes[pipe] for pipe in order},
                    workers,
                    algorithm,
                    host.open_fifo_writer_waiting,
                    host.open_fifo_reader,
                    self.store.open_read,
                    host.open_fifo_writer,
                )
                with feeder:
                    prepared = True
                    yield staging, feeder
            except OSError as exc:
                if prepared:  # the restore's own (or the feeder's) failure, not the preparation's
                    raise
                raise _staging_failure(name, staging, exc) from None
            finally:
                host.remove_tree(staging)
            if temporary is not None:
                temporary.release()

    def _staging_name(self) -> str:
        return f"{self.host.fast_temp_root(SMALL_TOTAL).rstrip('/')}/aura-restore-{pysecrets.token_hex(6)}"

    @contextlib.contextmanager
    def _staging_in_background(
        self, snapshot: Snapshot, recorded: PostgresManifest, jobs: int
    ) -> Iterator[AbstractContextManager[tuple[str, _Feeder]]]:
        """``_staging`` (of inputs already checked) made in a thread of its own while the block
        runs; what is yielded (``_Ready``), entered, waits until it is ready and gives it (or
        raises what made it fail), and removes it when left. On exit the folder is removed
        if it is still there (after the preparation ended, whatever happened)."""
        ready: concurrent.futures.Future[tuple[str, _Feeder]] = concurrent.futures.Future()
        done = threading.Event()
        ended: list[BaseException] = []
        staging = self._staging_name()

        def hold() -> None:
            try:
                preparing = self._staging(snapshot, recorded, jobs + 2, serial=jobs == 1, checked=True, folder=staging)
                with preparing as prepared:
                    ready.set_result(prepared)
                    done.wait()
            except BaseException as exc:  # noqa: BLE001 - handed to the restore's thread
                (ended.append if ready.done() else ready.set_exception)(exc)

        # recorded here, not in the thread: the journal's connection is not written from two threads at once
        with temporaries.track("path", staging) as temporary:
            thread = threading.Thread(target=contextvars.copy_context().run, args=(hold,), daemon=True)
            thread.start()
            staged = _Ready(ready, done, thread, ended, temporary)
            try:
                yield staged  # _run_restore removes it as soon as pg_restore is done (before a swap)
            except BaseException:
                with contextlib.suppress(Exception):  # the block's own failure is the one to report
                    staged.close()
                raise
            staged.close()

    def _listing(self, staging: str) -> str | None:
        """``pg_restore --list`` of the staging folder (its table of contents, in order): what
        tells the order its data files will be read in; None when it cannot be had (the
        restore itself then says why)."""
        listing = self.host.run(Command((tool(self.config, "pg_restore"), "--list", staging)), check=False)
        return listing.text if listing.returncode == 0 else None

    # -- doctor ----------------------------------------------------------------------------------

    def doctor(self) -> list[dict[str, Any]]:
        """Its client tools and their versions, the database reachable, pg_dump not older than
        the server; each a check ``{"check", "ok", "detail"}`` (never raises)."""
        name, cfg = self.name, self.config
        checks: list[dict[str, Any]] = []
        versions: dict[str, int] = {}
        for program in ("pg_dump", "pg_restore", "pg_dumpall", "psql"):
            try:
                major, text = tool_major(self.host, tool(cfg, program))
                versions[program] = major
                checks.append({"check": f"{name}: {program}", "ok": True, "detail": text})
            except AuraError as exc:
                checks.append({"check": f"{name}: {program}", "ok": False, "detail": str(exc), "exit_code": 2})
        try:
            conn = self.connection()
            facts = self._server_facts(conn)
            checks.append(
                {
                    "check": f"{name}: database {conn.dbname} at {conn.where}",
                    "ok": True,
                    "detail": f"PostgreSQL {facts['server_version']}, {facts['database_size'] / 1e6:.1f} MB",
                }
            )
            dump_major = versions.get("pg_dump")
            if dump_major is not None:
                ok = dump_major >= facts["server_major"]
                checks.append(
                    {
                        "check": f"{name}: pg_dump not older than server",
                        "ok": ok,
                        "detail": f"pg_dump {dump_major}, server {facts['server_major']}",
                        "exit_code": 2,
                    }
                )
        except AuraError as exc:
            checks.append({"check": f"{name}: database", "ok": False, "detail": str(exc), "exit_code": exc.exit_code})
        return checks

    @database_errors
    def _server_facts(self, conn: Connection) -> dict[str, Any]:
        with contextlib.closing(connect(conn)) as db:
            return server_facts(db)

    # -- what workflows and the CLI ask of its type (Component protocol) --------------------------

    local_tools: ClassVar[tuple[str, ...]] = ()
    stored_entries: ClassVar[frozenset[str]] = frozenset()
    temporary_name_folders: ClassVar[tuple[str, ...]] = ()
    verify_when_artifacts_fail: ClassVar[bool] = False

    @classmethod
    def summary(cls, section: dict[str, Any], size: Callable[[float], str]) -> str:
        """``shop at 127.0.0.1:5432, PostgreSQL 15.4, 12 tables, 3400 rows, 8.1 MB on the server``."""
        recorded = PostgresManifest.model_validate(section)
        counts = recorded.row_counts
        return (
            f"{recorded.database} at {recorded.where or '?'}, PostgreSQL {recorded.server_version or '?'}, "
            f"{'?' if counts is None else len(counts)} tables, {'?' if counts is None else sum(counts.values())} "
            f"rows, {'?' if recorded.database_size is None else size(recorded.database_size)} on the server"
        )

    def describe_restore(self, section: dict[str, Any], to: str | None) -> str:
        """``into database shop on 127.0.0.1:5432``: ``to`` (``--to-database``), else its own."""
        return f"into {self.describe(to)}"
