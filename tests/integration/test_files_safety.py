"""Files restores never overwrite without consent nor outside their target; odd names and a
changing source are backed up, verified and restored."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Aura, base_config, require_tool
from tests.integration.test_files import describe, make_tree


@pytest.fixture(name="tree")
def _tree(tmp_path: Path, aura: Aura) -> Path:
    """test_files' tree (content, modes, links, xattrs, an ACL, excluded entries) as a component."""
    require_tool("rsync")
    require_tool("setfacl")
    root = tmp_path / "site"
    root.mkdir()
    make_tree(root)
    aura.write_config(base_config({"site": {"type": "files", "path": str(root), "exclude": ["cache/", "*.tmp"]}}))
    return root


def _names(root: Path) -> dict[bytes, bytes | None]:
    """Every path under ``root`` as raw bytes, with its content (files) or link target."""
    found: dict[bytes, bytes | None] = {}
    base = os.fsencode(root)
    for folder, dirs, files in os.walk(base):
        for name in dirs + files:
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, base)
            if os.path.islink(path):
                found[relative] = b"-> " + os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as data:
                    found[relative] = data.read()
            else:
                found[relative] = None
    return found


# ---------------------------------------------------------------- consent


def test_restore_into_a_non_empty_to_path_needs_yes_and_without_it_changes_nothing(
    tree: Path, aura: Aura, tmp_path: Path
) -> None:
    aura("backup")
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("not in the snapshot")
    result = aura("restore", "latest", "--to-path", str(other), check=2)
    assert "--yes" in result.stderr
    assert str(other) in result.stderr
    assert (other / "precious.txt").read_text() == "not in the snapshot"
    assert sorted(p.name for p in other.iterdir()) == ["precious.txt"]

    # an empty or a missing folder needs no confirmation
    empty = tmp_path / "empty"
    empty.mkdir()
    aura("restore", "latest", "--to-path", str(empty))
    aura("restore", "latest", "--to-path", str(tmp_path / "missing" / "deeper"))
    assert describe(empty) == describe(tree) == describe(tmp_path / "missing" / "deeper")

    aura("restore", "latest", "--to-path", str(other), "--yes")
    assert describe(other) == describe(tree)


@pytest.mark.parametrize("where", ["repository", "repository-child", "repository-parent", "state", "logs-child"])
def test_to_path_at_or_around_the_repository_state_or_logs_is_refused_and_nothing_is_deleted(
    tree: Path, aura: Aura, tmp_path: Path, where: str
) -> None:
    snapshot = aura.json("backup")["id"]
    (tmp_path / "logs").mkdir(exist_ok=True)
    target = {
        "repository": aura.repo,
        "repository-child": aura.repo / "snapshots" / snapshot,
        "repository-parent": tmp_path,
        "state": tmp_path / "state",
        "logs-child": tmp_path / "logs" / "restored",
    }[where]
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    result = aura("restore", snapshot, "--to-path", str(target), "--yes", check=2)
    assert "refused" in result.stderr
    assert sorted(str(p) for p in tmp_path.rglob("*") if "logs" not in p.parts) == [
        p for p in before if "/logs" not in p
    ]
    aura("snapshots", "verify", snapshot)


@pytest.mark.parametrize("where", ["/", "/etc", "/usr/lib", "/var", "/proc/self", "link-to-etc"])
def test_to_path_at_a_system_folder_is_refused(tree: Path, aura: Aura, tmp_path: Path, where: str) -> None:
    aura("backup")
    if where == "link-to-etc":
        (tmp_path / "link-to-etc").symlink_to("/etc")
        where = str(tmp_path / "link-to-etc")
    # --dry-run: even the code before this check existed changed nothing with it
    result = aura("restore", "latest", "--to-path", where, "--yes", "--dry-run", check=2, timeout=120)
    assert "refused" in result.stderr


def test_a_to_path_symlink_is_resolved_and_symlinks_inside_the_target_are_replaced_not_followed(
    tree: Path, aura: Aura, tmp_path: Path
) -> None:
    aura("backup")
    # a link to the folder that holds the repository is refused like the folder itself
    (tmp_path / "sneaky").symlink_to(tmp_path)
    aura("restore", "latest", "--to-path", str(tmp_path / "sneaky"), "--yes", check=2)
    assert (aura.repo / "snapshots").is_dir()

    # a link to a plain folder restores into that folder, and the link stays a link
    outside = tmp_path / "outside"
    (outside / "keep").mkdir(parents=True)
    (outside / "keep" / "a.txt").write_text("outside the target")
    real = tmp_path / "real"
    real.mkdir()
    (real / "docs").symlink_to(outside / "keep")  # the snapshot has a folder docs/
    (real / "escape").symlink_to(outside)  # not in the snapshot: deleted, not followed
    (tmp_path / "via-link").symlink_to(real)
    aura("restore", "latest", "--to-path", str(tmp_path / "via-link"), "--yes")
    assert (tmp_path / "via-link").is_symlink()
    assert describe(real) == describe(tree)
    assert (outside / "keep" / "a.txt").read_text() == "outside the target"
    assert sorted(p.name for p in outside.iterdir()) == ["keep"]


# ---------------------------------------------------------------- odd input


