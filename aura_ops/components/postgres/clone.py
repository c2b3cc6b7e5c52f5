"""Fast rollback of a deploy's database: a same-server clone kept while services are stopped.

After a deploy has stopped the services and before it migrates, it clones the database on the
same server (``CREATE DATABASE <clone> TEMPLATE <live> STRATEGY FILE_COPY``: a file-level copy,
no WAL, no parsing). Rolling back within that run swaps the clone in by renaming databases,
which costs the same at 1 GB as at 1 TB; without a clone (``deploy.fast_rollback: off``, no
privilege, no disk space, other sessions on the database) the rollback restores the run's dump
snapshot with pg_restore, as before. The dump snapshot is always taken: it is the durable copy.

Every name derives from the run id, so a crash at any point leaves databases a resumed or
aborted run finds again: ``swap_back`` is a small state machine that finishes whatever rename
was interrupted. Database-level grants and settings (``GRANT ... ON DATABASE``,
``ALTER DATABASE ... SET``) belong to the database's catalog entry, not its files; they are
copied onto the clone, and onto any database that is swapped in place of another.

Every function takes the deploy's database as a ``PostgresComponent`` and uses only its public
interface (its connection, its maintenance connection, its host) and ``pgdatabase``'s; a driver
error becomes an AuraError naming the component (``postgres.database_errors``).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from aura_ops import faults, logs
from aura_ops.components.postgres import PostgresComponent, database_errors
from aura_ops.components.postgres import database as pgdatabase
from aura_ops.errors import AuraError, first_line

# a clone's name: <stem of the database's name>_aura_clone_<run id>
CLONE = "_aura_clone_"
BUILDING = "_aura_clonetmp_"  # renamed to CLONE once its grants and settings are copied
FAILED = "_aura_failed_"
OBJECT_IN_USE = "55006"  # "source database ... is being accessed by other users"
LOCAL_HOSTS = ("", "localhost", "127.0.0.1", "::1")


class CloneError(AuraError):
    """The database could not be cloned (privilege, space, other sessions)."""


def _stem(database: str) -> str:
    """The database's part of the names (which PostgreSQL limits to 63 bytes): the name itself,
    or for a long one its start and a digest, so two databases never share a stem."""
    if len(database.encode()) <= 24:
        return database
    return database.encode()[:16].decode(errors="ignore") + "_" + hashlib.sha256(database.encode()).hexdigest()[:7]


def clone_name(database: str, run_id: str) -> str:
    return f"{_stem(database)}{CLONE}{run_id}"


def building_name(database: str, run_id: str) -> str:
    return f"{_stem(database)}{BUILDING}{run_id}"


def failed_name(database: str, run_id: str) -> str:
    return f"{_stem(database)}{FAILED}{run_id}"


# ---------------------------------------------------------------- preflight


def _free_bytes(db: PostgresComponent, admin: Any, database: str) -> int | None:
    """Free bytes where the server keeps ``database``'s files, when the server runs on the
    component's host and lets us read its data directory; None when that cannot be known."""
    import psycopg

    conn = db.connection()
    server = conn.params.get("host") or conn.params.get("hostaddr") or ""
    if not (server.startswith("/") or server in LOCAL_HOSTS or server.startswith("127.")):
        return None
    try:
        row = admin.execute(
            "SELECT pg_tablespace_location(dattablespace), current_setting('data_directory')"
            " FROM pg_database WHERE datname = %s",
            (database,),
        ).fetchone()
    except psycopg.Error:  # not superuser nor pg_read_all_settings
        return None
    if row is None:
        return None
    path = row[0] or row[1]
    if not path or not db.host.is_dir(path):
        return None
    return db.host.disk_usage(path)[0]


