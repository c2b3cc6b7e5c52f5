"""Files snapshots with real rsync: round trips, incremental hard links, verification."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Aura, base_config, require_tool


def make_tree(root: Path) -> None:
    (root / "docs" / "deep" / "deeper").mkdir(parents=True)
    (root / "empty" / "nested-empty").mkdir(parents=True)
    (root / "cache").mkdir()
    (root / "docs" / "a.txt").write_text("alpha\n")
    (root / "docs" / "deep" / "b.bin").write_bytes(os.urandom(300_000))
    (root / "docs" / "deep" / "deeper" / "c.txt").write_text("gamma" * 1000)
    (root / "script.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "script.sh", 0o750)
    os.chmod(root / "docs" / "a.txt", 0o640)
    os.chmod(root / "empty", 0o711)
    (root / "link-to-a").symlink_to("docs/a.txt")
    (root / "dangling").symlink_to("does/not/exist")
    os.link(root / "docs" / "a.txt", root / "hardlink-to-a")
    (root / "cache" / "junk.tmp").write_text("excluded")
    (root / "notes.tmp").write_text("excluded too")
    os.setxattr(root / "docs" / "a.txt", "user.origin", b"aura-test")
    subprocess.run(["setfacl", "-m", "u:nobody:r", str(root / "docs" / "deep" / "b.bin")], check=True)
    os.utime(root / "docs" / "deep" / "deeper" / "c.txt", ns=(1_600_000_000_000_000_000,) * 2)


def describe(root: Path) -> dict[str, Any]:
    """Content and metadata of a tree (excluding what the config excludes)."""
    result: dict[str, Any] = {}
    inodes: dict[int, str] = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if relative.startswith("cache") or relative.endswith(".tmp"):
            continue
        st = path.lstat()
        item: dict[str, Any] = {"mode": stat.filemode(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
        if path.is_symlink():
            item["target"] = os.readlink(path)
        elif path.is_file():
            item["content"] = path.read_bytes()
            item["mtime"] = st.st_mtime_ns
            item["xattrs"] = {a: os.getxattr(path, a) for a in os.listxattr(path)}
            item["same_as"] = inodes.setdefault(st.st_ino, relative)
        result[relative] = item
    return result


@pytest.fixture
def tree(tmp_path: Path, aura: Aura) -> Path:
    require_tool("rsync")
    require_tool("setfacl")
    root = tmp_path / "site"
    root.mkdir()
    make_tree(root)
    aura.write_config(base_config({"site": {"type": "files", "path": str(root), "exclude": ["cache/", "*.tmp"]}}))
    return root


def test_round_trip_in_place_restores_content_modes_links_and_deletions(tree: Path, aura: Aura) -> None:
    before = describe(tree)
    snapshot = aura.json("backup")["id"]
    (tree / "docs" / "a.txt").write_text("changed")
    (tree / "script.sh").unlink()
    (tree / "new-file").write_text("should be deleted by the restore")
    (tree / "empty" / "nested-empty").rmdir()
    os.chmod(tree / "docs" / "deep" / "b.bin", 0o600)
    (tree / "link-to-a").unlink()
    (tree / "link-to-a").symlink_to("elsewhere")

    subprocess.run(["setfacl", "-b", str(tree / "docs" / "deep" / "b.bin")], check=True)

    aura("restore", snapshot, "--yes")

    assert describe(tree) == before
    assert "system.posix_acl_access" in before["docs/deep/b.bin"]["xattrs"]
    assert (tree / "cache" / "junk.tmp").read_text() == "excluded"  # excluded: left alone


def test_restore_dry_run_lists_changes_and_changes_nothing(tree: Path, aura: Aura) -> None:
    aura("backup")
    (tree / "new-file").write_text("x")
    changed = describe(tree)
    report = aura.json("restore", "latest", "--dry-run")
    changes = report["components"]["site"]["changes"]
    assert any("new-file" in line and "deleting" in line for line in changes)
    assert describe(tree) == changed


def test_restore_to_path_makes_an_identical_copy(tree: Path, aura: Aura, tmp_path: Path) -> None:
    aura("backup")
    aura("restore", "latest", "--to-path", str(tmp_path / "copy"))
    assert describe(tmp_path / "copy") == describe(tree)
    assert not (tmp_path / "copy" / "cache").exists()


def test_in_place_restore_without_yes_is_refused(tree: Path, aura: Aura) -> None:
    aura("backup")
    (tree / "new-file").write_text("x")
    result = aura("restore", "latest", check=2)
    assert "--yes" in result.stderr
    assert (tree / "new-file").exists()


def test_incremental_snapshot_hard_links_unchanged_files_and_copies_changed(tree: Path, aura: Aura) -> None:
    first = aura.json("backup")
    (tree / "docs" / "a.txt").write_text("alpha, edited\n")
    (tree / "added.txt").write_text("new")
    second = aura.json("backup")
    entry = second["components"]["site"]
    assert entry["previous"] == first["id"]
    assert entry["copied_files"] == 2  # a.txt (and its hard link shares it) + added.txt
    assert entry["linked_files"] == 3

    one = aura.repo / "snapshots" / first["id"] / "site" / "tree"
    two = aura.repo / "snapshots" / second["id"] / "site" / "tree"
    unchanged = "docs/deep/b.bin"
    assert (one / unchanged).stat().st_ino == (two / unchanged).stat().st_ino
    assert (one / "docs/a.txt").stat().st_ino != (two / "docs/a.txt").stat().st_ino
    assert (two / "docs/a.txt").read_text() == "alpha, edited\n"
    assert (two / "hardlink-to-a").stat().st_ino == (two / "docs/a.txt").stat().st_ino

    # verify hashes every stored file, also those an earlier verify hashed (bit rot keeps metadata)
    assert aura.json("snapshots", "verify", first["id"])["ok"]
    report = aura.json("snapshots", "verify", second["id"])["components"]["site"]
    assert report["files_hashed"] == 5


def test_special_files_are_skipped_with_a_warning(tree: Path, aura: Aura) -> None:
    os.mkfifo(tree / "a-fifo")
    result = aura("backup")
    assert "files.special_skipped" in result.stderr
    assert "a-fifo" in result.stderr


def test_flipped_byte_in_a_tree_file_or_the_index_fails_verify(tree: Path, aura: Aura) -> None:
    snapshot = aura.json("backup")["id"]
    component = aura.repo / "snapshots" / snapshot / "site"
    for victim in (component / "tree" / "docs" / "deep" / "b.bin", component / "index.jsonl"):
        original = victim.read_bytes()
        data = bytearray(original)
        data[len(data) // 3] ^= 0x40
        mode = victim.stat().st_mode
        victim.write_bytes(bytes(data))
        result = aura("snapshots", "verify", snapshot, "--deep", check=3)
        assert victim.name in result.stderr
        victim.write_bytes(original)
        os.chmod(victim, stat.S_IMODE(mode))
    aura("snapshots", "verify", snapshot)


def test_snapshot_folders_are_private(tree: Path, aura: Aura) -> None:
    snapshot = aura.json("backup")["id"]
    folder = aura.repo / "snapshots" / snapshot
    assert stat.S_IMODE(aura.repo.stat().st_mode) == 0o700
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "manifest.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "site" / "index.jsonl").stat().st_mode) == 0o600


def test_delete_removes_a_snapshot_and_keeps_later_ones_intact(tree: Path, aura: Aura) -> None:
    first = aura.json("backup")["id"]
    (tree / "docs" / "a.txt").write_text("v2")
    second = aura.json("backup")["id"]
    aura("snapshots", "delete", first, "--yes")
    ids = [s["id"] for s in aura.json("snapshots", "list")["snapshots"]]
    assert ids == [second]
    aura("snapshots", "verify", second, "--deep")


def test_full_disk_fails_with_one_line_and_leaves_no_snapshot(tree: Path, aura: Aura, tmp_path: Path) -> None:
    from tests.conftest import require

    require(os.geteuid() == 0, "root (to mount a small tmpfs as the repository)")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], check=True)
    try:
        aura.write_config(
            {"repository": {"path": str(small / "repo")}, "components": {"site": {"type": "files", "path": str(tree)}}}
        )
        result = aura("backup", check=1)
        errors = [line for line in result.stderr.splitlines() if line.startswith("aura-ops: error")]
        assert len(errors) == 1
        assert "no space left" in errors[0]
        assert aura.json("snapshots", "list")["snapshots"] == []
        assert list((small / "repo" / "snapshots").iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_restore_puts_back_a_same_size_edit_whose_mtime_was_kept(tree: Path, aura: Aura) -> None:
    """rsync's quick check (size + mtime) would skip this file; the restore must not."""
    target = tree / "docs" / "deep" / "deeper" / "c.txt"
    original = target.read_bytes()
    st = target.stat()
    snapshot = aura.json("backup")["id"]
    target.write_bytes(original.replace(b"gamma", b"GAMMA", 1))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    aura("restore", snapshot, "--yes")
    assert target.read_bytes() == original
