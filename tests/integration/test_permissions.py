"""What aura-ops writes for the user keeps the user's permissions; its own files stay owner-only."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import Aura, require_tool


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _run(aura: Aura, *args: str, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    """The CLI as a user with ``umask`` would start it."""

    def preexec() -> None:
        os.umask(umask)

    result = subprocess.run(
        [sys.executable, "-m", "aura_ops", "--config", str(aura.config_path), *args],
        env=aura.env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        preexec_fn=preexec,  # noqa: PLW1509 - the test plays a user's shell
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _source(root: Path, version: str) -> Path:
    folder = root / "sources" / version
    (folder / "static").mkdir(parents=True)
    (folder / "index.html").write_text(f"<h1>{version}</h1>\n")
    (folder / "static" / "app.css").write_text("body {}\n")
    for path in (folder, folder / "static"):
        os.chmod(path, 0o755)
    for path in (folder / "index.html", folder / "static" / "app.css"):
        os.chmod(path, 0o644)
    return folder


@pytest.fixture
def site(aura: Aura, tmp_path: Path) -> Path:
    require_tool("rsync")
    app = tmp_path / "srv" / "app"
    app.mkdir(parents=True)
    os.chmod(app, 0o755)
    aura.write_config(
        {
            "repository": {"path": "repo"},
            "components": {"app": {"type": "release", "path": str(app)}},
            # a migration that writes a file, as a framework's asset build or cache warm-up does
            "deploy": {"migrate": ["sh", "-c", "echo built > built.txt"]},
        }
    )
    return app


def test_a_deployed_release_is_readable_by_others_as_the_users_own_files_are(aura: Aura, site: Path) -> None:
    _run(aura, "deploy", "--version", "v1", "--source", str(_source(aura.root, "v1")))

    release = site / "releases" / "v1"
    assert _mode(site / "releases") == 0o755  # made by aura-ops
    assert _mode(release) == 0o755
    assert _mode(release / "static") == 0o755
    assert _mode(release / "index.html") == 0o644
    assert _mode(release / "static" / "app.css") == 0o644
    # the migration ran with the user's umask, not aura-ops' own 0077
    assert (release / "built.txt").read_text() == "built\n"
    assert _mode(release / "built.txt") == 0o644
    # aura-ops' own files stay owner-only
    assert _mode(aura.repo) == 0o700
    assert _mode(aura.root / "state") == 0o700
    assert _mode(aura.root / "state" / "journal.db") == 0o600
    for log in (aura.root / "logs").glob("aura_*.log"):
        assert _mode(log) == 0o600


def test_a_release_from_a_tarball_keeps_the_modes_it_was_packed_with(aura: Aura, site: Path) -> None:
    source = _source(aura.root, "v2")
    tarball = aura.root / "v2.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:  # as `tar -C src -czf v2.tgz index.html static`: no ./ entry
        archive.add(source / "index.html", arcname="index.html")
        archive.add(source / "static", arcname="static")
    _run(aura, "deploy", "--version", "v2", "--source", str(tarball))

    release = site / "releases" / "v2"
    assert _mode(release) == 0o755
    assert _mode(release / "static") == 0o755
    assert _mode(release / "index.html") == 0o644


def test_a_stricter_user_umask_is_honoured_too(aura: Aura, site: Path) -> None:
    _run(aura, "deploy", "--version", "v1", "--source", str(_source(aura.root, "v1")), umask=0o027)

    assert _mode(site / "releases") == 0o750
    assert _mode(site / "releases" / "v1" / "built.txt") == 0o640


def test_a_restored_tree_keeps_its_modes_and_new_parent_folders_get_the_users_umask(aura: Aura, tmp_path: Path) -> None:
    require_tool("rsync")
    data = tmp_path / "uploads"
    (data / "public").mkdir(parents=True)
    (data / "public" / "photo.jpg").write_bytes(b"jpeg")
    os.chmod(data, 0o755)
    os.chmod(data / "public", 0o755)
    os.chmod(data / "public" / "photo.jpg", 0o644)
    aura.write_config({"repository": {"path": "repo"}, "components": {"uploads": {"type": "files", "path": str(data)}}})
    _run(aura, "backup")

    target = tmp_path / "restored" / "deep" / "uploads"
    _run(aura, "restore", "latest", "--to-path", str(target), "--yes")

    assert _mode(tmp_path / "restored") == 0o755
    assert _mode(tmp_path / "restored" / "deep") == 0o755
    assert _mode(target) == 0o755
    assert _mode(target / "public") == 0o755
    assert _mode(target / "public" / "photo.jpg") == 0o644
    assert (target / "public" / "photo.jpg").read_bytes() == b"jpeg"
    assert _mode(aura.repo) == 0o700


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_a_command_step_runs_with_the_users_umask_not_aura_ops_own(aura: Aura, tmp_path: Path, umask: int) -> None:
    made = tmp_path / "made.txt"
    aura.write_config({"repository": {"path": "repo"}, "components": {}})
    book = tmp_path / "touch.yaml"
    book.write_text(
        yaml.safe_dump(
            {"name": "touch", "steps": [{"name": "touch", "action": "command", "with": {"argv": ["touch", str(made)]}}]}
        )
    )
    _run(aura, "run", str(book), umask=umask)
    assert _mode(made) == 0o666 & ~umask
    assert _mode(aura.root / "state" / "journal.db") == 0o600  # aura-ops' own file stays owner-only
