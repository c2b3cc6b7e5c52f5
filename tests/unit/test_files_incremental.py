"""Incremental files snapshots: the walk of the source merged with the previous index read as a
stream. Every test compares the index an incremental snapshot writes with the index of a full
re-read of the same tree (a snapshot without a previous one, every file copied and hashed), and
checks which stored files are hard links to the previous snapshot's copies."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from aura_ops import logs
from aura_ops.components import files
from aura_ops.components.base import SnapshotTarget
from aura_ops.components.files import FilesComponent, FilesManifest
from aura_ops.config import FilesConfig
from aura_ops.hosts import LocalHost
from aura_ops.repository import Snapshot


def _component(source: Path, **options: Any) -> FilesComponent:
    return FilesComponent("uploads", FilesConfig(type="files", path=source, **options), LocalHost())


def _take(component: FilesComponent, repository: Path, snapshot_id: str, previous: Snapshot | None) -> Snapshot:
    folder = repository / snapshot_id / "uploads"
    folder.mkdir(parents=True)
    manifest = component.snapshot(SnapshotTarget(snapshot_id, folder, previous))
    sections = {"uploads": manifest.section()}
    return Snapshot(snapshot_id, repository / snapshot_id, {"components": sections, "checksum_algorithm": "sha256"})


def _section(snapshot: Snapshot) -> FilesManifest:
    return FilesManifest.model_validate(snapshot.manifest["components"]["uploads"])


def _index(snapshot: Snapshot) -> dict[str, dict[str, Any]]:
    index = files.read_index(LocalHost(), snapshot.component_dir("uploads") / files.INDEX)
    assert index.problems == []
    return index.entries


def _lines(snapshot: Snapshot) -> list[bytes]:
    return (snapshot.component_dir("uploads") / files.INDEX).read_bytes().splitlines()


def _stored(snapshot: Snapshot, relative: str) -> Path:
    return snapshot.component_dir("uploads") / files.TREE / relative


def _same_as_a_full_reread(component: FilesComponent, repository: Path, incremental: Snapshot) -> None:
    """The incremental snapshot's index holds exactly what a full re-read of the tree records,
    in the same order, and the snapshot verifies."""
    full = _take(component, repository, f"{incremental.id}-full", None)
    assert _index(incremental) == _index(full)
    assert list(_index(incremental)) == list(_index(full))  # the walk's order
    assert component.verify(incremental)["problems"] == []


def _write(path: Path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _tree(root: Path) -> None:
    for folder in ("a", "a-b", "a.b", "a0", "a/deep/er", "b", "z"):
        for number in range(3):
            _write(root / folder / f"f{number}.txt", f"{folder} {number}".encode())
    _write(root / "top.txt", b"top")
    os.symlink("a/f0.txt", root / "link")


def _linked(first: Snapshot, second: Snapshot, relative: str) -> bool:
    return _stored(first, relative).stat().st_ino == _stored(second, relative).stat().st_ino


def test_renames_deletes_new_folders_and_type_changes_are_merged_as_a_full_reread_records_them(
    tmp_path: Path,
) -> None:
    source, repository = tmp_path / "source", tmp_path / "repo"
    _tree(source)
    component = _component(source)
    first = _take(component, repository, "s1", None)

    (source / "a" / "f1.txt").rename(source / "a" / "renamed.txt")  # a rename: a new name, the same inode
    (source / "a-b" / "f2.txt").unlink()
    shutil.rmtree(source / "a.b")  # a whole folder gone
    _write(source / "a" / "deep" / "new" / "n.txt", b"new folder below an old one")
    _write(source / "a1" / "n.txt", b"new folder between old ones")
    _write(source / "0first" / "n.txt", b"new folder before every old one")
    (source / "b" / "f0.txt").unlink()
    (source / "b" / "f0.txt").mkdir()  # file -> folder
    _write(source / "b" / "f0.txt" / "inside.txt", b"inside")
    shutil.rmtree(source / "z")
    _write(source / "z", b"folder -> file")
    (source / "top.txt").unlink()
    os.symlink("a0", source / "top.txt")  # file -> symlink
    (source / "link").unlink()
    _write(source / "link", b"symlink -> file")
    _write(source / "a0" / "f1.txt", b"a0 1 changed")  # same size as before: mtime and ctime differ

    second = _take(component, repository, "s2", first)
    section = _section(second)
    assert section.previous == "s1"
    assert _linked(first, second, "a/f0.txt") and _linked(first, second, "a/deep/er/f2.txt")
    assert _linked(first, second, "a-b/f0.txt") and _linked(first, second, "a0/f0.txt")
    assert not _linked(first, second, "a0/f1.txt")
    assert _stored(second, "a0/f1.txt").read_bytes() == b"a0 1 changed"
    assert _stored(second, "z").read_bytes() == b"folder -> file"
    assert os.readlink(_stored(second, "top.txt")) == "a0"
    copied = {"a/renamed.txt", "a/deep/new/n.txt", "a1/n.txt", "0first/n.txt", "b/f0.txt/inside.txt", "z", "link"}
    assert (section.copied_files, section.linked_files) == (len(copied) + 1, 11)
    _same_as_a_full_reread(component, repository, second)


def test_unchanged_lines_are_reused_verbatim_and_a_later_snapshot_links_against_an_incremental_one(
    tmp_path: Path,
) -> None:
    source, repository = tmp_path / "source", tmp_path / "repo"
    _tree(source)
    component = _component(source)
    first = _take(component, repository, "s1", None)
    second = _take(component, repository, "s2", first)
    assert (_section(second).copied_files, _section(second).linked_files) == (0, 22)
    assert _lines(second) == _lines(first)
    _write(source / "a" / "f0.txt", b"changed again")
    third = _take(component, repository, "s3", second)
    assert (_section(third).copied_files, _section(third).linked_files) == (1, 21)
    assert _linked(first, third, "a/f1.txt") and not _linked(second, third, "a/f0.txt")
    _same_as_a_full_reread(component, repository, third)


def _odd(name: bytes) -> str:
    return os.fsdecode(name)


def test_names_that_sort_otherwise_as_bytes_and_names_that_are_not_utf8_are_matched(tmp_path: Path) -> None:
    source, repository = tmp_path / "source", tmp_path / "repo"
    # as str, "\udcff" (the byte 0xff) sorts before "\ue000" (bytes ee 80 80); as bytes, after
    names = [_odd(b"\xff"), "\ue000", _odd(b"caf\xe9"), "café", "Zed", "alpha", "~tilde"]
    for folder in ("", _odd(b"dir\xfe"), "\ue000dir", "plain"):
        for name in names:
            try:
                _write(source / folder / name, os.fsencode(f"{folder}/{name}"))
            except OSError as exc:  # a file system that refuses names that are not UTF-8
                pytest.skip(f"cannot create {name!r}: {exc}")
    component = _component(source)
    first = _take(component, repository, "s1", None)
    _write(source / _odd(b"dir\xfe") / _odd(b"\xff"), b"changed")
    _write(source / "\ue000dir" / _odd(b"new\xfa"), b"new")
    second = _take(component, repository, "s2", first)
    assert (_section(second).copied_files, _section(second).linked_files) == (2, 4 * len(names) - 1)
    odd_folder, odd_file, other = _odd(b"dir\xfe"), _odd(b"\xff"), _odd(b"caf\xe9")
    assert _linked(first, second, f"{odd_folder}/{other}") and not _linked(first, second, f"{odd_folder}/{odd_file}")
    _same_as_a_full_reread(component, repository, second)


def test_a_previous_index_that_does_not_hash_as_recorded_is_not_trusted_and_every_file_is_copied(
    tmp_path: Path,
) -> None:
    source, repository = tmp_path / "source", tmp_path / "repo"
    _tree(source)
    component = _component(source)
    first = _take(component, repository, "s1", None)
    _write(source / "a" / "f0.txt", b"a 0 CHANGED")  # changed; the tampered index claims otherwise
    os.utime(source / "a" / "f0.txt", ns=(1, 1))
    index = first.component_dir("uploads") / files.INDEX
    tampered = []
    for line in index.read_bytes().splitlines(keepends=True):
        if b'"p":"a/f0.txt"' in line:
            st = (source / "a" / "f0.txt").stat()
            entry = files.decode_entry(orjson.loads(line))
            entry.update(s=st.st_size, mt=st.st_mtime_ns, ct=st.st_ctime_ns, i=st.st_ino)
            line = files.encode_line(entry)
        tampered.append(line)
    index.write_bytes(b"".join(tampered))  # the manifest still records the hash of the original

    console = io.StringIO()
    logs.configure(console=console, pretty=False)
    try:
        second = _take(component, repository, "s2", first)
    finally:
        logs.configure()
    events = [json.loads(line) for line in console.getvalue().splitlines()]
    assert any(event["event"] == "files.previous_unusable" for event in events)
    assert (_section(second).copied_files, _section(second).linked_files, _section(second).previous) == (22, 0, None)
    assert _stored(second, "a/f0.txt").read_bytes() == b"a 0 CHANGED"
    _same_as_a_full_reread(component, repository, second)


def test_a_previous_copy_that_cannot_be_linked_is_copied_and_a_symlinked_folder_is_never_followed(
    tmp_path: Path,
) -> None:
    source, repository = tmp_path / "source", tmp_path / "repo"
    _tree(source)
    component = _component(source)
    first = _take(component, repository, "s1", None)
    _stored(first, "a/f1.txt").unlink()  # a damaged previous tree: the copy is gone
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(_stored(first, "b"), elsewhere)
    shutil.rmtree(_stored(first, "b"))
    os.symlink(elsewhere, _stored(first, "b"))  # a folder of the previous tree replaced by a symlink
    second = _take(component, repository, "s2", first)
    assert (_section(second).copied_files, _section(second).linked_files) == (4, 18)
    assert _stored(second, "a/f1.txt").read_bytes() == b"a 1"
    for number in range(3):
        stored = _stored(second, f"b/f{number}.txt")
        assert stored.stat().st_ino != (elsewhere / f"f{number}.txt").stat().st_ino
        assert stored.read_bytes() == f"b {number}".encode()
    assert _linked(first, second, "a/f0.txt")
    _same_as_a_full_reread(component, repository, second)


def test_by_default_a_ctime_only_change_copies_the_file_again(tmp_path: Path) -> None:
    source, repository = tmp_path / "source", tmp_path / "repo"
    _tree(source)
    component = _component(source)
    first = _take(component, repository, "s1", None)
    os.link(source / "a" / "f0.txt", tmp_path / "other-name")  # a hard-link copy of the source: ctime moves
    (tmp_path / "other-name").unlink()
    os.chmod(source / "a" / "f1.txt", 0o644)  # a chmod to the same mode: ctime moves
    second = _take(component, repository, "s2", first)
    assert (_section(second).copied_files, _section(second).linked_files) == (2, 20)
    assert not _linked(first, second, "a/f0.txt") and not _linked(first, second, "a/f1.txt")
    _same_as_a_full_reread(component, repository, second)


def test_with_ignore_ctime_a_ctime_only_change_is_linked_and_the_index_records_the_new_ctime(
    tmp_path: Path,
) -> None:
    source, repository = tmp_path / "source", tmp_path / "repo"
    _tree(source)
    component = _component(source, ignore_ctime=True)
    first = _take(component, repository, "s1", None)
    os.link(source / "a" / "f0.txt", tmp_path / "other-name")
    (tmp_path / "other-name").unlink()
    os.chmod(source / "a" / "f1.txt", 0o644)
    second = _take(component, repository, "s2", first)
    assert (_section(second).copied_files, _section(second).linked_files) == (0, 22)
    assert _linked(first, second, "a/f0.txt") and _linked(first, second, "a/f1.txt")
    assert _index(second)["a/f0.txt"]["ct"] == (source / "a" / "f0.txt").stat().st_ctime_ns
    _same_as_a_full_reread(component, repository, second)


def test_with_ignore_ctime_changes_of_size_mtime_mode_or_xattrs_are_still_copied(tmp_path: Path) -> None:
    source, repository = tmp_path / "source", tmp_path / "repo"
    _tree(source)
    component = _component(source, ignore_ctime=True)
    first = _take(component, repository, "s1", None)
    _write(source / "a" / "f0.txt", b"a longer content")  # size (and mtime)
    before = (source / "a" / "f1.txt").stat()
    _write(source / "a" / "f1.txt", b"A 1")  # the same size, the mtime put back: not seen (as restic)
    os.utime(source / "a" / "f1.txt", ns=(before.st_atime_ns, before.st_mtime_ns))
    stamp = (source / "a" / "f2.txt").stat()
    _write(source / "a" / "f2.txt", b"A 2")  # the same size, another mtime
    os.utime(source / "a" / "f2.txt", ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000))
    os.chmod(source / "b" / "f0.txt", 0o600)
    expected_copies = 3
    try:
        os.setxattr(source / "b" / "f1.txt", "user.tag", b"v1")
        expected_copies += 1
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.EPERM):
            raise
    second = _take(component, repository, "s2", first)
    assert (_section(second).copied_files, _section(second).linked_files) == (expected_copies, 22 - expected_copies)
    assert _stored(second, "a/f0.txt").read_bytes() == b"a longer content"
    assert _stored(second, "a/f2.txt").read_bytes() == b"A 2"
    assert _linked(first, second, "a/f1.txt")  # what ignore_ctime gives up: documented in the README
    assert not _linked(first, second, "b/f0.txt")
