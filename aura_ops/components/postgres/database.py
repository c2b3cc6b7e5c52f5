"""Whole databases on a PostgreSQL server: a restore's target judged, a database built beside
its target and put in its place atomically, database-level properties recorded and applied,
and databases dropped safely (logical-replication subscriptions first).

Putting a database in place is a journaled state machine (temporaries kind ``pg_swap``): the
record names the target, the copy being built and the name the old database is renamed to, and
is written before anything is created. The copy is built and checked under its own name; then
the old database is renamed away and the copy renamed in. Whatever stops it (an error, a rename
the server refuses, SIGTERM, SIGKILL between the renames), ``settle`` brings the target back to
one whole database: while the copy still has its own name, the old database goes back to the
target name (allowed connections again) and the copy is dropped; once the copy holds the target
name, the old one is dropped. In process that runs at once; after a kill, the next command that
takes a lock runs it (``temporaries.sweep``); ``aura-ops doctor`` lists the record meanwhile.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import secrets as pysecrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aura_ops import faults, logs
from aura_ops.components import postgres
from aura_ops.config import PostgresConfig
from aura_ops.errors import AuraError, UsageError, first_line
from aura_ops.state import temporaries

NEW = "new"  # a database being built to replace (or become) a target
OLD = "old"  # the target's previous database, renamed away during a swap


def temp_name(target: str, kind: str) -> str:
    """``<target>_aura_<kind>_<6 hex>``, kept within PostgreSQL's 63 bytes (a long target name
    is cut and given a digest, so two long targets never share names)."""
    stem = target
    if len(target.encode()) > 40:
        digest = hashlib.sha256(target.encode()).hexdigest()[:7]
        stem = target.encode()[:32].decode(errors="ignore") + "_" + digest
    return f"{stem}_aura_{kind}_{pysecrets.token_hex(3)}"


def exists(admin: Any, dbname: str) -> bool:
    """Whether database ``dbname`` exists on ``admin``'s server."""
    return bool(admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone())


def create_database(
    admin: Any, dbname: str, recorded: postgres.PostgresManifest, tablespace: str | None = None
) -> None:
    """``CREATE DATABASE dbname`` from template0 with the encoding, collation and locale provider
    (libc, or ICU with its locale and rules, or builtin) a snapshot recorded (UTF8 and C when it
    recorded none), as ``pg_dump --create`` would write it; in ``tablespace`` when given and it
    exists on this server (else the default one, with a warning)."""
    from psycopg import sql

    clauses: list[sql.Composable] = [
        sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
            sql.Identifier(dbname),
            sql.Literal(recorded.encoding or "UTF8"),
            sql.Literal(recorded.collate or "C"),
            sql.Literal(recorded.ctype or "C"),
        )
    ]
    provider = recorded.locale_provider
    if provider == "i":
        clauses.append(sql.SQL("LOCALE_PROVIDER icu ICU_LOCALE {}").format(sql.Literal(recorded.icu_locale or "und")))
        if recorded.icu_rules:
            clauses.append(sql.SQL("ICU_RULES {}").format(sql.Literal(recorded.icu_rules)))
    elif provider == "b":
        clauses.append(sql.SQL("LOCALE_PROVIDER builtin BUILTIN_LOCALE {}").format(sql.Literal(recorded.icu_locale)))
    elif provider == "c" and admin.info.server_version >= 150000:
        clauses.append(sql.SQL("LOCALE_PROVIDER libc"))  # template0 may be ICU (initdb --locale-provider)
    if tablespace:
        if admin.execute("SELECT 1 FROM pg_tablespace WHERE spcname = %s", (tablespace,)).fetchone():
            clauses.append(sql.SQL("TABLESPACE {}").format(sql.Identifier(tablespace)))
        else:
            logs.get().warning(
                "postgres.tablespace_missing",
                database=dbname,
                tablespace=tablespace,
                reason="not on this server (restore with --globals to create it): the default tablespace is used",
            )
    admin.execute(sql.SQL(" ").join(clauses))


def rename_database(admin: Any, old: str, new: str) -> None:
    """``ALTER DATABASE old RENAME TO new`` (nobody may be connected to ``old``: ``rename_away``)."""
    from psycopg import sql

    admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))


