"""Row counts taken from the dump stream: the compressor counts the COPY rows of each table's data
file as it compresses it, the table of contents says which file holds which table (by oid), and
a table whose file cannot be counted so is left to the server. The real pg_dump and server are
in tests/integration/test_postgres_stream_counts.py; here the file contents are written by hand
(including a growing file, as pg_dump writes it)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import zstandard

from aura_ops.components import postgres
from aura_ops.config import PostgresConfig
from aura_ops.hosts import LocalHost
from aura_ops.hosts.fake import FakeHost, result

DUMP = "/repo/snapshots/s1/db/dump"
END = b"\\.\n\n\n"  # pg_dump's end of a table's COPY rows


def _compressed(rows: dict[str, bytes], count: bool = True) -> postgres._Compressor:
    store = FakeHost("control")
    for name, data in rows.items():
        store.add_file(f"{DUMP}/{name}", data)
    compressor = postgres._Compressor(store, DUMP, 1, count_rows=count)
    compressor.finish(True)
    return compressor


def test_each_tables_rows_are_the_lines_before_the_end_of_copy_marker() -> None:
    rows = {
        "7.dat": b"1\tone\n2\ttwo\\nstill two\n3\t\\\\.\n" + END,  # an escaped newline, a backslash-dot value
        "8.dat": END,  # an empty table
        "9.dat": b"\\\\.\n" + END,  # a row whose only value is the text \. (COPY writes it escaped: \\.)
    }
    assert _compressed(rows).rows == {"7.dat": 3, "8.dat": 0, "9.dat": 1}


def test_a_file_without_the_end_of_copy_marker_is_not_counted() -> None:
    rows = {
        "6.dat": b"1\tone\n2\ttwo\n",  # cut short
        "7.dat": b"",
        "8.dat": b"1\n\\.\n\n",  # a marker cut short
        "9.dat": b"1\tone" + END,  # a marker that does not follow a whole line
    }
    assert _compressed(rows).rows == {"6.dat": None, "7.dat": None, "8.dat": None, "9.dat": None}


def test_large_object_files_are_compressed_but_never_counted() -> None:
    compressor = _compressed({"blob_16400.dat": b"binary\n\n" + END, "7.dat": b"1\n" + END})
    assert compressor.rows == {"7.dat": 1}
    assert set(compressor.results) == {"blob_16400.dat.zst", "7.dat.zst"}


def test_nothing_is_counted_unless_asked() -> None:
    assert _compressed({"7.dat": b"1\n" + END}, count=False).rows == {}


def test_rows_and_marker_split_across_reads_of_a_growing_file_are_counted_once(tmp_path: Path) -> None:
    """pg_dump writes the file while it is followed: reads end anywhere, even inside the marker."""
    folder = tmp_path / "dump"
    folder.mkdir()
    line = b"42\tsome text with a \\n newline and a \\\\ backslash\n"
    count = 3 * postgres.checksum.CHUNK // len(line)  # several reads' worth
    compressor = postgres._Compressor(LocalHost(), str(folder), 1, count_rows=True)
    with open(folder / "7.dat", "wb") as out:
        for start in range(0, count, 5000):
            out.write(line * min(5000, count - start))
            out.flush()
            time.sleep(0.002)
        out.write(END[:2])
        out.flush()
        time.sleep(0.05)  # the follower reads up to the middle of the marker and waits
        out.write(END[2:])
    compressor.item_finished("7")
    found = compressor.finish(True)
    assert compressor.rows == {"7.dat": count}
    data = zstandard.ZstdDecompressor().decompressobj().decompress((folder / "7.dat.zst").read_bytes())
    assert data == line * count + END
    assert found["7.dat.zst"]["raw_size"] == len(data)
    assert not (folder / "7.dat").exists()


def test_a_finished_item_wakes_its_follower_at_once(tmp_path: Path) -> None:
    """A follower waiting at the end of a growing file finishes when pg_dump reports the item done,
    without waiting for pg_dump to exit."""
    folder = tmp_path / "dump"
    folder.mkdir()
    (folder / "7.dat").write_bytes(b"1\n" + END)
    compressor = postgres._Compressor(LocalHost(), str(folder), 1, count_rows=True)
    compressor.item_finished("7")
    assert _wait(lambda: "7.dat.zst" in compressor.results), "the finished item was not compressed"
    assert compressor.rows == {"7.dat": 1}
    compressor.finish(True)


def _wait(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        threading.Event().wait(0.01)
    return False


LISTING = """;
; Archive created at 2026-12-01 10:41:00 UTC
;
216; 1259 34655 TABLE public pgbench_accounts postgres
3366; 0 34655 TABLE DATA public pgbench_accounts postgres
3369; 0 34672 TABLE DATA public documents postgres
3401; 0 34700 TABLE DATA Odd Schema Quoted "Name" Table app
3377; 0 0 SEQUENCE SET public documents_id_seq postgres
4000; 0 0 BLOBS - BLOBS postgres
3221; 2606 34679 CONSTRAINT public documents documents_pkey postgres
"""


def test_the_table_of_contents_names_each_tables_data_file_by_oid() -> None:
    host = FakeHost("db1")
    host.on(["pg_restore", "--list"], result(LISTING))
    config = PostgresConfig(type="postgres", dsn="postgresql://app@127.0.0.1/shop")
    files = postgres._data_files_by_table(host, config, Path(DUMP))
    assert files == {34655: "3366.dat", 34672: "3369.dat", 34700: "3401.dat"}
    assert host.argvs == [["pg_restore", "--list", DUMP]]


def test_a_table_of_contents_that_cannot_be_listed_leaves_every_count_to_the_server() -> None:
    host = FakeHost("db1")
    host.on(["pg_restore", "--list"], result(returncode=1, stderr="pg_restore: error: unsupported version\n"))
    config = PostgresConfig(type="postgres", dsn="postgresql://app@127.0.0.1/shop")
    assert postgres._data_files_by_table(host, config, Path(DUMP)) == {}


def test_stream_counts_keep_only_the_tables_whose_file_was_counted() -> None:
    files = {34655: "3366.dat", 34672: "3369.dat", 34700: "3401.dat"}
    rows: dict[str, int | None] = {"3366.dat": 7_000_000, "3369.dat": None}  # 3401.dat never seen
    assert postgres._stream_counts(files, rows) == {34655: 7_000_000}
