"""A files restore and verify keep only an outline of the index in memory (folders, the files hard
links name) and read its entries again in order, beside the target's walk: odd names round trip,
an index not in walk order takes the path that keeps every type (and gives the same results), a
damaged or changed index is refused all the same."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from aura_ops.components import files
from aura_ops.components.base import RestoreRequest, SnapshotTarget
from aura_ops.components.files import FilesComponent, stored
from aura_ops.config import FilesConfig
from aura_ops.errors import VerificationError
from aura_ops.hosts import LocalHost
from aura_ops.hosts.local import walk
from aura_ops.repository import Snapshot
from aura_ops.state import temporaries

ODD = [
    "plain.txt",
    "new\nline.txt",
    "tab\tand space .txt",
    "back\\slash",
    os.fsdecode(b"latin1-\xe9\xff.bin"),  # not UTF-8: stored as base64 in the index
    "ünïcødé.txt",
    "-starts-with-dash",
    "a" * 200,
]


def _tree(root: Path) -> None:
    """Every entry kind, odd names, a deep path, many folders of files."""
    root.mkdir()
    for name in ODD:
        (root / name).write_bytes(name.encode("utf-8", "surrogateescape") * 3)
    deep = root.joinpath(*[f"level{depth}" for depth in range(40)])
    deep.mkdir(parents=True)
    (deep / "bottom.txt").write_bytes(b"bottom")
    folder = root / os.fsdecode(b"odd\ndir-\xfe")
    folder.mkdir()
    (folder / "inner.txt").write_bytes(b"inner")
    os.symlink("../plain.txt", folder / "to-plain")
    os.symlink("missing/target", root / "dangling")
    os.link(root / "plain.txt", root / "zz-hardlink")
    os.link(folder / "inner.txt", root / "a-hardlink-before-in-name-order")
    (root / "empty-dir").mkdir()
    rng = random.Random(7)
    for index in range(300):
        sub = root / f"d{index % 13}" / f"e{index % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{index}").write_bytes(rng.randbytes(rng.randint(0, 300)))
    (root / "cache").mkdir()
    (root / "cache" / "skipped").write_bytes(b"excluded")


def _component(source: Path) -> FilesComponent:
    config = FilesConfig(type="files", path=source, exclude=["cache/"])
    return FilesComponent("uploads", config, LocalHost(), LocalHost())


def _take(component: FilesComponent, repository: Path) -> Snapshot:
    folder = repository / "s1" / "uploads"
    folder.mkdir(parents=True)
    manifest = component.snapshot(SnapshotTarget("s1", folder, None))
    sections = {"uploads": manifest.section()}
    return Snapshot("s1", repository / "s1", {"components": sections, "checksum_algorithm": "sha256"})


def _describe(root: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    inodes: dict[int, str] = {}
    for relative, st in walk(str(root)):
        path = root / relative
        if os.path.islink(path):
            found[relative] = ("l", os.readlink(path))
        elif path.is_dir():
            found[relative] = ("d", st.st_mode, st.st_mtime_ns)
        else:
            first = inodes.setdefault(st.st_ino, relative)
            found[relative] = ("f", st.st_mode, st.st_mtime_ns, path.read_bytes(), first)
    return found


def _restore(component: FilesComponent, snapshot: Snapshot, to: Path, state: Path, **request: Any) -> dict[str, Any]:
    with temporaries.bound(SimpleNamespace(state=SimpleNamespace(path=state))):
        return component.restore(snapshot, RestoreRequest(to=str(to), replace=True, run_id="r1", **request))


def _unbounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read every index as one not in walk order would be (every path's type kept)."""

    def read_outline(store: Any, path: Any, algorithm: str = "sha256", tree: str | None = None) -> stored.Outline:
        return stored._read_outline(store, str(path), algorithm, tree, bounded=False)

    monkeypatch.setattr(stored, "read_outline", read_outline)
    monkeypatch.setattr("aura_ops.components.files.restorer.checked_sketch", stored.checked_outline)
    real = stored._check_tree
    monkeypatch.setattr(stored, "_check_tree", lambda *a, **k: real(*a[:5], bounded=False, firsts=None))