def oid_of(admin: Any, dbname: str) -> int | None:
    """The oid of database ``dbname`` (kept by a rename: it tells a database from another one
    created under the same name), None when it does not exist."""
    row = admin.execute("SELECT oid FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
    return None if row is None else int(row[0])


class SwapConflict(AuraError):
    """A swap's target name was created again by someone else while the old database was
    renamed away: aura-ops cannot tell which one to keep, so it keeps both and says so."""


# ---------------------------------------------------------------- dropping safely


def drop_database(admin: Any, dbname: str) -> None:
    """Drop ``dbname`` if it exists, ending its sessions; its logical-replication subscriptions
    are disabled, detached from their slot (which stays on the publisher, untouched) and dropped
    first, since PostgreSQL refuses to drop a database that holds one."""
    from psycopg import sql

    subscriptions = [
        row[0]
        for row in admin.execute(
            "SELECT s.subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid WHERE d.datname = %s",
            (dbname,),
        ).fetchall()
    ]
    if subscriptions:
        _drop_subscriptions(admin, dbname, subscriptions)
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def _drop_subscriptions(admin: Any, dbname: str, names: list[str]) -> None:
    import psycopg
    from psycopg import conninfo, sql

    allowed = admin.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
    if allowed is not None and not allowed[0]:  # renamed away during a swap: let us in to clean it
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(dbname)))
    info = conninfo.make_conninfo(admin.info.dsn, dbname=dbname, password=admin.info.password or None)
    with psycopg.connect(info, autocommit=True, application_name="aura-ops") as db:
        for name in names:
            ident = sql.Identifier(name)
            db.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident))
            db.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(ident))
            db.execute(sql.SQL("DROP SUBSCRIPTION {}").format(ident))
    logs.get().info("postgres.subscriptions_dropped", database=dbname, subscriptions=names, slots="kept")


# ---------------------------------------------------------------- database-level properties


def read_properties(db: Any, dbname: str) -> dict[str, Any] | None:
    """The properties of ``dbname`` that live in the server's catalog rather than in its files
    (a dump without ``--create`` does not restore them): owner, connection limit, comment, ACL
    (None: the default one) and ``ALTER DATABASE/ROLE ... SET`` settings. None when it does
    not exist. Any connection to the server will do: these catalogs are shared."""
    row = db.execute(
        "SELECT pg_get_userbyid(datdba), datconnlimit, shobj_description(d.oid, 'pg_database'), datacl IS NULL,"
        " t.spcname FROM pg_database d LEFT JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE datname = %s",
        (dbname,),
    ).fetchone()
    if row is None:
        return None
    owner, limit, comment, default_acl, tablespace = row
    acl = None
    if not default_acl:
        acl = [
            {"privilege": privilege, "grantable": grantable, "grantee": grantee}
            for privilege, grantable, grantee in db.execute(
                "SELECT a.privilege_type, a.is_grantable, CASE WHEN a.grantee = 0 THEN NULL"
                " ELSE pg_get_userbyid(a.grantee) END FROM pg_database d, aclexplode(d.datacl) a"
                " WHERE d.datname = %s ORDER BY 3 NULLS FIRST, 1",
                (dbname,),
            ).fetchall()
        ]
    settings = [
        {"role": role, "setting": setting}
        for role, setting in db.execute(
            "SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END, unnest(s.setconfig)"
            " FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = %s"
            " ORDER BY 1 NULLS FIRST",
            (dbname,),
        ).fetchall()
    ]
    return {
        "owner": owner,
        "connection_limit": limit,
        "comment": comment,
        "acl": acl,
        "settings": settings,
        "tablespace": None if tablespace in (None, "pg_default") else tablespace,
    }


# settings whose stored form is a list of quoted elements (pg_dump's variable_is_guc_list_quote)
QUOTED_LIST_SETTINGS = frozenset(
    {
        "local_preload_libraries",
        "search_path",
        "session_preload_libraries",
        "shared_preload_libraries",
        "temp_tablespaces",
        "unix_socket_directories",
    }
)


