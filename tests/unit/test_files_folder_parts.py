"""A files snapshot of a large folder, taken in parts (issue 12, memory: one folder of 100,000
files was walked, matched against the previous index and copied whole: 250 MB peak RSS). The
walk hands a folder over ``snapshot.BATCH`` entries at a time; each part is matched against the
previous index's lines of the same names only (``FolderLines.files_in(folder, through)``), and
no call holds more than one part. Every test lowers the bound and checks that the snapshot is
exactly what a full re-read records, unchanged files linked, changed ones copied."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from aura_ops.components import files
from aura_ops.components.files import snapshot as files_snapshot
from aura_ops.components.files.stored import FolderLines
from aura_ops.hosts import LocalHost
from aura_ops.hosts.base import StatResult
from tests.unit.test_files_incremental import (
    _component,
    _index,
    _linked,
    _odd,
    _same_as_a_full_reread,
    _section,
    _stored,
    _take,
    _write,
)

Listed = tuple[str, StatResult]


def _one_folder(source: Path, count: int) -> list[str]:
    names = [f"f{number:03d}" for number in range(count)]
    for name in names:
        _write(source / name, f"file {name}".encode())
    _write(source / "f010-sub" / "inner", b"a folder among the files")
    os.link(source / "f003", source / "f031-hardlink")  # hard links whose names fall in other parts
    os.symlink("f001", source / "f020-symlink")
    os.setxattr(source / "f017", "user.origin", b"aura-test")
    os.chmod(source / "f018", 0o640)
    return names


class _Largest:
    """The most names one call of the bulk operations was handed while the snapshot ran."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fetched = self.linked = self.matched = 0
        fetch_files, link_names, files_in = LocalHost.fetch_files, LocalHost.link_names, FolderLines.files_in

        def fetch(
            host: LocalHost, folder: str, local: str, listed: Sequence[tuple[str, StatResult]], *a: Any, **k: Any
        ) -> Any:
            self.fetched = max(self.fetched, len(listed))
            return fetch_files(host, folder, local, listed, *a, **k)

        def link(host: LocalHost, existing: str, new: str, names: Sequence[str]) -> list[tuple[str, int]]:
            self.linked = max(self.linked, len(names))
            return link_names(host, existing, new, names)

        def match(lines: FolderLines, folder: str, names: Sequence[str] | None = None) -> files.stored.FileLines:
            found = files_in(lines, folder, names)
            self.matched = max(self.matched, len(found))
            return found

        monkeypatch.setattr(LocalHost, "fetch_files", fetch)
        monkeypatch.setattr(LocalHost, "link_names", link)
        monkeypatch.setattr(FolderLines, "files_in", match)


@pytest.mark.parametrize("batch", [1, 4, 7])
def test_a_large_folder_is_snapshotted_in_parts_and_the_incremental_is_what_a_full_reread_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    monkeypatch.setattr(files_snapshot, "BATCH", batch)
    largest = _Largest(monkeypatch)
    source, repository = tmp_path / "source", tmp_path / "repo"
    names = _one_folder(source, 40)
    component = _component(source)
    first = _take(component, repository, "s1", None)
    assert (_section(first).copied_files, _section(first).file_count) == (40 + 1, 42)  # (+ inner, + a hard link)
    assert largest.fetched <= batch and largest.linked == 0

    _write(source / "f006", b"file f006 changed")  # at a part's edge for batch 1 and 7
    (source / "f013").unlink()
    _write(source / "f021a", b"new, between old names")
    os.chmod(source / "f028", 0o600)  # a mode change: copied again
    _write(source / "f039", b"file f039")  # the last name rewritten with the same content: copied
    second = _take(component, repository, "s2", first)
    section = _section(second)
    assert section.previous == "s1"
    assert (section.copied_files, section.linked_files) == (4, 40 - 4 + 1)  # (+ f010-sub/inner linked)
    unchanged = [name for name in names if name not in ("f006", "f013", "f028", "f039", "f003")]
    assert all(_linked(first, second, name) for name in unchanged)
    assert not any(_linked(first, second, name) for name in ("f006", "f028", "f039"))
    assert _stored(second, "f006").read_bytes() == b"file f006 changed"
    assert _stored(second, "f003").stat().st_ino == _stored(second, "f031-hardlink").stat().st_ino
    assert os.getxattr(_stored(second, "f017"), "user.origin") == b"aura-test"
    assert (_stored(second, "f018").stat().st_mode & 0o777, _stored(second, "f028").stat().st_mode & 0o777) == (
        0o640,
        0o600,
    )
    assert 1 <= largest.matched <= batch  # (f013, deleted, is read but not kept)
    assert 1 <= largest.linked <= batch and largest.fetched <= batch
    _same_as_a_full_reread(component, repository, second)