@pytest.fixture
def taken(tmp_path: Path) -> tuple[Path, FilesComponent, Snapshot]:
    source = tmp_path / "source"
    _tree(source)
    component = _component(source)
    return source, component, _take(component, tmp_path / "repo")


def _index_path(snapshot: Snapshot) -> Path:
    return snapshot.component_dir("uploads") / files.INDEX


def test_walk_before_is_the_order_of_a_walk_and_of_the_index(taken: tuple[Path, FilesComponent, Snapshot]) -> None:
    source, _, snapshot = taken
    walked = [relative for relative, _ in walk(str(source))]
    assert all(stored.walk_before(a, b) for a, b in zip(walked, walked[1:], strict=False))
    assert not any(stored.walk_before(b, a) for a, b in zip(walked, walked[1:], strict=False))
    rng = random.Random(3)
    for _ in range(2000):
        i, j = sorted(rng.sample(range(len(walked)), 2))
        assert stored.walk_before(walked[i], walked[j]) and not stored.walk_before(walked[j], walked[i])
    outline = stored.read_outline(LocalHost(), _index_path(snapshot))
    assert outline.ordered and outline.problems == []
    index = stored.read_index(LocalHost(), _index_path(snapshot))
    assert set(outline.kinds) == {p for p, e in index.entries.items() if e["t"] == "d"}  # folders only
    assert outline.firsts == {e["l"] for e in index.entries.values() if e["t"] == "h"}
    assert [p for p, _ in outline.entries(LocalHost())] == list(index.entries)
    assert outline.digest == index.digest


def test_odd_names_every_kind_and_a_deep_path_round_trip_and_verify(
    taken: tuple[Path, FilesComponent, Snapshot], tmp_path: Path
) -> None:
    source, component, snapshot = taken
    assert component.verify(snapshot)["problems"] == []
    expected = {p: v for p, v in _describe(source).items() if not p.startswith("cache")}
    for name in ODD:
        assert name in expected
    report = _restore(component, snapshot, tmp_path / "copy", tmp_path / "state")
    assert report["method"] == "swap" and report["linked_files"] == 0
    assert _describe(tmp_path / "copy") == expected
    again = _restore(component, snapshot, tmp_path / "copy", tmp_path / "state")  # in place: read beside the walk
    assert again["copied_files"] == 2  # the two files with a hard link (never reused: nlink 2)
    assert again["linked_files"] == report["copied_files"] - 2
    assert _describe(tmp_path / "copy") == expected


def _alter(target: Path) -> None:
    (target / "plain.txt").write_bytes(b"changed")
    (target / "extra-file").write_bytes(b"not in the snapshot")
    (target / "d1" / "e1" / "new-dir").mkdir()
    (target / "d1" / "e1" / "new-dir" / "x").write_bytes(b"x")
    os.remove(target / "d2" / "e2" / "f2")
    os.remove(target / "dangling")
    (target / "dangling").mkdir()
    (target / "dangling" / "below").write_bytes(b"below a folder that was a symlink")
    os.rename(target / "empty-dir", target / "empty-file")
    (target / "empty-dir").write_bytes(b"a file where a folder was")
    (target / "cache" / "kept").parent.mkdir(exist_ok=True)
    (target / "cache" / "kept").write_bytes(b"excluded: carried over")