def apply_properties(admin: Any, target: str, props: dict[str, Any], full: bool = True) -> None:
    """Give ``target`` the recorded ``props``. ``full``: all of them (the same database in
    another place: a swap, a recreated database); otherwise only ``ALTER DATABASE ... SET``
    settings (a copy under a new name keeps the restoring role as owner, the default grants,
    no connection limit, no comment and no per-role settings). A property naming a role that
    does not exist here, or that the connected role may not set, is logged and skipped."""
    from psycopg import sql

    roles = {row[0] for row in admin.execute("SELECT rolname FROM pg_roles").fetchall()}
    target_id = sql.Identifier(target)
    statements: list[tuple[str, str | None, Any]] = []  # (what, role it needs, statement)
    if full:
        current = admin.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (target,))
        if props["owner"] != current.fetchone()[0]:
            statements.append(
                (
                    "owner",
                    props["owner"],
                    sql.SQL("ALTER DATABASE {} OWNER TO {}").format(target_id, sql.Identifier(props["owner"])),
                )
            )
        if props["connection_limit"] != -1:
            statements.append(
                (
                    "connection limit",
                    None,
                    sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(
                        target_id, sql.Literal(props["connection_limit"])
                    ),
                )
            )
        if props.get("comment") is not None:
            statements.append(
                (
                    "comment",
                    None,
                    sql.SQL("COMMENT ON DATABASE {} IS {}").format(target_id, sql.Literal(props["comment"])),
                )
            )
        if props.get("acl") is not None:
            statements.append(("grants", None, sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(target_id)))
            for grant in props["acl"]:
                grantee = grant["grantee"]
                statements.append(
                    (
                        f"grant {grant['privilege']}",
                        grantee,
                        sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                            sql.SQL(grant["privilege"]),
                            target_id,
                            sql.Identifier(grantee) if grantee else sql.SQL("PUBLIC"),
                            sql.SQL(" WITH GRANT OPTION") if grant["grantable"] else sql.SQL(""),
                        ),
                    )
                )
    for what, role, statement in statements:
        _apply_one(admin, target, what, role, roles, functools.partial(admin.execute, statement))
    for item in props.get("settings", []):
        role = item["role"]
        if role and not full:
            continue
        _apply_one(admin, target, "setting", role, roles, functools.partial(_apply_setting, admin, target, item))


def _apply_one(
    admin: Any, target: str, what: str, role: str | None, roles: set[str], action: Callable[[], Any]
) -> None:
    import psycopg

    log = logs.get()
    if role is not None and role not in roles:
        log.warning("postgres.property_skipped", database=target, property=what, reason=f"role {role} does not exist")
        return
    try:
        with admin.transaction():
            action()
    except psycopg.Error as exc:
        log.warning("postgres.property_not_copied", database=target, property=what, reason=first_line(exc))


def _apply_setting(admin: Any, target: str, item: dict[str, Any]) -> None:
    """``ALTER DATABASE/ROLE ... SET`` as stored: a quoted-list setting such as search_path goes
    through ``set_config`` and ``FROM CURRENT``, as one literal would become one element."""
    from psycopg import sql

    key, _, value = item["setting"].partition("=")
    target_id = sql.Identifier(target)
    where = (
        sql.SQL("ROLE {} IN DATABASE {}").format(sql.Identifier(item["role"]), target_id)
        if item["role"]
        else sql.SQL("DATABASE {}").format(target_id)
    )
    name = sql.SQL(".").join(map(sql.Identifier, key.split(".")))
    if key.lower() in QUOTED_LIST_SETTINGS:
        admin.execute("SELECT set_config(%s, %s, true)", (key, value))
        admin.execute(sql.SQL("ALTER {} SET {} FROM CURRENT").format(where, name))
    else:
        admin.execute(sql.SQL("ALTER {} SET {} TO {}").format(where, name, sql.Literal(value)))


def copy_properties(admin: Any, source: str, target: str) -> None:
    """Give ``target`` every catalog-level property of ``source`` (owner, connection limit,
    comment, grants, settings); nothing when ``source`` does not exist."""
    props = read_properties(admin, source)
    if props is not None:
        apply_properties(admin, target, props, full=True)


# ---------------------------------------------------------------- a restore's target


def _normal(name: str) -> str:
    """A name as a careless hand might spell it: spaces and double quotes around it, any case."""
    return name.strip().strip('"').strip().casefold()


