"""Release component and checks against real rsync, tar, busybox httpd and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from aura_ops.components.release import ReleaseComponent
from aura_ops.config import ReleaseConfig, parse
from aura_ops.dev.sandbox import PostgresCluster, free_port, wait_until
from aura_ops.engine import checks
from aura_ops.hosts import LocalHost
from tests.conftest import Aura, base_config, db_component, require_tool


def make_source(root: Path, version: str, changed: str = "app.py", mtime: int = 1_700_000_000) -> Path:
    """A release folder as a fresh checkout makes it. ``big.js`` is the same in every version but
    has a different mtime (``mtime``); ``changed`` has the same size and mtime in every version
    but not the same content."""
    source = root / f"src-{version}"
    (source / "static").mkdir(parents=True)
    (source / "static" / "big.js").write_text("x" * 100_000)
    os.utime(source / "static" / "big.js", (mtime, mtime))
    (source / changed).write_text(f"VERSION = {version!r}\n")
    os.utime(source / changed, (1_600_000_000, 1_600_000_000))
    (source / "health").write_text(f"ok {version}\n")
    return source


def make_tarball(source: Path) -> Path:
    tarball = source.with_name(source.name + ".tar.gz")
    with tarfile.open(tarball, "w:gz") as archive:
        for item in sorted(source.rglob("*")):
            archive.add(item, arcname=str(item.relative_to(source)), recursive=False)
    return tarball


@pytest.fixture
def cfg(tmp_path: Path) -> ReleaseConfig:
    require_tool("rsync")
    (tmp_path / "srv").mkdir()
    return ReleaseConfig(type="release", path=tmp_path / "srv", keep=3)


@pytest.fixture
def release(cfg: ReleaseConfig) -> ReleaseComponent:
    return ReleaseComponent("app", cfg, LocalHost())


def test_upload_switch_and_link_dest_share_unchanged_files(
    release: ReleaseComponent, cfg: ReleaseConfig, tmp_path: Path
) -> None:
    release.upload("v1", make_source(tmp_path, "v1"))
    assert release.switch("v1") is None
    release.upload("v2", make_source(tmp_path, "v2", mtime=1_700_000_100))
    assert release.current() == "v1"  # uploading never switches
    assert release.switch("v2") == "v1"
    assert (cfg.path / "current" / "app.py").read_text() == "VERSION = 'v2'\n"
    one, two = cfg.path / "releases" / "v1", cfg.path / "releases" / "v2"
    assert (one / "static/big.js").stat().st_ino == (two / "static/big.js").stat().st_ino
    assert (one / "app.py").stat().st_ino != (two / "app.py").stat().st_ino
    assert os.readlink(cfg.path / "current") == "releases/v2"


def test_tarball_upload_links_unchanged_files(release: ReleaseComponent, cfg: ReleaseConfig, tmp_path: Path) -> None:
    release.upload("v8", make_tarball(make_source(tmp_path, "v8")))
    release.switch("v8")
    release.upload("v9", make_tarball(make_source(tmp_path, "v9", mtime=1_700_000_100)))
    eight, nine = cfg.path / "releases" / "v8", cfg.path / "releases" / "v9"
    assert (nine / "health").read_text() == "ok v9\n"
    assert (nine / "app.py").read_text() == "VERSION = 'v9'\n"
    assert (eight / "static/big.js").stat().st_ino == (nine / "static/big.js").stat().st_ino
    assert (eight / "app.py").stat().st_ino != (nine / "app.py").stat().st_ino
    assert sorted(p.name for p in (cfg.path / "releases").iterdir()) == ["v8", "v9"]  # no work folders left


def test_current_release_cannot_be_uploaded_again_and_bad_versions_are_refused(
    release: ReleaseComponent, tmp_path: Path
) -> None:
    from aura_ops.errors import UsageError

    release.upload("v1", make_source(tmp_path, "v1"))
    release.switch("v1")
    with pytest.raises(UsageError, match="current release"):
        release.upload("v1", make_source(tmp_path, "v1b"))
    with pytest.raises(UsageError, match="invalid release version"):
        release.upload("../etc", make_source(tmp_path, "x"))
    with pytest.raises(UsageError, match="not installed"):
        release.switch("v7")


def test_prune_keeps_current_and_the_rollback_target(release: ReleaseComponent, tmp_path: Path) -> None:
    for version in ("v1", "v2", "v3", "v4", "v5"):
        release.upload(version, make_source(tmp_path, version))
        release.switch(version)
        release.mark(version, "verified" if version == "v1" else "failed")
    assert release.rollback_target() == "v1"
    pruned = release.prune()
    assert release.installed() == ["v1", "v4", "v5"]
    assert pruned == ["v2", "v3"]
    release.mark("v4", "verified")
    assert release.rollback_target() == "v4"


def test_release_pointer_is_snapshotted_and_restored(
    release: ReleaseComponent, cfg: ReleaseConfig, aura: Aura, tmp_path: Path
) -> None:
    for version in ("v1", "v2"):
        release.upload(version, make_source(tmp_path, version))
    release.switch("v1")
    aura.write_config(base_config({"app": {"type": "release", "path": str(cfg.path)}}))
    snapshot = aura.json("backup")
    assert snapshot["components"]["app"]["current"] == "v1"
    release.switch("v2")
    aura("restore", snapshot["id"], "--yes")
    assert release.current() == "v1"
    assert aura.json("snapshots", "verify", snapshot["id"])["components"]["app"]["still_installed"] is True


@pytest.fixture
def httpd(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    require_tool("busybox")
    root = tmp_path / "www"
    root.mkdir()
    port = free_port()
    process = subprocess.Popen(["busybox", "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", str(root)])
    try:
        assert wait_until(lambda: _listening(port), 10)
        yield f"http://127.0.0.1:{port}", root
    finally:
        process.terminate()
        process.wait(timeout=10)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_checks_pass_and_fail_against_real_services(
    httpd: tuple[str, Path], pg: PostgresCluster, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root = httpd
    (root / "health").write_text("ok v2\n")
    monkeypatch.setenv("AURA_DB_DSN", pg.dsn(database))
    config = parse(
        {
            "repository": {"path": "/tmp/unused"},
            "components": {"db": db_component()},
            "checks": [
                {"type": "http", "url": f"{url}/health", "body_contains": "v2", "deadline": 5},
                {"type": "tcp", "port": pg.port, "deadline": 5},
                {"type": "command", "argv": ["test", "-f", str(root / "health")], "deadline": 5},
                {"type": "sql", "component": "db", "query": "SELECT 40 + 2", "expect": "42"},
            ],
        }
    )
    results = checks.run_all(config.checks, config)
    assert [r["ok"] for r in results] == [True, True, True, True]

    failing = parse(
        {
            "repository": {"path": "/tmp/unused"},
            "checks": [{"type": "http", "url": f"{url}/missing", "deadline": 2, "interval": 0.5}],
        }
    )
    with pytest.raises(checks.CheckFailed, match=r"status 404, expected 200") as caught:
        checks.run_all(failing.checks, failing)
    assert "attempts" in str(caught.value)

    closed = parse(
        {"repository": {"path": "/tmp/unused"}, "checks": [{"type": "tcp", "port": free_port(), "deadline": 1}]}
    )
    with pytest.raises(checks.CheckFailed, match="cannot connect"):
        checks.run_all(closed.checks, closed)