def test_reading_beside_the_target_gives_what_reading_it_whole_gives(
    taken: tuple[Path, FilesComponent, Snapshot], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target's entries read beside the index (walk order) and read whole first (an index in
    another order): the same dry run, the same restored tree, the same verify problems."""
    source, component, snapshot = taken
    results = []
    for mode in ("beside", "whole"):
        if mode == "whole":
            _unbounded(monkeypatch)
        target = tmp_path / f"target-{mode}"
        _restore(component, snapshot, target, tmp_path / "state")
        _alter(target)
        dry = _restore(component, snapshot, target, tmp_path / "state", dry_run=True)
        report = _restore(component, snapshot, target, tmp_path / "state")
        tree = _describe(target)
        stored_tree = snapshot.component_dir("uploads") / files.TREE
        (stored_tree / "planted").write_bytes(b"slipped in")
        os.chmod(stored_tree / "d3" / "e0" / "f3", 0o600)
        problems = component.verify(snapshot)["problems"]
        os.remove(stored_tree / "planted")
        os.chmod(stored_tree / "d3" / "e0" / "f3", 0o644)
        assert tree["cache/kept"][3] == b"excluded: carried over"
        tree = {p: v for p, v in tree.items() if not p.startswith("cache")}
        assert tree == {p: v for p, v in _describe(source).items() if not p.startswith("cache")}
        results.append((dry["changes"], report["not_in_index"], report["copied_files"], tree, problems))
        assert problems == [
            "uploads: d3/e0/f3: mode -rw-------; the index says -rw-r--r--",
            "uploads: planted: not in the index",
        ]
        assert "deleting extra-file" in dry["changes"] and "deleting d1/e1/new-dir/x" in dry["changes"]
    assert results[0] == results[1]


def _rewrite(snapshot: Snapshot, lines: list[bytes]) -> None:
    """Write an index (and record its checksum in the in-memory manifest, as if sealed so)."""
    data = b"".join(lines)
    _index_path(snapshot).write_bytes(data)
    snapshot.manifest["components"]["uploads"]["artifacts"][files.INDEX]["hash"] = hashlib.sha256(data).hexdigest()


def test_an_index_not_in_walk_order_is_read_keeping_every_type_and_restores_the_same(
    taken: tuple[Path, FilesComponent, Snapshot], tmp_path: Path
) -> None:
    source, component, snapshot = taken
    lines = _index_path(snapshot).read_bytes().splitlines(keepends=True)
    # depth first (each folder's subtree right after it): parents first, but not walk order
    reordered = sorted(lines, key=lambda line: os.fsencode(stored.decode_entry(orjson.loads(line))["p"]).split(b"/"))
    assert reordered != lines
    _rewrite(snapshot, reordered)
    outline = stored.read_outline(LocalHost(), _index_path(snapshot))
    assert not outline.ordered and outline.problems == [] and len(outline.kinds) == len(lines)
    assert component.verify(snapshot)["problems"] == []
    _restore(component, snapshot, tmp_path / "copy", tmp_path / "state")
    _alter(tmp_path / "copy")
    _restore(component, snapshot, tmp_path / "copy", tmp_path / "state")
    tree = {p: v for p, v in _describe(tmp_path / "copy").items() if not p.startswith("cache")}
    assert tree == {p: v for p, v in _describe(source).items() if not p.startswith("cache")}


def _line(entry: dict[str, Any]) -> bytes:
    return orjson.dumps({"m": 0o40755, "u": 0, "g": 0, "mt": 1, **entry}) + b"\n"


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ([{"p": "evil", "t": "l", "l": "/etc"}, {"p": "evil/planted", "t": "d"}], "evil/planted is below evil"),
        ([{"p": "a/b", "t": "d"}], "a/b is below a"),
        ([{"p": "x", "t": "d"}, {"p": "x", "t": "l", "l": "/"}], "x is listed twice"),
        ([{"p": "h", "t": "h", "l": "f"}, {"p": "f", "t": "f", "s": 0, "h": ""}], "h is a hard link to f"),
        ([{"p": "x", "t": "d"}, {"p": "y", "t": "d"}, {"p": "x", "t": "d"}], "x is listed twice"),
    ],
)
def test_an_outline_finds_what_read_index_finds(lines: list[dict[str, Any]], problem: str, tmp_path: Path) -> None:
    index = tmp_path / files.INDEX
    index.write_bytes(b"".join(_line(line) for line in lines))
    problems = stored.read_outline(LocalHost(), index).problems
    assert problems == files.read_index(LocalHost(), index).problems
    assert len(problems) == 1 and problem in problems[0], problems


def test_a_hard_link_to_a_folder_in_walk_order_is_refused_by_restore_and_reported_by_verify(
    taken: tuple[Path, FilesComponent, Snapshot], tmp_path: Path
) -> None:
    """In walk order, a hard link is checked to name a file as the entries are read again."""
    _, component, snapshot = taken
    lines = _index_path(snapshot).read_bytes().splitlines(keepends=True)
    entries = [stored.decode_entry(orjson.loads(line)) for line in lines]
    number = next(i for i, e in enumerate(entries) if e["p"] == "zz-hardlink")
    assert entries[number]["t"] == "h"
    lines[number] = lines[number].replace(b'"l":"plain.txt"', b'"l":"d0"')
    _rewrite(snapshot, lines)
    assert stored.read_outline(LocalHost(), _index_path(snapshot)).ordered
    problems = component.verify(snapshot)["problems"]
    assert f"uploads: {files.INDEX} line {number + 1} is damaged: zz-hardlink is a hard link to d0" in problems[0]
    with pytest.raises(VerificationError, match="zz-hardlink is a hard link to d0"):
        _restore(component, snapshot, tmp_path / "copy", tmp_path / "state")
    with pytest.raises(VerificationError, match="zz-hardlink is a hard link to d0"):
        _restore(component, snapshot, tmp_path / "copy", tmp_path / "state", dry_run=True)
    assert not (tmp_path / "copy").exists()


@pytest.mark.parametrize(("outlined", "dry_run"), [("checked_sketch", False), ("checked_outline", True)])
def test_an_index_changed_after_it_was_outlined_stops_the_restore(
    taken: tuple[Path, FilesComponent, Snapshot],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    outlined: str,
    dry_run: bool,
) -> None:
    """The entries are read twice (a restore: hashed first, then read whole as it builds; a dry
    run: outlined, then read again): a change in between (even one keeping every type) is
    refused before the target is touched."""
    _, component, snapshot = taken
    real = getattr(stored, outlined)

    def then_changed(*args: Any) -> stored.Outline:
        outline: stored.Outline = real(*args)
        data = _index_path(snapshot).read_bytes()
        _index_path(snapshot).write_bytes(data.replace(b'"m":33188', b'"m":33261', 1))  # a mode: 0644 -> 0755
        return outline

    monkeypatch.setattr(f"aura_ops.components.files.restorer.{outlined}", then_changed)
    with pytest.raises(VerificationError, match="index.jsonl of snapshot s1 changed while it was read"):
        _restore(component, snapshot, tmp_path / "copy", tmp_path / "state", dry_run=dry_run)
    assert not (tmp_path / "copy").exists()
    assert [p.name for p in tmp_path.iterdir() if "staging" in p.name] == []


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda lines: lines.insert(5, b"{not json\n"), "line 6 is unreadable"),
        (lambda lines: lines.insert(5, _line({"p": "plain.txt/below", "t": "d"})), "line 6 is damaged"),
        (lambda lines: lines.append(_line({"p": "zz-last", "t": "x"})), "is unreadable"),
        (lambda lines: lines.append(_line({"p": "zz-last/below", "t": "d"})), "zz-last/below is below zz-last"),
    ],
)
def test_a_damaged_line_is_refused_by_a_restore_reading_the_index_once_as_by_the_outline(
    taken: tuple[Path, FilesComponent, Snapshot], tmp_path: Path, damage: Any, problem: str
) -> None:
    """A restore hashes the index first and checks each line as it builds: a damaged line (with
    the checksum recorded to match) is refused with the message the whole outline gives, the
    target never touched, nothing left beside it."""
    _, component, snapshot = taken
    lines = _index_path(snapshot).read_bytes().splitlines(keepends=True)
    damage(lines)
    _rewrite(snapshot, lines)
    with pytest.raises(VerificationError) as outlined:
        stored.checked_outline(LocalHost(), snapshot, "uploads")
    assert problem in str(outlined.value)
    with pytest.raises(VerificationError) as restored:
        _restore(component, snapshot, tmp_path / "copy", tmp_path / "state")
    assert str(restored.value) == str(outlined.value)
    assert not (tmp_path / "copy").exists()
    assert [p.name for p in tmp_path.iterdir() if "staging" in p.name] == []
