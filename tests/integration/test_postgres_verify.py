"""Database checksums never report a false mismatch, and ``snapshots verify`` checks the dump as
the manifest lists it."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from aura_ops.components.postgres import database_facts
from aura_ops.dev.sandbox import PostgresCluster
from tests.conftest import Aura, base_config, db_component

# Every common data type, inheritance children whose columns are in another order than their
# parent's (one of them with a dropped column), a table with no columns, a materialized view left
# stale at backup time, large objects.
AWKWARD_SCHEMA = r"""
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE pair AS (a int, b text);
CREATE DOMAIN positive AS int CHECK (VALUE > 0);
CREATE TABLE every_type (
  id serial PRIMARY KEY, n numeric, f4 real, f8 double precision, m money,
  tstz timestamptz, ts timestamp, d date, t time, ttz timetz, iv interval, b bytea,
  j json, jb jsonb, ints int[], texts text[], r int4range, tsr tstzrange, e mood, c pair,
  u uuid, ip inet, net cidr, mac macaddr, mac8 macaddr8, bits bit(8), vb varbit,
  tv tsvector, tq tsquery, x xml, p point, l line, seg lseg, bx box, pa path, pg polygon,
  ci circle, dom positive, twice int GENERATED ALWAYS AS (dom * 2) STORED, txt text,
  yes boolean, ch char(5), o oid, rc regclass, rt regtype
);
INSERT INTO every_type (n, f4, f8, m, tstz, ts, d, t, ttz, iv, b, j, jb, ints, texts, r, tsr, e, c,
  u, ip, net, mac, mac8, bits, vb, tv, tq, x, p, l, seg, bx, pa, pg, ci, dom, txt, yes, ch, o, rc, rt)
