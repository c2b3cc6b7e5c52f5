"""Review of the restore's staging folder on a memory file system, on real PostgreSQL: a
/dev/shm that runs out of room while the folder is made (here: out of inodes, in a mount
namespace of the restore's own) ends the restore with one line, exit 1, no database and no
folder left, the live database untouched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from aura_ops.dev.sandbox import PostgresCluster
from tests.conftest import Aura, base_config, db_component
from tests.pgdata import build_rich_database, fingerprint

# the CLI in a mount namespace of its own whose /dev/shm is a tmpfs with room for 256 MiB (so it
# is chosen) but only 3 inodes: the folder and two files, then ENOSPC
IN_SMALL_SHM = (
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    'mount -t tmpfs -o size=300m,nr_inodes=4 tmpfs /dev/shm && exec "$@"',
    "sh",
)


def _namespaces_work() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run([*IN_SMALL_SHM, "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _namespaces_work(), reason="needs root and unshare (a private /dev/shm)")
def test_a_full_memory_file_system_while_staging_is_one_line_exit_1_and_nothing_is_left(
    pg: PostgresCluster, database: str, aura: Aura
) -> None:
    dsn = pg.dsn(database)
    build_rich_database(dsn)
    aura.env["AURA_DB_DSN"] = dsn
    aura.env.pop("TMPDIR", None)
    aura.write_config(base_config({"db": db_component()}))
    snapshot = aura.json("backup")["id"]
    before = fingerprint(dsn)
    for target in (["--to-database", f"{database}_new"], ["--yes"]):  # a new database; in place (swap)
        result = subprocess.run(
            [*IN_SMALL_SHM, sys.executable, "-m", "aura_ops", "--config", str(aura.config_path), "restore"]
            + [snapshot, *target],
            env=aura.env,
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert result.returncode == 1, result.stderr[-3000:]
        lines = [line for line in result.stderr.splitlines() if line.startswith("aura-ops: error:")]
        assert len(lines) == 1, result.stderr[-3000:]
        assert "db: cannot prepare the restore's staging folder /dev/shm/aura-restore-" in lines[0], lines[0]
        assert "No space left on device" in lines[0] and "unexpected" not in lines[0], lines[0]
        names = [r[0] for r in pg.sql(f"SELECT datname FROM pg_database WHERE datname LIKE '{database}_%'")]
        assert names == []
        assert fingerprint(dsn) == before
        checks = aura.json("doctor", check=None)["checks"]
        assert not [c for c in checks if str(c["check"]).startswith("temporary ")], checks
