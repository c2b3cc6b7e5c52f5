"""The orders that an incremental snapshot and a restore assume agree: the backup's walk of the
source (``walk_folders``), the index it writes, the previous index read beside the next walk
(``FolderLines``), the restore's walk of a target (``walk``) and ``walk_before``, for names that
sort otherwise as bytes, with '/' against '-', '.' or ' ', and names that are not UTF-8. A
mismatch would only take a slower path (a file copied, not linked): the counts of linked files
show it. And the target's walk beside the index never goes through a symlink at the target."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from aura_ops.components import files
from aura_ops.components.base import RestoreRequest, SnapshotTarget
from aura_ops.components.files import FilesComponent, FilesManifest, stored
from aura_ops.config import FilesConfig
from aura_ops.errors import UsageError
from aura_ops.hosts import LocalHost
from aura_ops.hosts.local import walk
from aura_ops.repository import Snapshot
from aura_ops.state import temporaries

# as str "\udcff" (the byte 0xff) < "\ue000" < "\U0001f600"; as bytes ff > f0 9f ... > ee 80 80
NAMES = ["a", "a b", "a!", "a-b", "a.b", "a0", "A", os.fsdecode(b"\xff"), "\ue000", "\U0001f600", "~"]
FOLDERS = ["a", "a-b", "a.b", "a b", os.fsdecode(b"\xfe-dir"), "\ue000", "\U0001f600", "a/a", "a/a-b", "a/a/a.b"]


def _component(source: Path) -> FilesComponent:
    return FilesComponent("uploads", FilesConfig(type="files", path=source), LocalHost(), LocalHost())


def _take(component: FilesComponent, repository: Path, snapshot_id: str, previous: Snapshot | None) -> Snapshot:
    folder = repository / snapshot_id / "uploads"
    folder.mkdir(parents=True)
    manifest = component.snapshot(SnapshotTarget(snapshot_id, folder, previous))
    sections = {"uploads": manifest.section()}
    return Snapshot(snapshot_id, repository / snapshot_id, {"components": sections, "checksum_algorithm": "sha256"})


def _section(snapshot: Snapshot) -> FilesManifest:
    return FilesManifest.model_validate(snapshot.manifest["components"]["uploads"])


def _restore(component: FilesComponent, snapshot: Snapshot, to: Path, state: Path, **request: Any) -> dict[str, Any]:
    with temporaries.bound(SimpleNamespace(state=SimpleNamespace(path=state))):
        return component.restore(snapshot, RestoreRequest(to=str(to), replace=True, run_id="r1", **request))


def _odd_tree(root: Path) -> int:
    """Folders and files of odd names in odd places; the number of files."""
    count = 0
    for folder in ["", *FOLDERS]:
        (root / folder).mkdir(parents=True, exist_ok=True)
    for folder in ["", *FOLDERS]:
        for name in NAMES:
            if (root / folder / name).exists():  # (a folder of that name)
                continue
            (root / folder / name).write_bytes(os.fsencode(f"{folder}/{name}"))
            count += 1
    return count


def test_the_backup_walk_the_index_and_the_restore_walk_agree_on_names_that_sort_otherwise(tmp_path: Path) -> None:
    source, repository = tmp_path / "source", tmp_path / "repo"
    try:
        file_count = _odd_tree(source)
    except OSError as exc:  # a file system that refuses names that are not UTF-8
        pytest.skip(f"cannot create the odd names: {exc}")
    component = _component(source)
    first = _take(component, repository, "s1", None)

    folders = LocalHost().walk_folders(str(source))
    backup_order = [f"{folder}/{name}" if folder else name for folder, entries in folders for name, _ in entries]
    root_names = [path for path in backup_order if "/" not in path]
    assert root_names != sorted(root_names, key=os.fsencode)  # (the names do sort otherwise as bytes)
    index = first.component_dir("uploads") / files.INDEX
    index_order = [stored.decode_entry(orjson.loads(line))["p"] for line in index.read_bytes().splitlines()]
    assert index_order == backup_order
    assert all(stored.walk_before(a, b) for a, b in zip(index_order, index_order[1:], strict=False))
    assert stored.read_outline(LocalHost(), index).ordered  # (restore and verify read beside it)

    copy = tmp_path / "copy"
    report = _restore(component, first, copy, tmp_path / "state")
    assert report["copied_files"] == file_count
    assert [relative for relative, _ in walk(str(copy))] == index_order  # the restore's walk of a target
    again = _restore(component, first, copy, tmp_path / "state")
    assert (again["copied_files"], again["linked_files"]) == (0, file_count)  # every file found beside the index

    second = _take(component, repository, "s2", first)  # the previous index read beside the walk
    assert (_section(second).copied_files, _section(second).linked_files) == (0, file_count)
    assert index.read_bytes() == (second.component_dir("uploads") / files.INDEX).read_bytes()
    assert component.verify(second)["problems"] == []


def test_a_target_that_is_a_symlink_to_a_folder_is_never_read_through_and_the_folder_it_names_is_untouched(
    tmp_path: Path,
) -> None:
    """The folder a symlink at the target names is outside the target: its files are never
    hard-linked into the staging tree (their ctime would move: the next incremental backup of
    that folder would copy them again), and a dry run does not take its content for the
    target's. (The restore itself refuses a symlink at the target, as it did.)"""
    source = tmp_path / "source"
    source.mkdir()
    for number in range(3):
        (source / f"f{number}").write_bytes(f"file {number}".encode())
    component = _component(source)
    snapshot = _take(component, tmp_path / "repo", "s1", None)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(source, elsewhere)  # the same files: content, mode, mtime
    before = {name: os.stat(elsewhere / name) for name in os.listdir(elsewhere)}
    target = tmp_path / "target"
    os.symlink(elsewhere, target)

    dry = _restore(component, snapshot, target, tmp_path / "state", dry_run=True)
    assert sorted(dry["changes"]) == ["creating f0", "creating f1", "creating f2"]
    with pytest.raises(UsageError, match="is no longer a folder; it was not replaced"):
        _restore(component, snapshot, target, tmp_path / "state")
    assert target.is_symlink()
    for name, st in before.items():
        now = os.stat(elsewhere / name)
        assert (now.st_nlink, now.st_ctime_ns, now.st_ino) == (1, st.st_ctime_ns, st.st_ino), name
