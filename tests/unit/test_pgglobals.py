"""Reading pg_dumpall's globals script: statements split where psql would, each judged by the
role or tablespace it is about, and the plan leaves existing roles alone."""

from __future__ import annotations

from aura_ops.components.postgres import globals as pgglobals

LINES = [
    "--",
    "-- PostgreSQL database cluster dump",
    "--",
    "",
    "\\restrict 97uRF3DZtIQptSHd20ziG0HrSognVfC3TP10MZgsLVIxAQjhKWwl1srweJqGJhD",
    "",
    "SET default_transaction_read_only = off;",
    "",
    "SET client_encoding = 'UTF8';",
    "SET standard_conforming_strings = on;",
    "",
    'CREATE ROLE "Odd ""Role""";',
    'ALTER ROLE "Odd ""Role""" WITH NOSUPERUSER INHERIT NOLOGIN;',
    "CREATE ROLE app;",
    "ALTER ROLE app WITH LOGIN CONNECTION LIMIT 5 PASSWORD 'SCRAM-SHA-256$4096:a;b--c' VALID UNTIL '2030-01-01';",
    "COMMENT ON ROLE app IS 'line1",
    "line2; with ''quote''';",
    "CREATE ROLE postgres;",
    "ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;",
    "ALTER ROLE app SET search_path TO 'a', '$user';",
    "",
    'GRANT "Odd ""Role""" TO app GRANTED BY postgres;',
    "GRANT app TO postgres WITH ADMIN OPTION GRANTED BY postgres;",
    "",
    "CREATE TABLESPACE ts1 OWNER postgres LOCATION '/srv/it''s here';",
    "GRANT ALL ON TABLESPACE ts1 TO app;",
    "COMMENT ON TABLESPACE ts1 IS 'one';",
    "ALTER SYSTEM SET work_mem = '4MB';",
    "",
    "\\unrestrict 97uRF3DZtIQptSHd20ziG0HrSognVfC3TP10MZgsLVIxAQjhKWwl1srweJqGJhD",
]
SCRIPT = "\n".join(LINES) + "\n"


def test_statements_split_where_psql_would_with_quotes_comments_and_meta_commands() -> None:
    statements = pgglobals.split(SCRIPT)
    assert statements[0] == "SET default_transaction_read_only = off"
    assert not any(s.startswith("\\") or "restrict" in s for s in statements)
    assert any("PASSWORD 'SCRAM-SHA-256$4096:a;b--c'" in s for s in statements)
    assert "COMMENT ON ROLE app IS 'line1\nline2; with ''quote'''" in statements
    assert len(statements) == 17


def test_each_statement_is_judged_by_the_object_it_is_about() -> None:
    kinds = [(s.kind, s.subject, s.creates) for s in pgglobals.parse(SCRIPT)]
    assert kinds[3:5] == [("role", 'Odd "Role"', True), ("role", 'Odd "Role"', False)]
    assert ("role", "app", False) in kinds and ("role", "postgres", True) in kinds
    memberships = [s for s in pgglobals.parse(SCRIPT) if s.kind == "membership"]
    assert [(m.granted, m.members) for m in memberships] == [(('Odd "Role"',), ("app",)), (("app",), ("postgres",))]
    spaces = [s for s in pgglobals.parse(SCRIPT) if s.kind == "tablespace"]
    assert [(s.subject, s.creates) for s in spaces] == [("ts1", True), ("ts1", False), ("ts1", False)]
    assert spaces[0].location == "/srv/it's here"
    assert kinds[-1] == ("other", "ALTER SYSTEM SET", False)


def test_the_plan_creates_missing_roles_and_leaves_existing_ones() -> None:
    plan = pgglobals.plan(pgglobals.parse(SCRIPT), roles={"postgres"}, tablespaces=set(), overwrite=False)
    assert plan["roles_created"] == ['Odd "Role"', "app"]
    assert plan["roles_left"] == ["postgres"] and plan["roles_overwritten"] == []
    # the membership whose member exists already is not granted: that would change postgres
    assert plan["memberships_granted"] == ['Odd "Role" -> app']
    assert plan["memberships_left"] == ["app -> postgres"]
    assert plan["tablespaces_created"] == ["ts1"]
    assert plan["skipped"] == ["ALTER SYSTEM SET"]
    forced = pgglobals.plan(pgglobals.parse(SCRIPT), roles={"postgres", "app"}, tablespaces={"ts1"}, overwrite=True)
    assert forced["roles_overwritten"] == ["app", "postgres"] and forced["roles_left"] == []
    assert forced["memberships_left"] == []
    assert forced["tablespaces_overwritten"] == ["ts1"]
