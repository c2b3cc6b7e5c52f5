"""An interrupted command prints its one-line reason and nothing else (no blank line from click's
abort handling). Real PostgreSQL: a backup held by a lock on a table, then SIGTERM."""

from __future__ import annotations

import signal

from aura_ops.dev.sandbox import PostgresCluster
from tests.conftest import Aura
from tests.integration.test_postgres import _start_blocked_backup, rich

__all__ = ["rich"]  # the fixture, shared with the postgres tests


def test_sigterm_during_a_backup_prints_only_the_one_line_reason(
    pg: PostgresCluster, database: str, rich: str, aura: Aura
) -> None:
    blocker, process = _start_blocked_backup(pg, database, aura)
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=60)
    finally:
        blocker.rollback()
        blocker.close()
    assert process.returncode == 1
    lines = err.splitlines()
    assert "" not in lines, err  # no blank line
    assert [line for line in lines if line.startswith("aura-ops: error:")] == [
        "aura-ops: error: interrupted by SIGTERM; nothing was committed"
    ]
