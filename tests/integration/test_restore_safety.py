"""A database restore never replaces data without consent, never misses its target, recreates a
database that no longer exists with its database-level properties, and applies `--globals`
without changing roles that already exist. Real PostgreSQL, the real CLI."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from aura_ops.dev.sandbox import PostgresCluster
from tests.conftest import Aura, base_config, db_component
from tests.pgdata import fingerprint


@pytest.fixture
def shop(pg: PostgresCluster, database: str, aura: Aura) -> str:
    """A small database with data, configured as component `db`."""
    dsn = pg.dsn(database)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE orders (id serial PRIMARY KEY, item text);"
            " INSERT INTO orders (item) SELECT 'item' || g FROM generate_series(1, 500) g"
        )
    aura.env["AURA_DB_DSN"] = dsn
    aura.write_config(base_config({"db": db_component()}))
    return dsn


def change(dsn: str) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM orders WHERE id % 3 = 0; INSERT INTO orders (item) VALUES ('after the snapshot')")
    return fingerprint(dsn)


def databases(pg: PostgresCluster, prefix: str) -> list[str]:
    rows = pg.sql(f"SELECT datname FROM pg_database WHERE starts_with(lower(datname), lower('{prefix}')) ORDER BY 1")
    return [str(r[0]) for r in rows]


# ---------------------------------------------------------------- consent and target


def test_to_database_naming_the_live_database_needs_consent(
    pg: PostgresCluster, database: str, shop: str, aura: Aura
) -> None:
    snapshot = fingerprint(shop)
    aura("backup")
    changed = change(shop)

    refused = aura("restore", "latest", "--to-database", database, check=2)
    assert f"live database {database}" in refused.stderr and "--yes" in refused.stderr
    assert fingerprint(shop) == changed

    aura("restore", "latest", "--to-database", database, "--yes")
    assert fingerprint(shop) == snapshot
    assert databases(pg, database) == [database]


def _answer_on_a_terminal(aura: Aura, answer: bytes, *args: str) -> tuple[int, str]:
    """Run a restore with a terminal as its stdin; answer its question. (exit code, stderr)"""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "aura_ops", "--config", str(aura.config_path), "restore", *args],
        env=aura.env,
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    os.close(slave)
    try:
        assert process.stderr is not None
        os.set_blocking(process.stderr.fileno(), False)
        asked, deadline = b"", time.monotonic() + 120
        while b"[y/N]" not in asked and process.poll() is None and time.monotonic() < deadline:
            asked += process.stderr.read() or b""
            time.sleep(0.05)
        assert b"[y/N]" in asked, asked
        os.write(master, answer + b"\n")
        os.set_blocking(process.stderr.fileno(), True)
        _, rest = process.communicate(timeout=300)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, (asked + rest).decode()


def test_on_a_terminal_the_question_names_the_live_database_and_no_keeps_it(
    pg: PostgresCluster, database: str, shop: str, aura: Aura
) -> None:
    snapshot = fingerprint(shop)
    aura("backup")
    changed = change(shop)
    for spelling in ([], ["--to-database", database]):
        code, err = _answer_on_a_terminal(aura, b"n", "latest", *spelling)
        assert code == 2 and f"replace the live database {database} (component db)" in err, err
        assert "not confirmed; nothing was changed" in err
        assert fingerprint(shop) == changed
    code, err = _answer_on_a_terminal(aura, b"y", "latest")
    assert code == 0, err
    assert fingerprint(shop) == snapshot
    assert databases(pg, database) == [database]


def test_a_dsn_without_a_database_name_means_the_database_libpq_reaches(
    pg: PostgresCluster, database: str, shop: str, aura: Aura
) -> None:
    """No dbname in the DSN: libpq connects to PGDATABASE (else the user's name). aura-ops took
    the user's name (postgres) for the live database while the driver reached PGDATABASE, so the
    backup failed ("cannot import a snapshot from a different database") and a restore aimed at
    another database than the one its component backs up."""
    aura.env["AURA_DB_DSN"] = f"postgresql://postgres@127.0.0.1:{pg.port}"
    aura.env["PGDATABASE"] = database
    snapshot = fingerprint(shop)
    backup = aura("backup")
    assert f"database {database} on" in backup.stderr
    changed = change(shop)

    refused = aura("restore", "latest", check=2)
    assert f"live database {database} (component db)" in refused.stderr
    assert fingerprint(shop) == changed
    aura("restore", "latest", "--yes")
    assert fingerprint(shop) == snapshot
    assert databases(pg, database) == [database]


def test_a_dsn_naming_a_service_means_the_database_of_the_service_file(
    pg: PostgresCluster, database: str, shop: str, aura: Aura, tmp_path: Path
) -> None:
    """service=NAME (database, host and user in a pg_service.conf): the backup dumped the
    service's database while an in-place restore took $USER for the live database, recreated
    a database of that name beside it, said it had restored it, and left the live one as it was."""
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[shop]\nhost=127.0.0.1\nport={pg.port}\ndbname={database}\nuser=postgres\n")
    aura.env["AURA_DB_DSN"] = "service=shop"
    aura.env["PGSERVICEFILE"] = str(services)
    aura.env["USER"] = f"{database}_user"  # what the restore took for the live database
    snapshot = fingerprint(shop)
    backup = aura("backup")
    assert f"database {database} on" in backup.stderr
    changed = change(shop)
    refused = aura("restore", "latest", check=2)
    assert f"live database {database} (component db)" in refused.stderr
    assert fingerprint(shop) == changed
    done = aura("restore", "latest", "--yes")
    assert f"into {database} " in done.stdout + done.stderr
    assert fingerprint(shop) == snapshot
    assert databases(pg, database) == [database]


def test_an_empty_database_name_is_a_usage_error_even_with_yes(shop: str, aura: Aura) -> None:
    aura("backup")
    changed = change(shop)
    for args in (["--to-database", ""], ["--to-database", "  "], ["--to-database", "", "--yes"]):
        result = aura("restore", "latest", *args, check=2)
        assert "--to-database" in result.stderr
    assert fingerprint(shop) == changed


def test_a_name_differing_only_in_case_or_quotes_is_refused_naming_the_existing_database(
    pg: PostgresCluster, database: str, shop: str, aura: Aura
) -> None:
    aura("backup")
    changed = change(shop)
    for spelling in (database.upper(), f'"{database}"', f" {database}"):
        result = aura("restore", "latest", "--to-database", spelling, "--yes", check=2)
        assert f"existing database {database}" in result.stderr
    assert fingerprint(shop) == changed
    assert databases(pg, database) == [database]  # nothing created under a look-alike name


def test_an_existing_non_empty_database_is_replaced_only_with_consent(
    pg: PostgresCluster, database: str, shop: str, aura: Aura
) -> None:
    snapshot = fingerprint(shop)
    aura("backup")
    other = f"{database}_other"
    pg.sql(f'CREATE DATABASE "{other}"')
    pg.sql("CREATE TABLE notes (n text); INSERT INTO notes VALUES ('keep me')", other)
    pg.sql(f"ALTER DATABASE \"{other}\" SET work_mem = '3MB'")
    held = fingerprint(pg.dsn(other))

    refused = aura("restore", "latest", "--to-database", other, check=2)
    assert f"existing database {other}" in refused.stderr and "--yes" in refused.stderr
    assert fingerprint(pg.dsn(other)) == held

    aura("restore", "latest", "--to-database", other, "--yes")
    assert fingerprint(pg.dsn(other)) == snapshot
    # the replaced database's own settings stay with its name
    assert pg.sql(
        f"SELECT setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
        f"WHERE d.datname = '{other}'"
    ) == [(["work_mem=3MB"],)]
    assert databases(pg, database) == sorted([database, other])
    # the maintenance database (where aura-ops connects to create and rename) never is
    assert (
        "postgres is the maintenance database"
        in aura("restore", "latest", "--to-database", "postgres", "--yes", check=2).stderr
    )


def test_an_existing_empty_database_is_filled_without_asking(
    pg: PostgresCluster, database: str, shop: str, aura: Aura
) -> None:
    snapshot = fingerprint(shop)
    aura("backup")
    empty = f"{database}_empty"
    pg.sql(f'CREATE DATABASE "{empty}"')
    aura("restore", "latest", "--to-database", empty)
    assert fingerprint(pg.dsn(empty)) == snapshot


# One kind of object each, alone in a database: each makes it "not empty" (pg_dump would dump it).
LONE_OBJECTS = {
    "empty schema": "CREATE SCHEMA s",
    "sequence": "CREATE SEQUENCE q",
    "publication": "CREATE PUBLICATION p",
    "collation": 'CREATE COLLATION c FROM "C"',
    "text search configuration": "CREATE TEXT SEARCH CONFIGURATION ts (COPY = english)",
    "text search dictionary": "CREATE TEXT SEARCH DICTIONARY d (TEMPLATE = simple)",
    "default privileges": "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC",
    "foreign data wrapper": "CREATE FOREIGN DATA WRAPPER w",
    "cast": "CREATE CAST (text AS integer) WITH INOUT",
    "operator": "CREATE OPERATOR === (LEFTARG = integer, RIGHTARG = integer, FUNCTION = int4eq)",
    "operator family": "CREATE OPERATOR FAMILY f USING btree",
    "conversion": "CREATE CONVERSION cv FOR 'LATIN1' TO 'UTF8' FROM iso8859_1_to_utf8",
    "access method": "CREATE ACCESS METHOD heap2 TYPE TABLE HANDLER heap_tableam_handler",
    "large object with a chosen oid": "SELECT lo_create(1000)",
}


def test_a_database_holding_any_one_kind_of_object_is_not_empty_and_a_fresh_one_is(
    pg: PostgresCluster, database: str
) -> None:
    """pgdatabase.count_objects, the judge of "empty" (no consent needed), on the real server:
    a fresh database, one where a session once used a temporary table, and one whose public
    schema was dropped and created again are empty; each kind of object alone is not."""
    from aura_ops.components.postgres.database import count_objects

    def objects(dbname: str) -> int:
        with psycopg.connect(pg.dsn(dbname), autocommit=True) as conn:
            return count_objects(conn)

    assert objects(database) == 0
    pg.sql("CREATE TEMP TABLE scratch (n int)", database)  # leaves pg_temp_N behind
    pg.sql("DROP SCHEMA public; CREATE SCHEMA public", database)
    pg.sql(f"COMMENT ON DATABASE \"{database}\" IS 'a comment is not content'")
    assert objects(database) == 0
    found = {}
    for number, (kind, statement) in enumerate(LONE_OBJECTS.items()):
        name = f"{database}_{number}"
        pg.create_database(name)
        pg.sql(statement, name)
        found[kind] = objects(name)
    assert [kind for kind, count in found.items() if count == 0] == []


def test_dry_run_names_what_would_be_replaced_and_changes_nothing(
    pg: PostgresCluster, database: str, shop: str, aura: Aura
) -> None:
    aura("backup")
    changed = change(shop)
    report = aura.json("restore", "latest", "--dry-run")
    assert any(f"replace the live database {database}" in line for line in report["components"]["db"]["changes"])
    report = aura.json("restore", "latest", "--dry-run", "--to-database", f"{database}_new")
    assert any(f"create database {database}_new" in line for line in report["components"]["db"]["changes"])
    assert fingerprint(shop) == changed
    assert databases(pg, database) == [database]


# ---------------------------------------------------------------- a database that no longer exists

PROPERTIES = """
SELECT pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, d.datconnlimit,
       (SELECT array_agg(a::text ORDER BY a::text) FROM unnest(d.datacl) a),
       (SELECT array_agg(coalesce(r.rolname, '-') || ':' || c ORDER BY r.rolname, c)
          FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole, unnest(s.setconfig) c
         WHERE s.setdatabase = d.oid),
       shobj_description(d.oid, 'pg_database')
FROM pg_database d WHERE d.datname = %s
"""


def properties(dsn: str, name: str) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(PROPERTIES, (name,)).fetchone()


def give_properties(pg: PostgresCluster, database: str, owner: str, reader: str) -> None:
    pg.sql(f'ALTER DATABASE "{database}" OWNER TO "{owner}"')
    pg.sql(f'REVOKE ALL ON DATABASE "{database}" FROM PUBLIC')
    pg.sql(f'GRANT CONNECT, TEMPORARY ON DATABASE "{database}" TO "{reader}" WITH GRANT OPTION')
    pg.sql(f'ALTER DATABASE "{database}" SET search_path = app, "$user", public')
    pg.sql(f"ALTER DATABASE \"{database}\" SET work_mem = '7MB'")
    pg.sql(f'ALTER ROLE "{reader}" IN DATABASE "{database}" SET statement_timeout = 1234')
    pg.sql(f'ALTER DATABASE "{database}" CONNECTION LIMIT 40')
    pg.sql(f"COMMENT ON DATABASE \"{database}\" IS 'the shop''s data'")


def drop_roles(pg: PostgresCluster, *roles: str) -> None:
    for role in roles:
        if not pg.sql(f"SELECT 1 FROM pg_roles WHERE rolname = '{role}'"):
            continue
        for (name,) in pg.sql("SELECT datname FROM pg_database WHERE datallowconn"):
            pg.sql(f'DROP OWNED BY "{role}" CASCADE', str(name))
        pg.sql(f'DROP ROLE "{role}"')


def test_a_dropped_database_is_recreated_in_place_with_its_properties(
    pg: PostgresCluster, database: str, shop: str, aura: Aura
) -> None:
    owner, reader = f"own_{database}", f"rd_{database}"
    pg.sql(f'CREATE ROLE "{owner}"; CREATE ROLE "{reader}"')
    try:
        give_properties(pg, database, owner, reader)
        before = properties(pg.dsn(), database)
        snapshot = fingerprint(shop)
        aura("backup")
        pg.sql(f'DROP DATABASE "{database}" WITH (FORCE)')

        report = aura.json("restore", "latest")  # nothing is replaced: no confirmation needed
        assert report["components"]["db"]["database"] == database
        assert fingerprint(shop) == snapshot
        assert properties(pg.dsn(), database) == before
        assert databases(pg, database) == [database]
    finally:
        pg.sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        drop_roles(pg, owner, reader)


LOCALE = (
    "SELECT pg_encoding_to_char(encoding), datcollate, datctype, datlocprovider, daticulocale"
    " FROM pg_database WHERE datname = %s"
)


@pytest.mark.parametrize(
    "create",
    [
        "LOCALE_PROVIDER icu ICU_LOCALE 'de-DE' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'",
        "ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' LOCALE_PROVIDER libc",
    ],
    ids=["icu", "latin1"],
)
def test_a_database_keeps_its_encoding_collation_and_locale_provider_however_it_is_restored(
    pg: PostgresCluster, aura: Aura, create: str
) -> None:
    """An ICU database sorts by its ICU locale: recreated as a libc one (the provider and locale
    were not recorded) its order by text changed after a restore in place, into a new name, or
    of a dropped database."""
    name = f"loc_{os.getpid()}_{create[:3].lower()}"
    pg.sql(f'CREATE DATABASE "{name}" TEMPLATE template0 {create}')
    try:
        pg.sql("CREATE TABLE words (w text); INSERT INTO words VALUES ('b'), ('a'), ('B'), ('A')", name)
        locale = pg.sql(LOCALE % f"'{name}'")
        order = pg.sql("SELECT string_agg(w, ',' ORDER BY w) FROM words", name)
        aura.env["AURA_DB_DSN"] = pg.dsn(name)
        aura.write_config(base_config({"db": db_component()}))
        aura("backup")
        aura("restore", "latest", "--yes")  # in place: the swap's copy is created like the live one
        aura("restore", "latest", "--to-database", f"{name}_copy")
        pg.sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        aura("restore", "latest")  # recreated, as pg_restore --create would
        for database in (name, f"{name}_copy"):
            assert pg.sql(LOCALE % f"'{database}'") == locale, database
            assert pg.sql("SELECT string_agg(w, ',' ORDER BY w) FROM words", database) == order, database
    finally:
        for database in (name, f"{name}_copy"):
            pg.sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def test_a_database_in_its_own_tablespace_stays_there_in_place_and_when_recreated(
    pg: PostgresCluster, aura: Aura
) -> None:
    """The swap's copy was built in the default tablespace whatever the live database's was (a
    database on its own disk moved to the server's main one by a restore), and a dropped database
    came back there too; pg_restore --create keeps it where it was."""
    import pwd

    location = Path(tempfile.mkdtemp(prefix="aura-ts-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(location, account.pw_uid, account.pw_gid)
    name, shelf = f"ts_{os.getpid()}", f"shelf_{os.getpid()}"
    where = "SELECT t.spcname FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE d.datname = '%s'"
    try:
        pg.sql(f"CREATE TABLESPACE \"{shelf}\" LOCATION '{location}'")
        pg.sql(f'CREATE DATABASE "{name}" TABLESPACE "{shelf}"')
        pg.sql("CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 100)", name)
        aura.env["AURA_DB_DSN"] = pg.dsn(name)
        aura.write_config(base_config({"db": db_component()}))
        snapshot = fingerprint(pg.dsn(name))
        aura("backup")
        pg.sql("DELETE FROM t WHERE n > 50", name)
        aura("restore", "latest", "--yes")
        assert pg.sql(where % name) == [(shelf,)]
        assert fingerprint(pg.dsn(name)) == snapshot
        pg.sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        aura("restore", "latest")
        assert pg.sql(where % name) == [(shelf,)]
        assert fingerprint(pg.dsn(name)) == snapshot
        aura("restore", "latest", "--to-database", f"{name}_copy")  # a new name: the server's default
        assert pg.sql(where % f"{name}_copy") == [("pg_default",)]
        pg.sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        pg.sql(f'DROP TABLESPACE "{shelf}"')  # a server without it: the default one, with a warning
        result = aura("restore", "latest")
        assert "postgres.tablespace_missing" in result.stderr and shelf in result.stderr
        assert pg.sql(where % name) == [("pg_default",)]
        assert fingerprint(pg.dsn(name)) == snapshot
    finally:
        for database in (name, f"{name}_copy"):
            pg.sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        pg.sql(f'DROP TABLESPACE IF EXISTS "{shelf}"')
        shutil.rmtree(location, ignore_errors=True)


def test_an_in_place_restore_into_a_tablespace_the_role_cannot_use_names_the_privilege(
    pg: PostgresCluster, aura: Aura
) -> None:
    """A role owning a database in a tablespace it has no CREATE on (the DBA made it there):
    the swap's copy cannot be made there; the refusal said 'permission denied for tablespace
    (the role needs SELECT on the table)'. Nothing is touched; with the grant it is restored there."""
    import pwd

    location = Path(tempfile.mkdtemp(prefix="aura-ts-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(location, account.pw_uid, account.pw_gid)
    name, shelf, role = f"tsr_{os.getpid()}", f"shelfr_{os.getpid()}", f"tsrole_{os.getpid()}"
    where = "SELECT t.spcname FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE d.datname = '%s'"
    try:
        pg.sql(f"CREATE TABLESPACE \"{shelf}\" LOCATION '{location}'")
        pg.sql(f'CREATE ROLE "{role}" LOGIN CREATEDB')
        pg.sql(f'CREATE DATABASE "{name}" OWNER "{role}" TABLESPACE "{shelf}"')
        pg.sql("CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 100)", name)
        pg.sql(f'ALTER TABLE t OWNER TO "{role}"', name)
        aura.env["AURA_DB_DSN"] = pg.dsn(name, user=role)
        aura.write_config(base_config({"db": db_component()}))
        snapshot = fingerprint(pg.dsn(name))
        aura("backup")
        pg.sql("DELETE FROM t WHERE n > 50", name)
        changed = fingerprint(pg.dsn(name))
        refused = aura("restore", "latest", "--yes", check=1)
        assert f"permission denied for tablespace {shelf} (the role needs CREATE on the tablespace)" in refused.stderr
        assert fingerprint(pg.dsn(name)) == changed and pg.sql(where % name) == [(shelf,)]
        pg.sql(f'GRANT CREATE ON TABLESPACE "{shelf}" TO "{role}"')
        aura("restore", "latest", "--yes")
        assert fingerprint(pg.dsn(name)) == snapshot and pg.sql(where % name) == [(shelf,)]
    finally:
        pg.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        pg.sql(f'DROP TABLESPACE IF EXISTS "{shelf}"')
        pg.sql(f'DROP ROLE IF EXISTS "{role}"')
        shutil.rmtree(location, ignore_errors=True)


def test_a_recreated_database_whose_owner_is_missing_is_owned_by_the_restoring_role(
    pg: PostgresCluster, database: str, shop: str, aura: Aura
) -> None:
    owner, reader = f"own_{database}", f"rd_{database}"
    pg.sql(f'CREATE ROLE "{owner}"; CREATE ROLE "{reader}"')
    try:
        give_properties(pg, database, owner, reader)
        aura("backup")
        pg.sql(f'DROP DATABASE "{database}" WITH (FORCE)')
        drop_roles(pg, owner)
        result = aura("restore", "latest")
        assert f"role {owner} does not exist" in result.stderr  # warned, then skipped
        row = properties(pg.dsn(), database)
        assert row[0] == "postgres" and row[7] == "the shop's data" and row[4] == 40
    finally:
        pg.sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        drop_roles(pg, owner, reader)


def test_a_new_name_gets_the_recorded_database_settings_but_not_owner_or_grants(
    pg: PostgresCluster, database: str, shop: str, aura: Aura
) -> None:
    owner, reader = f"own_{database}", f"rd_{database}"
    pg.sql(f'CREATE ROLE "{owner}"; CREATE ROLE "{reader}"')
    try:
        give_properties(pg, database, owner, reader)
        aura("backup")
        copy = f"{database}_copy"
        aura("restore", "latest", "--to-database", copy)
        row = properties(pg.dsn(), copy)
        assert row[0] == "postgres" and row[4] == -1 and row[5] is None
        assert row[6] == ['-:search_path=app, "$user", public', "-:work_mem=7MB"]
    finally:
        pg.sql(f'DROP DATABASE IF EXISTS "{database}_copy" WITH (FORCE)')
        pg.sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        drop_roles(pg, owner, reader)


# ---------------------------------------------------------------- --globals

ROLE_STATE = """
SELECT a.rolname, a.rolsuper, a.rolinherit, a.rolcreaterole, a.rolcreatedb, a.rolcanlogin, a.rolconnlimit,
       a.rolpassword, a.rolvaliduntil,
       (SELECT array_agg(g.rolname || ':' || m.admin_option ORDER BY g.rolname)
          FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = a.oid),
       (SELECT array_agg(c ORDER BY c) FROM pg_db_role_setting s, unnest(s.setconfig) c
         WHERE s.setrole = a.oid AND s.setdatabase = 0),
       shobj_description(a.oid, 'pg_authid')
FROM pg_authid a WHERE a.rolname = %s
"""


def role_state(dsn: str, role: str) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(ROLE_STATE, (role,)).fetchone()


@pytest.fixture
def app_role(pg: PostgresCluster, database: str) -> Any:
    app, group = f"app_{database}", f"grp_{database}"
    pg.sql(f"CREATE ROLE \"{group}\"; CREATE ROLE \"{app}\" LOGIN PASSWORD 'first;pass''word' CONNECTION LIMIT 5")
    pg.sql(f'GRANT "{group}" TO "{app}"')
    pg.sql(f"ALTER ROLE \"{app}\" SET work_mem = '5MB'")
    pg.sql(f"COMMENT ON ROLE \"{app}\" IS 'the app''s role'")
    yield app, group
    drop_roles(pg, app, group)


def test_globals_never_change_an_existing_role(
    pg: PostgresCluster, database: str, shop: str, aura: Aura, app_role: Any
) -> None:
    app, group = app_role
    aura("backup")
    pg.sql(f"ALTER ROLE \"{app}\" NOLOGIN PASSWORD 'second' CONNECTION LIMIT 9")
    pg.sql(f'REVOKE "{group}" FROM "{app}"')
    pg.sql(f"ALTER ROLE \"{app}\" SET work_mem = '9MB'")
    pg.sql(f"COMMENT ON ROLE \"{app}\" IS 'changed'")
    now = role_state(pg.dsn(), app)

    report = aura.json("restore", "latest", "--globals", "--to-database", f"{database}_copy")
    globals_ = report["components"]["db"]["globals"]
    assert app in globals_["roles_left"] and "postgres" in globals_["roles_left"]
    assert globals_["roles_created"] == []
    assert role_state(pg.dsn(), app) == now
    human = aura("restore", "latest", "--globals", "--to-database", f"{database}_copy2")
    assert "left as they were" in human.stdout and "--globals-overwrite" in human.stdout
    assert role_state(pg.dsn(), app) == now


def test_globals_overwrite_puts_existing_roles_back_as_recorded(
    pg: PostgresCluster, database: str, shop: str, aura: Aura, app_role: Any
) -> None:
    app, group = app_role
    recorded = role_state(pg.dsn(), app)
    aura("backup")
    pg.sql(f"ALTER ROLE \"{app}\" NOLOGIN PASSWORD 'second' CONNECTION LIMIT 9")
    pg.sql(f'REVOKE "{group}" FROM "{app}"')
    pg.sql(f"ALTER ROLE \"{app}\" SET work_mem = '9MB'")
    report = aura.json("restore", "latest", "--globals-overwrite", "--to-database", f"{database}_copy")
    assert app in report["components"]["db"]["globals"]["roles_overwritten"]
    assert role_state(pg.dsn(), app) == recorded


def test_a_fresh_server_gets_missing_roles_and_the_database_with_its_owner(
    pg: PostgresCluster, database: str, shop: str, aura: Aura, app_role: Any
) -> None:
    app, group = app_role
    pg.sql(f'ALTER DATABASE "{database}" OWNER TO "{app}"')
    pg.sql(f'GRANT CONNECT ON DATABASE "{database}" TO "{group}"')
    recorded = role_state(pg.dsn(), app)
    snapshot = fingerprint(shop)
    snapshot_id = aura.json("backup")["id"]
    pg.sql(f'ALTER DATABASE "{database}" OWNER TO postgres')
    with PostgresCluster() as fresh:
        aura.env["AURA_DB_DSN"] = fresh.dsn(database)  # the live database does not exist there
        report = aura.json("restore", snapshot_id, "--globals")
        globals_ = report["components"]["db"]["globals"]
        assert {app, group} <= set(globals_["roles_created"])
        assert globals_["roles_left"] == ["postgres"]
        assert f"{group} -> {app}" in globals_["memberships_granted"]
        assert role_state(fresh.dsn(), app) == recorded  # attributes, password hash, membership, settings
        assert fingerprint(fresh.dsn(database)) == snapshot
        assert properties(fresh.dsn(), database)[0] == app


def test_tablespaces_are_created_only_where_their_location_can_be_used(aura: Aura, tmp_path: Path) -> None:
    import pwd

    location = Path(tempfile.mkdtemp(prefix="aura-ts-"))
    account = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    if account:
        os.chown(location, account.pw_uid, account.pw_gid)
    try:
        with PostgresCluster() as source:
            source.sql(f"CREATE TABLESPACE shelf LOCATION '{location}'")
            source.sql("CREATE DATABASE app")
            source.sql("CREATE TABLE t (n int); INSERT INTO t VALUES (1)", "app")
            aura.env["AURA_DB_DSN"] = source.dsn("app")
            aura.write_config(base_config({"db": db_component()}))
            snapshot_id = aura.json("backup")["id"]
            with PostgresCluster() as target:
                aura.env["AURA_DB_DSN"] = target.dsn("app")
                first = aura.json("restore", snapshot_id, "--globals", "--to-database", "one")
                missing = first["components"]["db"]["globals"]["tablespaces_not_created"]
                assert [m["name"] for m in missing] == ["shelf"] and "already in use" in missing[0]["reason"]
                source.sql("DROP TABLESPACE shelf")  # its folder is free now
                second = aura.json("restore", snapshot_id, "--globals", "--to-database", "two")
                assert second["components"]["db"]["globals"]["tablespaces_created"] == ["shelf"]
                assert target.sql("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'shelf'") == [
                    (str(location),)
                ]
                target.sql("DROP TABLESPACE shelf")
    finally:
        shutil.rmtree(location, ignore_errors=True)


def test_dry_run_with_globals_says_which_roles_would_be_created_and_changes_nothing(
    pg: PostgresCluster, database: str, shop: str, aura: Aura, app_role: Any
) -> None:
    app, _group = app_role
    snapshot_id = aura.json("backup")["id"]
    with PostgresCluster() as fresh:
        aura.env["AURA_DB_DSN"] = fresh.dsn(database)
        report = aura.json("restore", snapshot_id, "--globals", "--dry-run")
        assert app in report["components"]["db"]["globals"]["roles_created"]
        assert fresh.sql(f"SELECT count(*) FROM pg_roles WHERE rolname = '{app}'") == [(0,)]
        assert fresh.sql(f"SELECT count(*) FROM pg_database WHERE datname = '{database}'") == [(0,)]
