"""A tool dying mid-operation ends it within seconds with the tool's own words, and no lock is held
afterwards (issue 9, class 4). Real rsync copying a release of a deploy, real PostgreSQL, the real
CLI as a subprocess; the tool is killed from outside, as the OOM killer or an operator would."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from aura_ops.dev.sandbox import PostgresCluster, wait_until
from tests.conftest import Aura, require_tool
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
    assert not list((site["app"] / "releases").glob("*partial*"))
    assert aura.json("runs", "list")["runs"][0]["status"] == "rolled_back"
    # no lock held: a deploy of the same version right away is not refused (exit 5), and works
    (source / "big.bin").unlink()
    deploy(aura, site, "v2")
    assert live(site) == "v2"