VALUES
 (123456789.000123, 1.1, 0.1, 12.34, '2024-02-29 23:59:59.123456+05:30', '2024-02-29 12:00',
  '2024-02-29', '13:14:15.5', '13:14:15+02', '1 year 2 months 3 days 04:05:06.7',
  '\x00ff10'::bytea, '{"b": 1, "a": [1, 2]}', '{"b": 1, "a": [1, 2]}', '{1,NULL,3}',
  '{"a b","",NULL}', '[1,10)', '[2024-01-01 00:00+00,2024-06-01 00:00+00)', 'happy', ROW(1, 'x, "y"'),
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '127.100.0.128/25', '127.1.0.0/16', '08:00:2b:01:02:03',
  '08:00:2b:01:02:03:04:05', B'10101010', B'101', 'a fat cat sat', 'fat & rat',
  '<a>x</a>', '(1.5,2)', '{1,2,3}', '[(0,0),(1,1)]', '((0,0),(2,2))', '[(0,0),(1,1),(2,0)]',
  '((0,0),(1,1),(1,0))', '<(0,0),5>', 7, 'text with ''quotes'', commas and "doubles"', true,
  'ab', 12345, 'every_type'::regclass, 'pair'::regtype),
 ('NaN', 'NaN', 'Infinity', -0.01, 'infinity', '-infinity', 'infinity', '00:00', '00:00+00',
  '-1 days +02:00', '', '[]', '{}', '{}', '{}', 'empty', '(,)', 'sad', ROW(NULL, NULL),
  '00000000-0000-0000-0000-000000000000', '::1', '::/0', '00:00:00:00:00:00', '00:00:00:00:00:00:00:00',
  B'00000000', B'', '', 'a', '<b/>', '(0,0)', '{1,-1,0}', '[(0,0),(0,0)]', '((0,0),(0,0))',
  '((0,0))', '((0,0))', '<(0,0),0>', 1, '', false, '', 0, NULL, NULL),
 (-1e-20, '-Infinity', '-Infinity', 0, '1999-12-31 23:00:00-01', '1999-12-31 23:00:00',
  '0001-01-01 BC', '24:00', '23:59:59.999999-14', '-178000000 years', '\x5c'::bytea, 'null', 'null',
  '{{1,2},{3,4}}', '{"NULL"}', '(,5]', NULL, 'ok', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO every_type (f8, tstz, txt) SELECT g / 7.0, now() - g * interval '1 hour 7 minutes', md5(g::text)
  FROM generate_series(1, 2000) g;

CREATE TABLE parent (id int, name text, seen timestamptz, score float8);
CREATE TABLE child (extra text, score float8, seen timestamptz, name text, id int);
ALTER TABLE child INHERIT parent;
CREATE TABLE grandchild (gone int, level int, id int, name text, seen timestamptz, score float8, extra text);
ALTER TABLE grandchild DROP COLUMN gone;
ALTER TABLE grandchild INHERIT child;
INSERT INTO parent SELECT g, 'p' || g, now() - g * interval '1 day', g / 3.0 FROM generate_series(1, 300) g;
INSERT INTO child SELECT 'e' || g, g / 3.0, now() - g * interval '1 min', 'c' || g, g FROM generate_series(1, 300) g;
INSERT INTO grandchild (level, id, name, seen, score, extra)
  SELECT g % 5, g, 'g' || g, now(), g * 0.1, NULL FROM generate_series(1, 300) g;
CREATE TABLE dropped (a int, b text, c timestamptz, d int);
INSERT INTO dropped SELECT g, 'b' || g, now(), g FROM generate_series(1, 100) g;
ALTER TABLE dropped DROP COLUMN b;
ALTER TABLE dropped ADD COLUMN e text DEFAULT 'late';
CREATE TABLE no_columns ();
INSERT INTO no_columns DEFAULT VALUES;
INSERT INTO no_columns DEFAULT VALUES;
CREATE MATERIALIZED VIEW type_count AS SELECT count(*) AS n, sum(f8) AS total FROM every_type;
INSERT INTO every_type (f8, txt) VALUES (42, 'after the view was refreshed: it is stale now');
SELECT lo_from_bytea(0, convert_to(repeat('large object ', 1000), 'UTF8'));
SELECT lo_from_bytea(0, '\x00010203'::bytea);
"""
SUBSCRIPTION = (
    "CREATE SUBSCRIPTION aura_sub_{suffix} CONNECTION 'host=127.0.0.1 port=1 dbname=nothing' "
    "PUBLICATION nothing WITH (connect = false)"
)
# The backup's and the verify's sessions write values differently unless aura-ops pins them.
BACKUP_SETTINGS = {"PGTZ": "Pacific/Chatham", "PGOPTIONS": "-c DateStyle=SQL,DMY -c extra_float_digits=-3"}
VERIFY_SETTINGS = {
    "PGTZ": "America/St_Johns",
    "PGOPTIONS": "-c DateStyle=German -c IntervalStyle=iso_8601 -c extra_float_digits=3 -c bytea_output=escape",
}


def _drop_subscriptions(pg: PostgresCluster, prefix: str) -> None:
    """Subscriptions keep a database from being dropped: detach and drop them first."""
    for (datname,) in pg.sql(f"SELECT datname FROM pg_database WHERE datname LIKE '{prefix}%'"):
        for (sub,) in pg.sql(
            "SELECT subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid "
            f"WHERE d.datname = '{datname}'"
        ):
            with psycopg.connect(pg.dsn(str(datname)), autocommit=True) as conn:
                conn.execute(f'ALTER SUBSCRIPTION "{sub}" DISABLE')
                conn.execute(f'ALTER SUBSCRIPTION "{sub}" SET (slot_name = NONE)')
                conn.execute(f'DROP SUBSCRIPTION "{sub}"')


@pytest.fixture
def awkward(pg: PostgresCluster, database: str, aura: Aura) -> Iterator[str]:
    dsn = pg.dsn(database)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(AWKWARD_SCHEMA)
    aura.env["AURA_DB_DSN"] = dsn
    aura.write_config(base_config({"db": db_component(checksums=True)}))
    yield dsn
    _drop_subscriptions(pg, database)


def _json(aura: Aura, *args: str, env: dict[str, str]) -> Any:
    return json.loads(aura(*args, "--json", env=env).stdout)


def _facts(dsn: str) -> dict[str, Any]:
    with contextlib.closing(psycopg.connect(dsn)) as db:
        return database_facts(db, True)


def test_checksums_of_every_type_inheritance_and_dropped_columns_survive_a_round_trip(
    pg: PostgresCluster, database: str, awkward: str, aura: Aura
) -> None:
    manifest = _json(aura, "backup", env=BACKUP_SETTINGS)
    report = _json(aura, "snapshots", "verify", manifest["id"], "--deep", env=VERIFY_SETTINGS)
    db = report["components"]["db"]
    assert report["ok"] is True and db["checksums_compared"] is True
    assert db["materialized_views_not_compared"] == ["public.type_count"]

    entry = manifest["components"]["db"]
    assert entry["materialized_views"] == ["public.type_count"]
    assert "public.type_count" not in entry["row_counts"]
    assert entry["row_counts"]["public.parent"] == 300  # ONLY: the children count on their own lines
    assert entry["row_counts"]["public.no_columns"] == 2
    assert entry["large_objects"] == 2

    aura("restore", manifest["id"], "--to-database", f"{database}_copy", env=VERIFY_SETTINGS)
    copy = _facts(pg.dsn(f"{database}_copy"))
    for key in ("row_counts", "table_checksums", "sequences", "large_objects", "large_object_checksum"):
        assert copy[key] == entry[key], key
    # the copy's matview was refreshed by the restore: it differs from the stale original
    stale = pg.sql("SELECT n FROM type_count", database)[0][0]
    assert pg.sql("SELECT n FROM type_count", f"{database}_copy")[0][0] == stale + 1

    # in place (swap mode compares the restored database with the manifest before the swap)
    with psycopg.connect(awkward, autocommit=True) as conn:
        conn.execute("DELETE FROM child WHERE id % 2 = 0")
    aura("restore", manifest["id"], "--yes", env=VERIFY_SETTINGS)
    assert _facts(awkward)["table_checksums"] == entry["table_checksums"]


def test_deep_verify_of_a_database_with_a_subscription_succeeds(
    pg: PostgresCluster, database: str, awkward: str, aura: Aura
) -> None:
    pg.sql(SUBSCRIPTION.format(suffix=database), database)
    manifest = _json(aura, "backup", env=BACKUP_SETTINGS)
    aura("restore", manifest["id"], "--to-database", f"{database}_copy", env=VERIFY_SETTINGS)
    assert _facts(pg.dsn(f"{database}_copy"))["table_checksums"] == manifest["components"]["db"]["table_checksums"]
    report = _json(aura, "snapshots", "verify", manifest["id"], "--deep", env=VERIFY_SETTINGS)
    assert report["ok"] is True
    assert pg.sql("SELECT datname FROM pg_database WHERE datname LIKE 'aura_verify%'") == []


def test_row_hash_tells_null_from_empty_and_does_not_depend_on_column_order(pg: PostgresCluster, database: str) -> None:
    dsn = pg.dsn(database)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE ab (a text, b text); CREATE TABLE ba (b text, a text)")
        conn.execute("CREATE TABLE nulls (a text, b text)")
        conn.execute("INSERT INTO ab VALUES ('x', ''); INSERT INTO ba VALUES ('', 'x')")
        conn.execute("INSERT INTO nulls VALUES ('x', NULL)")
    sums = _facts(dsn)["table_checksums"]
    assert sums["public.ab"] == sums["public.ba"]
    assert sums["public.nulls"] != sums["public.ab"]


def test_verify_reports_a_file_slipped_into_the_dump(
    pg: PostgresCluster, database: str, awkward: str, aura: Aura
) -> None:
    snapshot = aura.json("backup")["id"]
    dump = aura.repo / "snapshots" / snapshot / "db" / "dump"
    (dump / "9999.dat.zst").write_bytes(b"not from pg_dump")
    result = aura("snapshots", "verify", snapshot, check=3)
    assert "db: dump/9999.dat.zst is not in the manifest" in result.stderr
    (dump / "9999.dat.zst").unlink()
    aura("snapshots", "verify", snapshot)