FIRST_NORMAL_OID = 16384  # PostgreSQL's FirstNormalObjectId: every object made after initdb has an oid >= it
# The database's own catalogs with an ``oid`` column, readable by the connected role: every object
# pg_dump could dump (schemas, relations, types, functions, operators, casts, collations, text
# search objects, publications, default privileges, foreign servers, event triggers, policies,
# triggers, rules, extensions, ...) is a row in one of them. pg_user_mapping is read through its
# public view, pg_largeobject_metadata counted whole (a large object's oid may be chosen).
CATALOGS_SQL = """
SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'oid'
WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind = 'r' AND NOT c.relisshared
  AND c.relname NOT IN ('pg_user_mapping', 'pg_largeobject_metadata')
  AND has_table_privilege(c.oid, 'SELECT')
ORDER BY 1
"""
# The schemas a session's temporary tables live in stay behind when it ends: never user data.
_TEMP_SCHEMAS = r"(SELECT oid FROM pg_namespace WHERE nspname LIKE 'pg\_temp\_%' OR nspname LIKE 'pg\_toast\_temp\_%')"
_CATALOG_FILTERS = {
    # an empty schema named public (the default one, or one dropped and created again) holds nothing
    "pg_namespace": f"nspname <> 'public' AND oid NOT IN {_TEMP_SCHEMAS}",
    "pg_class": f"relnamespace NOT IN {_TEMP_SCHEMAS}",
    "pg_type": f"typnamespace NOT IN {_TEMP_SCHEMAS}",
}
_EXTRA_COUNTS = (
    "SELECT count(*) FROM pg_largeobject_metadata",
    "SELECT count(*) FROM pg_user_mappings WHERE umid >= 16384",
    "SELECT count(*) FROM pg_subscription"
    " WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
)


def count_objects(db: Any) -> int:
    """How many user objects the database ``db`` is connected to holds: rows made after initdb
    (oid >= FirstNormalObjectId) in any of its catalogs, large objects, user mappings and its
    subscriptions. 0 means really empty: nothing a pg_dump of it would dump but the database's
    own properties (comment, settings, grants, which live in shared catalogs) and changes made
    to objects initdb created (the public schema's owner, grants or comment)."""
    from psycopg import sql

    counts: list[sql.Composable] = [
        sql.SQL("SELECT count(*) FROM pg_catalog.{} WHERE oid >= {}{}").format(
            sql.Identifier(catalog),
            sql.Literal(FIRST_NORMAL_OID),
            sql.SQL(" AND " + _CATALOG_FILTERS[catalog]) if catalog in _CATALOG_FILTERS else sql.SQL(""),
        )
        for (catalog,) in db.execute(CATALOGS_SQL).fetchall()
    ]
    counts += [sql.SQL(query) for query in _EXTRA_COUNTS]
    total = sql.SQL(" + ").join(sql.SQL("({})").format(query) for query in counts)
    return int(db.execute(sql.SQL("SELECT {}").format(total)).fetchone()[0])


@dataclass(frozen=True)
class Target:
    """Where a restore of one database goes and what is there now."""

    database: str
    live: bool  # the component's own database (a restore "in place")
    exists: bool
    objects: int = 0  # user objects it holds (``count_objects``)
    allow_connections: bool = True

    @property
    def empty(self) -> bool:
        return self.objects == 0

    @property
    def replaces(self) -> bool:
        """Whether the restore would replace data (and so needs consent)."""
        return self.exists and (self.live or not self.empty)

    def describe(self) -> str:
        if not self.exists:
            return f"create database {self.database}" + (" (the live database does not exist)" if self.live else "")
        if self.live:
            return f"replace the live database {self.database}"
        if self.empty:
            return f"fill the existing empty database {self.database}"
        return f"replace the existing database {self.database} ({self.objects} user objects)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "live": self.live,
            "exists": self.exists,
            "replaces": self.replaces,
            "action": self.describe(),
        }


