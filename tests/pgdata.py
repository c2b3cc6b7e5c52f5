"""Build a database that exercises pg_dump/pg_restore, and fingerprint one for comparison."""

from __future__ import annotations

import subprocess
from typing import Any

import psycopg

RICH_SCHEMA = """
CREATE SCHEMA billing;
CREATE SCHEMA "Odd Schema";
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'aura_reader') THEN
    CREATE ROLE aura_reader NOLOGIN;
  END IF;
END $$;
CREATE TABLE public.users (id bigserial PRIMARY KEY, email text UNIQUE NOT NULL,
                           created timestamptz NOT NULL DEFAULT now(), score double precision,
                           payload jsonb, avatar oid);
CREATE TABLE billing.invoices (id serial PRIMARY KEY, user_id bigint REFERENCES public.users(id),
                               amount numeric(12,2), note text);
CREATE TABLE "Odd Schema"."Quoted ""Name"" Table" ("Mixed Case" int, "with space" text);
CREATE SEQUENCE billing.invoice_numbers START 1000;
CREATE VIEW billing.big_invoices AS SELECT * FROM billing.invoices WHERE amount > 500;
CREATE FUNCTION billing.total(uid bigint) RETURNS numeric LANGUAGE sql STABLE
  AS $$ SELECT coalesce(sum(amount), 0) FROM billing.invoices WHERE user_id = uid $$;
GRANT USAGE ON SCHEMA billing TO aura_reader;
GRANT SELECT ON billing.invoices, billing.big_invoices TO aura_reader;
INSERT INTO public.users (email, score, payload)
  SELECT 'user' || g || '@example.com', g * 1.5, jsonb_build_object('n', g, 'tags', array['a', 'b'])
  FROM generate_series(1, 60000) g;
INSERT INTO billing.invoices (user_id, amount, note)
  SELECT (g % 60000) + 1, (g % 1000) + 0.25, repeat(md5(g::text), 3) FROM generate_series(1, 60000) g;
INSERT INTO "Odd Schema"."Quoted ""Name"" Table" VALUES (1, 'one'), (2, NULL);
SELECT nextval('billing.invoice_numbers') FROM generate_series(1, 42);
UPDATE public.users SET avatar = lo_from_bytea(0, convert_to(repeat('img' || id, 500), 'UTF8'))
  WHERE id <= 5;
"""


def build_rich_database(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(RICH_SCHEMA)
        conn.execute("ANALYZE")


def fingerprint(dsn: str) -> dict[str, Any]:
    """Per-table row counts and content checksums, sequence values, large object digests."""
    with psycopg.connect(dsn) as conn:
        tables = conn.execute(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
        ).fetchall()
        result: dict[str, Any] = {}
        for (table,) in tables:
            result[table] = conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t"
            ).fetchone()
        result["sequences"] = conn.execute(
            "SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2"
        ).fetchall()
        result["large_objects"] = conn.execute(
            "SELECT oid::bigint, md5(lo_get(oid)) FROM pg_largeobject_metadata ORDER BY 1"
        ).fetchall()
    return result


def schema_dump(dsn: str) -> str:
    """pg_dump --schema-only, without the comment lines that name the database."""
    text = subprocess.run(
        ["pg_dump", "--schema-only", "--no-comments", dsn], check=True, capture_output=True, text=True
    ).stdout
    return "\n".join(line for line in text.splitlines() if not line.startswith(("--", "\\restrict", "\\unrestrict")))
