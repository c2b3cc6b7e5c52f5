"""A tool dying mid-operation ends it within seconds with the tool's own words, and no lock is held
afterwards (issue 9, class 4). Real rsync copying a release of a deploy, real PostgreSQL, the real
CLI as a subprocess; the tool is killed from outside, as the OOM killer or an operator would."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from aura_ops.dev.sandbox import PostgresCluster, wait_until
from tests.conftest import Aura, base_config, db_component, require_tool
from tests.integration.test_deploy_semantics import deploy, live, release
from tests.integration.test_deploy_semantics import site as site  # noqa: F401  (the fixture)

pytestmark = pytest.mark.usefixtures("pg")


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc), nearest first."""
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop(0)
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                found.append(int(entry))
                frontier.append(int(entry))
    return found


def _rsyncs(pid: int) -> list[int]:
    """The rsync processes below ``pid``: the client first, then its receiver and generator."""
    result = []
    for child in _children(pid):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"rsync":
            result.append(child)
    return result


def _big_release(site: dict[str, Any], version: str) -> Path:
    """A release whose upload takes a while: 300 MiB that do not compress or deduplicate."""
    source = release(site, version)
    with open(source / "big.bin", "wb") as out:
        for _ in range(300):
            out.write(os.urandom(1 << 20))
    return source


@pytest.mark.parametrize("victim", ["receiver", "client"])
def test_rsync_killed_during_a_release_upload_ends_the_deploy_fast_with_its_own_words_and_no_lock(
    aura: Aura, site: dict[str, Any], pg: PostgresCluster, victim: str
) -> None:
    require_tool("rsync")
    deploy(aura, site, "v1")
    source = _big_release(site, "v2")
    running = aura.popen("deploy", "--version", "v2", "--source", str(source), "--rollback-on-fail")
    try:
        assert wait_until(lambda: len(_rsyncs(running.pid)) >= 2, timeout=120), "rsync never started"
        rsyncs = _rsyncs(running.pid)
        os.kill(rsyncs[1] if victim == "receiver" else rsyncs[0], signal.SIGKILL)
        killed_at = time.monotonic()
        _, stderr = running.communicate(timeout=120)
    finally:
        if running.poll() is None:
            running.kill()
            running.communicate()
    print(f"deploy ended {time.monotonic() - killed_at:.1f}s after rsync was killed")
    assert running.returncode == 1, stderr
    error = [line for line in stderr.splitlines() if line.startswith("aura-ops: error")]
    assert len(error) == 1, stderr
    if victim == "receiver":  # the surviving side reports the broken stream in rsync's own words
        assert "rsync error: error in " in error[0], stderr
    else:  # nobody is left to speak: the signal is the reason
        assert "rsync" in error[0] and "killed by SIGKILL" in error[0], stderr
    assert live(site) == "v1"
    assert not (site["app"] / "releases" / "v2").exists()
    assert not list((site["app"] / "releases").glob("*partial*")), stderr
    assert aura.json("runs", "list")["runs"][0]["status"] == "rolled_back"
    # no lock held: a deploy of the same version right away is not refused (exit 5), and works
    (source / "big.bin").unlink()
    deploy(aura, site, "v2")
    assert live(site) == "v2"


# the CLI in a mount namespace of its own whose repository is a tmpfs too small for the dump;
# after the CLI ends, the same namespace lists what it left in the repository
IN_SMALL_REPOSITORY = (
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    'mkdir -p "$1" && mount -t tmpfs -o size=3m,mode=0700 tmpfs "$1" && shift'
    ' && { "$@"; code=$?; echo "left: $(ls -A "$REPOSITORY"/snapshots 2>/dev/null | tr "\\n" " ")" >&2; exit $code; }',
    "sh",
)


def _namespaces_work() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _namespaces_work(), reason="needs root and unshare (a private mount)")
def test_a_repository_that_fills_up_during_a_backup_ends_it_fast_with_the_reason_and_leaves_nothing(
    pg: PostgresCluster, database: str, aura: Aura
) -> None:
    """pg_dump writes each table into the repository and the compressor beside it turns it into a
    .zst: whichever of the two meets the full disk first, the backup ends with that reason (one
    line, exit 1) instead of waiting on the other, leaves no partial snapshot, and holds no lock."""
    dsn = pg.dsn(database)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in ("a", "b", "c"):  # about 8 MiB each, which compresses to about half
            conn.execute(
                f"CREATE TABLE {table} AS SELECT g AS id, md5(random()::text) || md5(random()::text) AS v"
                " FROM generate_series(1, 110000) g"
            )
    aura.env["AURA_DB_DSN"] = dsn
    aura.write_config(base_config({"db": db_component()}))
    started = time.monotonic()
    result = subprocess.run(
        [*IN_SMALL_REPOSITORY, str(aura.repo), sys.executable, "-m", "aura_ops"]
        + ["--config", str(aura.config_path), "backup"],
        env={**aura.env, "REPOSITORY": str(aura.repo)},
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    print(f"backup ended after {time.monotonic() - started:.1f}s")
    assert result.returncode == 1, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("aura-ops: error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert "no space left" in lines[0].lower() and "unexpected" not in lines[0], result.stderr[-3000:]
    assert result.stderr.splitlines()[-1].strip() == "left:", result.stderr[-3000:]  # no partial snapshot
    assert aura.json("backup")["id"]  # the real repository, right after: no lock held, the dump whole