def inspect_target(admin: Any, conn: postgres.Connection, cfg: PostgresConfig, to_database: str | None) -> Target:
    """Judge a restore's target (read-only): the live database when ``to_database`` is None.
    UsageError for an empty name, a name that differs from an existing database only in case,
    quotes or surrounding spaces (PostgreSQL would make it a second database), the maintenance
    database aura-ops connects to, a template, or a database that refuses connections."""
    if to_database is not None and not to_database.strip():
        raise UsageError("--to-database needs a database name; it was empty")
    target = conn.dbname if to_database is None else to_database
    live = target == conn.dbname
    catalog = {
        row[0]: (row[1], row[2])
        for row in admin.execute("SELECT datname, datistemplate, datallowconn FROM pg_database").fetchall()
    }
    if target not in catalog:
        alike = sorted(name for name in catalog if _normal(name) == _normal(target))
        if alike:
            given = f"--to-database {target!r}" if to_database is not None else f"the database name {target!r}"
            raise UsageError(
                f"{given} differs from the existing database {alike[0]} only in case, quotes or spaces "
                f"(PostgreSQL would create a second database); give the exact name {alike[0]!r}"
            )
        return Target(target, live, exists=False)
    in_place_clean = live and cfg.restore_in_place == "clean"
    if target == cfg.maintenance_db and not in_place_clean:
        raise UsageError(
            f"{target} is the maintenance database aura-ops connects to (maintenance_db: {cfg.maintenance_db}); "
            "it cannot be replaced: restore into another database"
        )
    template, allowed = catalog[target]
    if template:
        raise UsageError(f"{target} is a template database; it is never a restore target")
    if not allowed:
        raise UsageError(f"database {target} does not accept connections (ALLOW_CONNECTIONS false); not touched")
    with contextlib.closing(postgres.connect(conn.with_db(target))) as db:
        objects = count_objects(db)
    return Target(target, live, exists=True, objects=objects, allow_connections=allowed)


# ---------------------------------------------------------------- building beside, putting in place


class _Untracked:
    """Stands for a journal record when no registry is bound (a library call, a unit test)."""

    released = False

    def update(self, **details: Any) -> None:
        return None

    def release(self) -> None:
        self.released = True


@contextlib.contextmanager
def _tracked(kind: str, name: str, on_exit: Callable[[], Any], **details: Any) -> Iterator[Any]:
    """``temporaries.track`` when a registry is bound; else ``on_exit`` unless released."""
    try:
        temporaries.current()
    except RuntimeError:
        record = _Untracked()
        try:
            yield record
        finally:
            if not record.released:
                on_exit()
        return
    with temporaries.track(kind, name, **details) as tracked:
        yield tracked


@contextlib.contextmanager
def temporary_database(admin: Any, component: str, dbname: str) -> Iterator[Any]:
    """Record ``dbname`` (kind ``pg_database``) before the block creates it; it is dropped on
    exit whatever happens, unless the block releases the record (it became permanent)."""
    with _tracked("pg_database", dbname, lambda: drop_database(admin, dbname), component=component) as record:
        yield record
        if not record.released:  # the usual way out: drop it here, on the open connection
            drop_database(admin, dbname)
            record.release()


def _set_allow_connections(admin: Any, dbname: str, allow: bool) -> None:
    from psycopg import sql

    row = admin.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
    if row is not None and row[0] != allow:
        admin.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                sql.Identifier(dbname), sql.SQL("true" if allow else "false")
            )
        )


def rename_away(admin: Any, live: str, new_name: str, fault: str | None = None) -> None:
    """Rename ``live`` to ``new_name`` with no session left on it (new ones refused first; on
    failure it accepts connections again)."""
    from psycopg import sql

    admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(live)))
    if fault:
        faults.point(f"{fault}:after-disallow")
    try:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (live,),
        )
        rename_database(admin, live, new_name)
    except BaseException:
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(live)))
        raise


def put_in_place(
    admin_conn: postgres.Connection,
    admin: Any,
    component: str,
    target: Target,
    recorded: postgres.PostgresManifest,
    fill: Callable[[str], float],
    check: Callable[[str], None] | None,
) -> float:
    """Build the snapshot's database beside ``target`` (``fill(name)`` restores into it, then
    ``check(name)``), give it the target's catalog properties (or the recorded ones when the
    target does not exist), and put it in the target's place. Returns ``fill``'s seconds.
    Journaled (kind ``pg_swap``): any failure or kill leaves the target whole (see ``settle``);
    a database error becomes an AuraError saying what the target holds."""
    import psycopg

    built, old = temp_name(target.database, NEW), temp_name(target.database, OLD)
    details = {
        "component": component,
        "built": built,
        "old": old,
        "existed": target.exists,
        "allow": target.allow_connections,
        "target_oid": oid_of(admin, target.database),
        "stage": "building",
    }
    with _tracked("pg_swap", target.database, lambda: settle(admin_conn, target.database, details), **details) as swap:
        try:
            seconds = _build_and_swap(admin, swap, details, component, target, recorded, fill, check)
        except BaseException as exc:
            failed = f"{component}: restore into {target.database} failed: {first_line(exc)}"
            try:
                outcome = settle(admin_conn, target.database, details)
            except SwapConflict as conflict:  # the record stays, saying why, until the user decides
                swap.update(conflict=str(conflict))
                raise SwapConflict(f"{failed}; {conflict}") from None
            except Exception as again:  # the record stays: the next command that takes the lock retries
                raise AuraError(
                    f"{failed}; putting {target.database} right failed too ({first_line(again)}): the next "
                    "aura-ops command that takes the lock retries it (aura-ops doctor lists it)"
                ) from None
            swap.release()
            if isinstance(exc, psycopg.Error):
                raise postgres.as_aura_error(
                    component, exc, f"restore into {target.database} failed", outcome
                ) from None
            raise
    return seconds


