"""Review of the stream row counts (issue 12): listing the table of contents is only a way to
name each table's data file; when it cannot be done, for any reason, the server counts."""

from __future__ import annotations

from pathlib import Path

from aura_ops.components import postgres
from aura_ops.config import PostgresConfig
from aura_ops.hosts.fake import FakeHost

DUMP = "/repo/snapshots/s1/db/dump"


def test_a_missing_pg_restore_leaves_every_count_to_the_server_and_the_backup_goes_on() -> None:
    """A bin_dir with pg_dump and pg_dumpall (all a backup needed before the counts moved into
    the stream) must not make a finished dump fail at its end for want of pg_restore."""
    host = FakeHost("db1")  # no pg_restore: running it raises ToolMissing, as a missing binary does
    config = PostgresConfig(type="postgres", dsn="postgresql://app@127.0.0.1/shop")
    assert postgres._data_files_by_table(host, config, Path(DUMP)) == {}