def test_names_that_sort_otherwise_as_bytes_are_matched_across_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files_snapshot, "BATCH", 2)
    source, repository = tmp_path / "source", tmp_path / "repo"
    names = [_odd(b"\xff"), "\ue000", _odd(b"caf\xe9"), "café", "Zed", "alpha", "~tilde"]
    for name in names:
        try:
            _write(source / name, os.fsencode(name))
        except OSError as exc:  # a file system that refuses names that are not UTF-8
            pytest.skip(f"cannot create {name!r}: {exc}")
    component = _component(source)
    first = _take(component, repository, "s1", None)
    _write(source / "café", b"changed")
    second = _take(component, repository, "s2", first)
    assert (_section(second).copied_files, _section(second).linked_files) == (1, len(names) - 1)
    assert all(_linked(first, second, name) for name in names if name != "café")
    _same_as_a_full_reread(component, repository, second)


def test_folder_lines_give_a_folder_a_part_at_a_time_and_go_on_to_the_next_folder(tmp_path: Path) -> None:
    source, repository = tmp_path / "source", tmp_path / "repo"
    for name in ("a", "b", "c", "d", "e"):
        _write(source / name, name.encode())
    _write(source / "c-dir" / "x", b"x")
    _write(source / "z" / "y", b"y")
    first = _take(_component(source), repository, "s1", None)
    assert list(_index(first)) == ["a", "b", "c", "c-dir", "d", "e", "z", "c-dir/x", "z/y"]
    with open(first.component_dir("uploads") / files.INDEX, "rb") as index:
        lines = FolderLines(index, "sha256")
        assert list(lines.files_in("", ["a", "b"])) == ["a", "b"]
        assert list(lines.files_in("", ["c", "c-dir"])) == ["c"]  # (a folder's line: not a file's)
        assert list(lines.files_in("", ["e"])) == ["e"]  # "d", gone from the walk, is read, not kept
        assert lines.files_in("", []) == {}
        assert list(lines.files_in("c-dir")) == ["x"]  # (without names: every file of the folder)
        assert lines.files_in("new", ["y"]) == {}  # a folder the index does not list
        assert list(lines.files_in("z", ["y"])) == ["y"]
        assert lines.files_in("z", ["zz"]) == {}
        lines.finish()


def test_folder_lines_hold_a_bounded_number_of_entries_of_names_gone_from_the_folder(tmp_path: Path) -> None:
    """A folder whose 1,000 files are all gone but one new one: the one part asked for holds
    what its names find, not the 1,000 lines read past."""
    source, repository = tmp_path / "source", tmp_path / "repo"
    for number in range(1000):
        _write(source / f"f{number:04d}", b"x")
    first = _take(_component(source), repository, "s1", None)
    with open(first.component_dir("uploads") / files.INDEX, "rb") as index:
        lines = FolderLines(index, "sha256")
        found = lines.files_in("", ["f0500", "zzz"])
        assert list(found) == ["f0500"]
        assert list(lines.files_in("", ["zzzz"])) == []


def test_what_a_large_stored_folder_holds_beyond_its_index_is_found_by_the_merge_of_both_in_name_order(
    tmp_path: Path,
) -> None:
    """The restore's check of a stored tree against its index merges each folder's index lines
    with the folder's names as stored (sorted), instead of a set of the index's names beside a
    listing of the folder (187 MB RSS restoring 400,000 files in one folder): names planted
    before the first, between two, after the last, in place of a name the index lists below,
    and in an empty folder are all found, nothing else."""
    source, repository = tmp_path / "source", tmp_path / "repo"
    for number in range(300):
        _write(source / f"f{number:03d}", b"x")
    (source / "empty").mkdir()
    _write(source / "sub" / "inner", b"inner")
    first = _take(_component(source), repository, "s1", None)
    tree = first.component_dir("uploads") / files.TREE
    planted = ["0before", "f150a", "zzz-after", "empty/in-empty", "sub/0first"]
    for relative in planted:
        (tree / relative).write_bytes(b"planted")
    outline = files.stored.read_outline(LocalHost(), first.component_dir("uploads") / files.INDEX, "sha256", str(tree))
    assert outline.problems == [] and outline.unlisted == sorted(planted)
    assert outline.count == 300 + 3  # (the index read whole: 300 files, two folders, one file in one)
    problems = _component(source).verify(first)["problems"]
    assert sorted(problem for problem in problems if "not in the index" in problem) == [
        f"uploads: {relative}: not in the index" for relative in sorted(planted)
    ]