def _build_and_swap(
    admin: Any,
    swap: Any,
    details: dict[str, Any],
    component: str,
    target: Target,
    recorded: postgres.PostgresManifest,
    fill: Callable[[str], float],
    check: Callable[[str], None] | None,
) -> float:
    built, old = details["built"], details["old"]
    # the copy lives where the database it replaces lives; a recreated live database where it did
    if target.exists:
        props = read_properties(admin, target.database)
    else:
        props = recorded.database_properties if target.live else None
    create_database(admin, built, recorded, (props or {}).get("tablespace"))
    details["built_oid"] = oid_of(admin, built)  # what settle knows the copy by, whatever its name
    swap.update(built_oid=details["built_oid"])
    faults.point("swap:after-create")
    seconds = fill(built)
    if check is not None:
        check(built)
    if target.exists:
        copy_properties(admin, target.database, built)
    elif recorded.database_properties:
        apply_properties(admin, built, recorded.database_properties, full=target.live)
    else:
        logs.get().warning(
            "postgres.properties_unknown",
            database=target.database,
            reason="the snapshot records no database properties: owner, grants and settings are the defaults",
        )
    swap.update(stage="swapping")
    faults.point("swap:before-rename-away")
    if target.exists:
        rename_away(admin, target.database, old, fault="swap")
        faults.point("swap:after-rename-away")
    faults.point("swap:before-rename-in")
    rename_database(admin, built, target.database)
    swap.update(stage="swapped")
    faults.point("swap:after-rename-in")
    if target.exists:
        drop_database(admin, old)
    swap.release()
    logs.get().info("postgres.swapped" if target.exists else "postgres.created", database=target.database)
    return seconds


def settle(admin_conn: postgres.Connection, target: str, details: dict[str, Any]) -> str:
    """Bring ``target`` back to one whole database after a swap stopped anywhere (idempotent).
    Databases are told apart by oid (a rename keeps it): once the copy holds the target name,
    the old database is dropped; while it does not, the old database goes back to the target
    name (allowed connections again) and the copy is dropped. A state the swap itself cannot
    produce (the target name created again while the old database was renamed away) drops
    nothing of the user's: see ``_recreated``."""
    built, old = details["built"], details["old"]
    with contextlib.closing(postgres.connect(admin_conn, autocommit=True)) as admin:
        now = {name: oid_of(admin, name) for name in (target, built, old)}
        built_oid = details.get("built_oid")
        copy_in_place = now[target] is not None and (
            now[target] == built_oid
            # a record made before oids were recorded (or killed before it noted one): by names
            or (built_oid is None and now[built] is None and now[old] is not None)
        )
        if copy_in_place:
            if now[old] is None:
                return "nothing was left to do"
            drop_database(admin, old)
            logs.get().info("postgres.swap_finished", database=target)
            return f"{target} holds the restored database; its old one was dropped"
        if now[target] is not None and now[old] is not None:
            return _recreated(admin, admin_conn, target, details, now[built] is not None)
        if now[built] is None and now[old] is None:
            return "nothing was left to do"
        renamed = now[old] is not None  # the target name is free here
        if renamed:
            rename_database(admin, old, target)
        original = details.get("target_oid")
        if details.get("existed") and (renamed or original is None or now[target] == original):
            _set_allow_connections(admin, target, bool(details.get("allow", True)))
        if now[built] is not None:
            drop_database(admin, built)
        logs.get().info("postgres.swap_reverted", database=target, renamed_back=renamed)
        return f"{target} is left as it was" if details.get("existed") else f"{target} was not created"


