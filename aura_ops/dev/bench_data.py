"""The data ``make bench`` measures: a pgbench database with a TOAST-heavy table, databases of
many small tables (indexes and foreign keys included), and file trees, generated quickly and the
same way on every run (fixed seeds)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

from aura_ops.dev.sandbox import PostgresCluster


def make_database(cluster: PostgresCluster, scale: int, toast_mb: int) -> str:
    """Create database ``bench``: pgbench at ``scale`` plus ``toast_mb`` MB of TOASTed text."""
    dsn = cluster.create_database("bench")
    print(f"bench: pgbench -i -s {scale} and a {toast_mb} MB TOAST table", file=sys.stderr)
    subprocess.run(
        [str(cluster.bin / "pgbench"), "-i", "-q", "-s", str(scale), "-d", dsn], check=True, stderr=subprocess.DEVNULL
    )
    rows = toast_mb * 1024 // 8
    cluster.sql(
        "CREATE TABLE documents (id serial PRIMARY KEY, body text);"  # noqa: S608 (ints only)
        "ALTER TABLE documents ALTER body SET STORAGE EXTERNAL;"
        f"INSERT INTO documents (body) SELECT string_agg(md5(g::text || i::text), ' ') "
        f"FROM generate_series(1, {rows}) g, generate_series(1, 240) i GROUP BY g",
        "bench",
    )
    cluster.sql("VACUUM ANALYZE", "bench")
    return dsn


def make_many_tables(cluster: PostgresCluster, name: str, tables: int, rows: int = 200) -> str:
    """Create database ``name`` with ``tables`` tables of ``rows`` rows each; every table has two
    indexes (its primary key and one on ``name``) and one foreign key (to the previous table,
    the first to the last), so 600 tables carry 1,200 indexes and 600 foreign keys."""
    dsn = cluster.create_database(name)
    print(f"bench: database {name}, {tables} tables of {rows} rows", file=sys.stderr)
    statements = []
    for index in range(1, tables + 1):
        statements.append(
            f"CREATE TABLE t{index} (id int PRIMARY KEY, parent int NOT NULL, name text NOT NULL, "  # noqa: S608 (ints only)
            f"amount numeric(12,2), created timestamptz NOT NULL DEFAULT now());"
            f"INSERT INTO t{index} (id, parent, name, amount) SELECT g, g, md5(g::text || '{index}'), g * 1.5 "
            f"FROM generate_series(1, {rows}) g;"
            f"CREATE INDEX t{index}_name ON t{index} (name);"
        )
    for index in range(1, tables + 1):
        target = index - 1 if index > 1 else tables
        statements.append(f"ALTER TABLE t{index} ADD FOREIGN KEY (parent) REFERENCES t{target} (id);")
    cluster.sql("".join(statements), name)
    cluster.sql("VACUUM ANALYZE", name)
    return dsn


def make_tree(root: Path, small: int, large: int = 0, large_mb: int = 8, max_small: int = 20_000) -> None:
    """Write ``small`` files of 1 KB to ``max_small`` bytes in folders of about 100, plus
    ``large`` incompressible files of ``large_mb`` MB."""
    print(f"bench: file tree of {small + large} files", file=sys.stderr)
    rng = random.Random(42)
    folders = max(1, small // 100)
    for index in range(small):
        folder = root / f"d{index % folders:04d}" / f"e{index % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{index}.dat").write_bytes(rng.randbytes(rng.randint(1_000, max_small)))
    for index in range(large):
        (root / f"big{index:03d}.bin").write_bytes(os.urandom(large_mb * 1_000_000))


def change_one_percent(root: Path, round_: int = 0) -> None:
    """Overwrite 64 bytes in 1% of the files (a different 1% each round)."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for path in files[round_ % 100 :: 100]:
        with open(path, "r+b") as handle:
            handle.write(os.urandom(64))