def test_non_utf8_file_names_are_backed_up_verified_and_restored_byte_exact(aura: Aura, tmp_path: Path) -> None:
    source = tmp_path / "odd"
    raw = os.fsencode(source)
    os.makedirs(raw + b"/\xff\xfe/sub")
    for name, content in ((b"caf\xe9.txt", b"latin-1"), (b"\xff\xfe/sub/\x80\x81", b"deep"), (b"plain.txt", b"ok")):
        with open(raw + b"/" + name, "wb") as out:
            out.write(content)
    os.symlink(b"caf\xe9.txt", raw + b"/link-\xe9")
    os.link(raw + b"/caf\xe9.txt", raw + b"/\xff\xfe/hard-\xe9")
    aura.write_config(base_config({"odd": {"type": "files", "path": str(source)}}))
    before = _names(source)

    snapshot = aura.json("backup")["id"]
    assert aura.json("snapshots", "verify", snapshot, "--deep")["ok"]
    aura("restore", snapshot, "--to-path", str(tmp_path / "copy"))
    assert _names(tmp_path / "copy") == before

    os.unlink(raw + b"/caf\xe9.txt")
    with open(raw + b"/\xff\xfe/sub/\x80\x81", "wb") as out:
        out.write(b"changed")
    aura("restore", snapshot, "--yes")
    assert _names(source) == before
    hard = os.stat(raw + b"/\xff\xfe/hard-\xe9")
    assert hard.st_ino == os.stat(raw + b"/caf\xe9.txt").st_ino


def _churn(root: Path, stop: threading.Event, removed: set[str]) -> None:
    """Delete and recreate folders and files under ``root`` until ``stop`` (bounded by the caller)."""
    rng = random.Random(9)
    while not stop.is_set():
        folder = root / f"d{rng.randrange(40):02d}"
        if rng.random() < 0.5:
            for path in folder.rglob("*") if folder.exists() else []:
                removed.add(str(path))
            removed.add(str(folder))
            shutil.rmtree(folder, ignore_errors=True)
            time.sleep(0.002)
            folder.mkdir(exist_ok=True)
            for index in range(rng.randrange(1, 30)):
                (folder / f"new{index}.txt").write_bytes(os.urandom(200))
        else:
            for index in rng.sample(range(50), 10):
                path = folder / f"f{index:02d}.txt"
                removed.add(str(path))
                try:
                    path.unlink()
                    time.sleep(0.0005)
                    path.write_bytes(os.urandom(300))  # the same name appears again
                except FileNotFoundError:
                    pass


def test_files_vanishing_and_appearing_during_a_backup_give_warnings_not_a_failed_backup(
    aura: Aura, tmp_path: Path
) -> None:
    source = tmp_path / "busy"
    for d in range(40):
        (source / f"d{d:02d}" / "sub").mkdir(parents=True)
        for f in range(50):
            (source / f"d{d:02d}" / f"f{f:02d}.txt").write_bytes(os.urandom(2000))
        (source / f"d{d:02d}" / "sub" / "x.txt").write_text("x")
    aura.write_config(base_config({"busy": {"type": "files", "path": str(source)}}))

    warned: list[dict[str, Any]] = []
    removed: set[str] = set()
    snapshots = []
    for _attempt in range(12):  # a race: bounded rounds until one met a vanishing file; every one must succeed
        if warned and len(snapshots) >= 2:
            break
        stop = threading.Event()
        churner = threading.Thread(target=_churn, args=(source, stop, removed), daemon=True)
        churner.start()
        try:
            result = aura("backup", "--json", check=None, timeout=120)
        finally:
            stop.set()
            churner.join(timeout=30)
        assert result.returncode == 0, result.stderr[-3000:]
        snapshots.append(json.loads(result.stdout)["id"])
        for line in result.stderr.splitlines():
            if line.startswith("{") and '"files.vanished"' in line:
                warned.append(json.loads(line))
    assert warned, f"no backup met a vanishing file in {len(snapshots)} attempts"
    for event in warned:
        assert event["level"] == "warning"
        assert event["path"] in removed
    for snapshot in snapshots:
        aura("snapshots", "verify", snapshot, "--deep")


def test_an_excluded_folder_made_during_an_in_place_restore_is_kept(aura: Aura, tmp_path: Path) -> None:
    """Excluded entries are neither restored nor deleted: one made while the restore builds its
    staging tree (after the target was first read) is carried into the new tree too."""
    source = tmp_path / "site"
    for folder in range(20):
        (source / f"d{folder}").mkdir(parents=True)
        for number in range(150):
            (source / f"d{folder}" / f"f{number}").write_bytes(os.urandom(8192))
    aura.write_config(base_config({"site": {"type": "files", "path": str(source), "exclude": ["cache/"]}}))
    aura("backup")
    (source / "d0" / "f0").write_text("changed since the backup")
    process = aura.popen("restore", "latest", "--yes")
    staging = f"{source}.aura-staging-"
    deadline = time.monotonic() + 60
    while not any(str(p).startswith(staging) for p in tmp_path.iterdir()) and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGSTOP)
    if not any(str(p).startswith(staging) for p in tmp_path.iterdir()):
        os.kill(process.pid, signal.SIGCONT)
        process.wait()
        pytest.skip("the restore finished before it could be stopped while building")
    (source / "cache").mkdir()
    (source / "cache" / "made-meanwhile").write_text("excluded: not the restore's to remove")
    os.kill(process.pid, signal.SIGCONT)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 0, stderr[-500:]
    assert (source / "d0" / "f0").read_bytes() != b"changed since the backup"  # restored
    assert (source / "cache" / "made-meanwhile").read_text() == "excluded: not the restore's to remove"