def _recreated(
    admin: Any, admin_conn: postgres.Connection, target: str, details: dict[str, Any], built_exists: bool
) -> str:
    """The target name was created again while the old database was renamed away (a kill
    between the two renames, then a ``createdb`` or an application's provisioning). When the
    new database is really empty and nobody is connected to it, it holds nothing: it is dropped
    and the old database goes back. Otherwise both are kept: the old one accepts connections
    again under its temporary name, the record stays (doctor lists it, each command that takes
    the lock warns, a restore into ``target`` is refused) and SwapConflict says what to do."""
    built, old = details["built"], details["old"]
    log = logs.get()
    if built_exists:  # the restored copy: the snapshot still holds it
        drop_database(admin, built)
    if _drop_if_unused_and_empty(admin, admin_conn, target):
        rename_database(admin, old, target)
        _set_allow_connections(admin, target, bool(details.get("allow", True)))
        log.warning("postgres.swap_reverted", database=target, renamed_back=True, dropped_recreated_empty=True)
        return (
            f"{target} had been created again, empty, while its database was renamed away: the empty one was "
            f"dropped and {target} is left as it was"
        )
    _set_allow_connections(admin, old, True)
    raise SwapConflict(
        f"database {target} was created again while a killed restore had renamed the real one away: your "
        f"data is in database {old} (it accepts connections again). Drop or rename the new {target} (the next "
        f"aura-ops command that takes the lock then renames {old} back), or keep the new one and drop {old}"
    )


def _drop_if_unused_and_empty(admin: Any, admin_conn: postgres.Connection, dbname: str) -> bool:
    """Drop ``dbname`` when it holds no user object and no other session uses it; True when
    dropped. New connections are refused while it is judged (a session that got in before is
    seen), and allowed again when it is kept."""
    import psycopg
    from psycopg import sql

    try:
        with contextlib.closing(postgres.connect(admin_conn.with_db(dbname), autocommit=True)) as db:
            if count_objects(db):
                return False
            _set_allow_connections(admin, dbname, False)
            others = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> %s"
                " AND backend_type = 'client backend'",
                (dbname, db.info.backend_pid),
            ).fetchone()[0]
            empty = not others and not count_objects(db)  # judged again: nobody can come in now
        if empty:
            admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(dbname)))
            return True
    except (psycopg.Error, AuraError) as exc:
        logs.get().warning("postgres.recreated_kept", database=dbname, reason=first_line(exc))
    with contextlib.suppress(psycopg.Error):
        _set_allow_connections(admin, dbname, True)
    return False


def refuse_unsettled(component: str, dbname: str) -> None:
    """SwapConflict when an earlier swap into ``dbname`` could not be settled (its record is
    still in the journal after the sweep): restoring over it could lose the only copy."""
    try:
        _, registry = temporaries.current()
    except RuntimeError:
        return
    for record in registry.all():
        if record.kind == "pg_swap" and record.name == dbname and record.details.get("component") == component:
            reason = record.details.get("conflict") or "aura-ops doctor lists it"
            raise SwapConflict(f"{component}: an earlier restore into {dbname} is not settled: {reason}")


# ---------------------------------------------------------------- journal handlers


def _admin_of(config: Any, component: str) -> postgres.Connection:
    cfg = config.component(component)
    if not isinstance(cfg, PostgresConfig):
        raise AuraError(f"component {component} is not a postgres component")
    return postgres.connection(component, cfg).with_db(cfg.maintenance_db)


def settle_recorded(config: Any, record: temporaries.Temporary) -> str:
    """Handler of kind ``pg_swap``: finish or revert a swap a killed process left. A conflict
    (``_recreated``) keeps the record with its reason, for doctor and the next commands."""
    try:
        return settle(_admin_of(config, record.details["component"]), record.name, record.details)
    except SwapConflict as conflict:
        if record.details.get("conflict") != str(conflict):
            record.update(conflict=str(conflict))
        raise


def drop_recorded(config: Any, record: temporaries.Temporary) -> str:
    """Handler of kind ``pg_database``: drop a staging, scratch or half-built database."""
    with contextlib.closing(postgres.connect(_admin_of(config, record.details["component"]), autocommit=True)) as admin:
        if not exists(admin, record.name):
            return "already gone"
        drop_database(admin, record.name)
    return "database dropped"
