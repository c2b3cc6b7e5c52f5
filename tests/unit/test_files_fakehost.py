"""FilesComponent with its source on a FakeHost (in memory) and its repository side a real folder:
full and incremental snapshots, excludes, restore planning (in place and --to-path), a dry run
and a restore into the fake. The source is reached only through the Host protocol, so what the
fake holds is all the component can have read."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from aura_ops.components import files
from aura_ops.components.base import RestoreRequest, SnapshotTarget
from aura_ops.components.files import FilesComponent, FilesManifest
from aura_ops.config import FilesConfig
from aura_ops.errors import UsageError, VerificationError
from aura_ops.hosts import LocalHost
from aura_ops.hosts.fake import FakeHost
from aura_ops.repository import Snapshot
from aura_ops.state import temporaries

SOURCE = "/srv/uploads"


def _source() -> FakeHost:
    fake = FakeHost()
    fake.add_file(f"{SOURCE}/folder/file.txt", "content")
    fake.add_file(f"{SOURCE}/folder/other.txt", "other", mode=0o600)
    fake.add_file(f"{SOURCE}/top.txt", "top", mode=0o640)
    fake.add_symlink("folder/file.txt", f"{SOURCE}/link")
    fake.add_file(f"{SOURCE}/cache/skipped", "excluded by cache/")
    fake.add_file(f"{SOURCE}/folder/scratch.tmp", "excluded by *.tmp")
    return fake


def _component(fake: FakeHost) -> FilesComponent:
    config = FilesConfig(type="files", path=Path(SOURCE), exclude=["cache/", "*.tmp"])
    return FilesComponent("uploads", config, fake, LocalHost())


def _take(component: FilesComponent, repository: Path, snapshot_id: str, previous: Snapshot | None) -> Snapshot:
    folder = repository / snapshot_id / "uploads"
    folder.mkdir(parents=True)
    manifest = component.snapshot(SnapshotTarget(snapshot_id, folder, previous))
    sections = {"uploads": manifest.section()}
    return Snapshot(snapshot_id, repository / snapshot_id, {"components": sections, "checksum_algorithm": "sha256"})


def _section(snapshot: Snapshot) -> FilesManifest:
    return FilesManifest.model_validate(snapshot.manifest["components"]["uploads"])


def _index(snapshot: Snapshot) -> dict[str, dict[str, object]]:
    return dict(files.read_index(LocalHost(), snapshot.component_dir("uploads") / files.INDEX).entries)


def _stored(snapshot: Snapshot, relative: str) -> Path:
    return snapshot.component_dir("uploads") / files.TREE / relative


def test_a_first_snapshot_copies_every_file_of_the_fake_source_and_leaves_the_excluded_out(tmp_path: Path) -> None:
    fake = _source()
    snapshot = _take(_component(fake), tmp_path / "repo", "s1", None)
    section = _section(snapshot)
    assert (section.file_count, section.directory_count, section.symlink_count) == (3, 1, 1)
    assert (section.copied_files, section.linked_files, section.previous) == (3, 0, None)
    assert section.copied_bytes == len(b"content") + len(b"other") + len(b"top")
    index = _index(snapshot)
    assert sorted(index) == ["folder", "folder/file.txt", "folder/other.txt", "link", "top.txt"]
    assert index["folder/file.txt"]["h"] == hashlib.sha256(b"content").hexdigest()
    assert index["top.txt"]["m"] == 0o100640 and index["link"]["l"] == "folder/file.txt"
    assert _stored(snapshot, "folder/other.txt").read_bytes() == b"other"
    assert os.readlink(_stored(snapshot, "link")) == "folder/file.txt"
    assert not _stored(snapshot, "cache").exists() and not _stored(snapshot, "folder/scratch.tmp").exists()
    assert _component(fake).verify(snapshot)["problems"] == []
    assert fake.commands == []  # read through file operations alone, no program run


def test_an_incremental_snapshot_links_what_is_unchanged_and_copies_the_rest(tmp_path: Path) -> None:
    fake = _source()
    component = _component(fake)
    first = _take(component, tmp_path / "repo", "s1", None)
    fake.write_atomic(f"{SOURCE}/top.txt", b"top, changed", mode=0o640)  # a new inode: copied again
    fake.add_file(f"{SOURCE}/folder/new.txt", "new")
    fake.remove(f"{SOURCE}/folder/other.txt")
    second = _take(component, tmp_path / "repo", "s2", first)
    section = _section(second)
    assert (section.copied_files, section.linked_files, section.previous) == (2, 1, "s1")
    assert section.copied_bytes == len(b"top, changed") + len(b"new")
    assert sorted(_index(second)) == ["folder", "folder/file.txt", "folder/new.txt", "link", "top.txt"]
    unchanged, before = _stored(second, "folder/file.txt").stat(), _stored(first, "folder/file.txt").stat()
    assert (unchanged.st_ino, unchanged.st_nlink) == (before.st_ino, 2)  # linked, not copied
    assert _stored(second, "top.txt").stat().st_ino != _stored(first, "top.txt").stat().st_ino
    assert _stored(second, "top.txt").read_bytes() == b"top, changed"
    assert _index(second)["top.txt"]["h"] == hashlib.sha256(b"top, changed").hexdigest()
    assert component.verify(second)["problems"] == []


def test_a_file_touched_since_the_previous_snapshot_is_copied_again(tmp_path: Path) -> None:
    fake = _source()
    component = _component(fake)
    first = _take(component, tmp_path / "repo", "s1", None)
    fake.utime(f"{SOURCE}/folder/file.txt", 1_000_000_000)  # same content, another mtime
    second = _take(component, tmp_path / "repo", "s2", first)
    assert (_section(second).copied_files, _section(second).linked_files) == (1, 2)
    assert _stored(second, "folder/file.txt").stat().st_nlink == 1


def test_a_source_that_is_no_folder_is_a_usage_error(tmp_path: Path) -> None:
    fake = FakeHost()
    fake.add_file(SOURCE, "a file")
    with pytest.raises(UsageError, match="is not a directory"):
        _take(_component(fake), tmp_path / "repo", "s1", None)


def test_restore_target_in_place_is_the_source_and_replaces_what_it_holds(tmp_path: Path) -> None:
    fake = _source()
    component = _component(fake)
    snapshot = _take(component, tmp_path / "repo", "s1", None)
    planned = component.restore_target(snapshot, RestoreRequest())
    assert (planned.description, planned.replaces, planned.in_place) == (SOURCE, True, True)
    assert planned.details == {"target": SOURCE, "entries": 5}  # cache/ and *.tmp left out


def test_restore_target_to_a_path_replaces_only_a_folder_that_holds_something(tmp_path: Path) -> None:
    fake = _source()
    component = _component(fake)
    snapshot = _take(component, tmp_path / "repo", "s1", None)
    fake.add_dir("/restore/empty")
    fake.add_file("/restore/full/old.txt", "old")
    fake.add_file("/restore/only-excluded/cache/x", "x")
    expected = {"/restore/missing": (False, 0), "/restore/empty": (False, 0), "/restore/full": (True, 1)}
    expected["/restore/only-excluded"] = (False, 0)
    for path, (replaces, entries) in expected.items():
        planned = component.restore_target(snapshot, RestoreRequest(to=path, replace=True))
        assert (planned.description, planned.replaces, planned.in_place) == (path, replaces, False)
        assert planned.details["entries"] == entries


def test_a_dry_run_restore_lists_the_changes_and_changes_nothing(tmp_path: Path) -> None:
    fake = _source()
    component = _component(fake)
    snapshot = _take(component, tmp_path / "repo", "s1", None)
    fake.write_atomic(f"{SOURCE}/top.txt", b"edited", mode=0o640)
    fake.remove(f"{SOURCE}/folder/other.txt")
    fake.add_file(f"{SOURCE}/stray.txt", "stray")
    before = fake.tree(SOURCE)
    report = component.restore(snapshot, RestoreRequest(dry_run=True, replace=True))
    assert report["dry_run"] and report["target"] == SOURCE
    changes = report["changes"]
    assert "creating folder/other.txt" in changes and "deleting stray.txt" in changes
    assert any(line.startswith("updating top.txt (") and "content" in line for line in changes), changes
    assert not any("file.txt" in line or "cache" in line for line in changes), changes
    assert fake.tree(SOURCE) == before
    assert fake.listdir("/srv") == ["uploads"]  # no staging folder beside it


def test_a_restore_to_a_new_path_on_the_fake_gives_the_snapshot_tree(tmp_path: Path) -> None:
    fake = _source()
    component = _component(fake)
    snapshot = _take(component, tmp_path / "repo", "s1", None)
    request = RestoreRequest(to="/restore/uploads", replace=True, run_id="r1")
    with temporaries.bound(SimpleNamespace(state=SimpleNamespace(path=tmp_path / "state"))):
        report = component.restore(snapshot, request)
    assert report["method"] == "swap" and report["copied_files"] == 3
    expected = {path: entry for path, entry in fake.tree(SOURCE).items() if "cache" not in path and ".tmp" not in path}
    assert fake.tree("/restore/uploads") == expected
    assert fake.listdir("/restore") == ["uploads"]  # the staging folder renamed into place
    assert component.restore_target(snapshot, request).replaces


# -- the store (where the snapshot folders are) in memory too


def _in_memory(snapshot: Snapshot) -> FakeHost:
    """A FakeHost store holding the snapshot's folder (taken on the real file system) at the same
    path, with the modes, owners and mtimes it has there."""
    store = FakeHost("control")
    for path in [snapshot.path, *sorted(snapshot.path.rglob("*"))]:  # parents first
        st = path.lstat()
        owner = (st.st_uid, st.st_gid)
        if path.is_symlink():
            store.add_symlink(os.readlink(path), str(path))
        elif path.is_dir():
            store.add_dir(str(path), mode=stat.S_IMODE(st.st_mode), owner=owner)
        else:
            store.add_file(str(path), path.read_bytes(), mode=stat.S_IMODE(st.st_mode), owner=owner)
        store.set_metadata(str(path), times_ns=(st.st_atime_ns, st.st_mtime_ns))
    return store


def test_a_snapshot_in_an_in_memory_store_verifies_and_what_changes_there_is_reported(tmp_path: Path) -> None:
    fake = _source()
    snapshot = _take(_component(fake), tmp_path / "repo", "s1", None)
    store = _in_memory(snapshot)
    shutil.rmtree(tmp_path / "repo")  # from here on, only the store holds the snapshot
    component = FilesComponent("uploads", _component(fake).config, fake, store)
    assert component.verify(snapshot)["problems"] == []
    assert component.damage(snapshot) is None
    tree = f"{snapshot.component_dir('uploads')}/{files.TREE}"
    store.write_atomic(f"{tree}/folder/file.txt", b"CONTENT", mode=0o644)  # same size, other bytes
    store.symlink("top.txt", f"{tree}/planted")
    assert component.verify(snapshot)["problems"] == [
        "uploads: folder/file.txt: content changed (checksum mismatch)",
        "uploads: planted: not in the index (a symlink to top.txt)",
    ]
    index = f"{snapshot.component_dir('uploads')}/{files.INDEX}"
    store.write_atomic(index, store.read_bytes(index) + b"\n", mode=0o600)
    assert (
        component.damage(snapshot) == "uploads: index.jsonl changed since the snapshot was sealed (checksum mismatch)"
    )


def test_a_dry_run_restore_reads_the_stored_tree_from_an_in_memory_store(tmp_path: Path) -> None:
    fake = _source()
    snapshot = _take(_component(fake), tmp_path / "repo", "s1", None)
    fake.write_atomic(f"{SOURCE}/top.txt", b"edited", mode=0o640)
    fake.remove(f"{SOURCE}/folder/other.txt")
    request = RestoreRequest(dry_run=True, replace=True)
    expected = _component(fake).restore(snapshot, request)
    store = _in_memory(snapshot)
    shutil.rmtree(tmp_path / "repo")
    component = FilesComponent("uploads", _component(fake).config, fake, store)
    assert component.restore(snapshot, request) == expected
    assert "creating folder/other.txt" in expected["changes"]
    tree = f"{snapshot.component_dir('uploads')}/{files.TREE}"
    store.write_atomic(f"{tree}/folder/other.txt", b"OTHER", mode=0o600)  # what the restore would copy
    with pytest.raises(VerificationError, match="folder/other.txt does not match the index"):
        component.restore(snapshot, request)


def test_files_gone_or_replaced_between_the_walk_and_their_copy_are_warnings_left_out_of_the_snapshot(
    tmp_path: Path,
) -> None:
    """Small files (copied a folder at a time by the walking thread) and a large one (by the
    pool) that vanish, or stop being files, after their folder was listed: warned about, neither
    in the index nor in the stored tree; the rest copied whole with its mode."""
    fake = _source()
    large = os.urandom(files.snapshot.INLINE_BELOW + 1)
    fake.add_file(f"{SOURCE}/folder/large.bin", large)
    fake.add_file(f"{SOURCE}/folder/large-kept.bin", large, mode=0o604)
    walk_folders = fake.walk_folders

    def listed_then_changed(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        for folder, entries in walk_folders(*args, **kwargs):  # type: ignore[arg-type]
            if folder == "folder":
                fake.remove(f"{SOURCE}/folder/file.txt")
                fake.remove(f"{SOURCE}/folder/large.bin")
                fake.remove(f"{SOURCE}/folder/other.txt")
                fake.symlink("elsewhere", f"{SOURCE}/folder/other.txt")
            yield folder, entries

    fake.walk_folders = listed_then_changed  # type: ignore[method-assign]
    snapshot = _take(_component(fake), tmp_path / "repo", "s1", None)
    section = _section(snapshot)
    gone = [f"{SOURCE}/folder/{name}" for name in ("file.txt", "large.bin", "other.txt")]
    assert sorted(section.vanished_during_backup) == gone
    index = _index(snapshot)
    assert sorted(index) == ["folder", "folder/large-kept.bin", "link", "top.txt"]
    assert index["folder/large-kept.bin"]["h"] == hashlib.sha256(large).hexdigest()
    assert _stored(snapshot, "folder/large-kept.bin").read_bytes() == large
    assert stat.S_IMODE(_stored(snapshot, "folder/large-kept.bin").stat().st_mode) == 0o604
    assert sorted(os.listdir(_stored(snapshot, "folder"))) == ["large-kept.bin"]
    assert (section.copied_files, section.copied_bytes) == (2, len(large) + len(b"top"))
    assert _component(fake).verify(snapshot)["problems"] == []