@database_errors
def feasibility(db: PostgresComponent) -> dict[str, Any]:
    """Can ``db``'s database be cloned now? ``ok``, ``reason``, and the facts behind it:
    privileges (CREATEDB and owner, or superuser), size, and free space when it can be known."""
    conn = db.connection()
    with db.admin() as admin:
        row = admin.execute(
            "SELECT r.rolsuper, r.rolcreatedb, pg_get_userbyid(d.datdba) = current_user,"
            " pg_database_size(d.oid), current_setting('server_version_num')::int"
            " FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = %s",
            (conn.dbname,),
        ).fetchone()
        if row is None:
            return {"ok": False, "reason": f"database {conn.dbname} does not exist"}
        superuser, createdb, owner, size, version = row
        free = _free_bytes(db, admin, conn.dbname)
    facts: dict[str, Any] = {"database": conn.dbname, "size": size, "free": free, "server_version_num": version}
    if not (superuser or (createdb and owner)):
        return {**facts, "ok": False, "reason": "cloning needs CREATEDB and ownership of the database (or superuser)"}
    needed = size + max(64 << 20, size // 20)
    if free is not None and free < needed:
        return {
            **facts,
            "ok": False,
            "reason": f"not enough disk for a clone: {size / 1e6:.0f} MB needed (+5%), {free / 1e6:.0f} MB free",
        }
    where = "free space unknown (server not local or data directory not readable)"
    if free is not None:
        where = f"{free / 1e9:.2f} GB free"
    return {**facts, "ok": True, "reason": f"clone of {size / 1e6:.0f} MB possible; {where}"}


# ---------------------------------------------------------------- clone, swap, drop


@database_errors
def exists(db: PostgresComponent, run_id: str) -> bool:
    """Whether run ``run_id`` has a (whole) clone of ``db``'s database."""
    with db.admin() as admin:
        return pgdatabase.exists(admin, clone_name(db.connection().dbname, run_id))


@database_errors
def create(db: PostgresComponent, run_id: str, wait: float) -> dict[str, Any]:
    """Clone the live database as this run's clone; CloneError when it cannot be done within
    ``wait`` seconds (other sessions connected to the database block a clone). The copy is
    built under another name and renamed once complete (grants and settings included), so a
    clone found under its name after a crash is whole."""
    log = logs.get()
    conn = db.connection()
    clone, building = clone_name(conn.dbname, run_id), building_name(conn.dbname, run_id)
    started = time.monotonic()
    with db.admin() as admin:
        pgdatabase.drop_database(admin, building)  # left by a crash mid-clone
        # journaled before it exists; dropped on any failure, kept once renamed to the clone
        with pgdatabase.temporary_database(admin, db.name, building) as temp:
            _copy(admin, conn.dbname, building, wait)
            faults.point("clone:after-create")
            pgdatabase.copy_properties(admin, conn.dbname, building)
            pgdatabase.rename_database(admin, building, clone)
            temp.release()
        size = admin.execute("SELECT pg_database_size(%s)", (clone,)).fetchone()[0]
    seconds = round(time.monotonic() - started, 3)
    log.info("postgres.cloned", database=conn.dbname, clone=clone, seconds=seconds, size=size)
    return {"clone": clone, "seconds": seconds, "size": size}


def _copy(admin: Any, live: str, building: str, wait: float) -> None:
    """``CREATE DATABASE building TEMPLATE live`` (file copy), retried while other sessions
    on ``live`` block it, for ``wait`` seconds; CloneError then."""
    import psycopg
    import tenacity
    from psycopg import sql

    version = admin.execute("SELECT current_setting('server_version_num')::int").fetchone()[0]
    strategy = " STRATEGY FILE_COPY" if version >= 150000 else ""
    statement = "CREATE DATABASE {} TEMPLATE {}" + strategy

    def busy(exc: BaseException) -> bool:
        return isinstance(exc, psycopg.Error) and getattr(exc, "sqlstate", None) == OBJECT_IN_USE

    try:
        for attempt in tenacity.Retrying(
            stop=tenacity.stop_after_delay(wait),
            wait=tenacity.wait_fixed(0.5),
            retry=tenacity.retry_if_exception(busy),
            reraise=True,
        ):
            with attempt:
                admin.execute(sql.SQL(statement).format(sql.Identifier(building), sql.Identifier(live)))
    except psycopg.Error as exc:
        reason = first_line(exc)
        if busy(exc):
            sessions = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (live,)).fetchone()[0]
            reason = f"{sessions} other session(s) still connected to {live} after {wait:g}s"
        raise CloneError(f"cannot clone {live}: {reason}") from None


@database_errors
def drop(db: PostgresComponent, run_id: str) -> bool:
    """Drop this run's clone (and a half-built one); True when there was one."""
    live = db.connection().dbname
    clone = clone_name(live, run_id)
    with db.admin() as admin:
        pgdatabase.drop_database(admin, building_name(live, run_id))
        if not pgdatabase.exists(admin, clone):
            return False
        pgdatabase.drop_database(admin, clone)
    logs.get().info("postgres.clone_dropped", clone=clone)
    return True


@database_errors
def drop_stale(db: PostgresComponent, keep: set[str]) -> list[str]:
    """Drop clones (and half-swapped leftovers) of runs other than ``keep``: a run that failed
    without a rollback keeps its clone for a later ``runs abort`` until the next deploy."""
    prefix = _stem(db.connection().dbname)
    dropped = []
    with db.admin() as admin:
        rows = admin.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s) OR starts_with(datname, %s)"
            " OR starts_with(datname, %s)",
            (prefix + CLONE, prefix + BUILDING, prefix + FAILED),
        ).fetchall()
        for (datname,) in rows:
            run_id = datname[len(prefix) :].split("_", 3)[-1]  # _aura_<kind>_<run id>
            if run_id in keep:
                continue
            pgdatabase.drop_database(admin, datname)
            dropped.append(datname)
    if dropped:
        logs.get().info("postgres.stale_clones_dropped", databases=dropped)
    return dropped


@database_errors
def swap_back(db: PostgresComponent, run_id: str) -> dict[str, Any] | None:
    """Put this run's clone back in place of the live database; None when there is no clone
    (the caller then restores from the snapshot). Safe to repeat after a crash at any point:
    live -> failed, clone -> live. The replaced (migrated) database is kept as ``failed`` until
    ``drop_replaced``, which the deploy runs once the services are up again: dropping a large
    database takes time that grows with its size, renaming does not."""
    live = db.connection().dbname
    clone, failed = clone_name(live, run_id), failed_name(live, run_id)
    started = time.monotonic()
    with db.admin() as admin:
        exists = {name: pgdatabase.exists(admin, name) for name in (live, clone, failed)}
        if not exists[clone]:
            if exists[live] and exists[failed]:  # swapped earlier in this undo, then interrupted
                return {"path": "clone", "database": live, "seconds": 0.0, "note": "already swapped back"}
            return None
        if exists[live]:
            if exists[failed]:
                pgdatabase.drop_database(admin, failed)
            # the clone carries the pre-migration grants and settings, copied when it was made
            pgdatabase.rename_away(admin, live, failed)
        pgdatabase.rename_database(admin, clone, live)
    seconds = round(time.monotonic() - started, 3)
    logs.get().info("postgres.clone_swapped_back", database=live, seconds=seconds)
    return {"path": "clone", "database": live, "seconds": seconds}


@database_errors
def drop_replaced(db: PostgresComponent, run_id: str) -> bool:
    """Drop the database a swap-back replaced; True when there was one."""
    failed = failed_name(db.connection().dbname, run_id)
    with db.admin() as admin:
        if not pgdatabase.exists(admin, failed):
            return False
        pgdatabase.drop_database(admin, failed)
    logs.get().info("postgres.replaced_dropped", database=failed)
    return True
