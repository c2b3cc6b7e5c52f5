"""Review of the first-snapshot copy (``Host.fetch_files``, small files copied by the walking
thread): a source that changes under the copy, on the real file system."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from aura_ops.components import files
from aura_ops.components.base import SnapshotTarget
from aura_ops.components.files import FilesComponent, FilesManifest
from aura_ops.config import FilesConfig
from aura_ops.hosts import LocalHost
from aura_ops.hosts.base import PutFile
from aura_ops.repository import Snapshot


def _take(host: LocalHost, source: Path, repository: Path) -> tuple[FilesComponent, Snapshot]:
    folder = repository / "s1" / "u"
    folder.mkdir(parents=True)
    component = FilesComponent("u", FilesConfig(type="files", path=source), host, LocalHost())
    manifest = component.snapshot(SnapshotTarget("s1", folder, None))
    sections = {"u": manifest.section()}
    return component, Snapshot("s1", repository / "s1", {"components": sections, "checksum_algorithm": "sha256"})


def test_a_folder_above_one_listed_replaced_by_a_symlink_is_not_followed_by_the_copy(tmp_path: Path) -> None:
    """After the walk listed ``x/sec`` (its own names, files of the user who owns ``x``), ``x``
    becomes a symlink to a folder holding the same names: the copy must not read them there
    (another user's secret stored, and restored, as the user's own file). Small files (copied by
    the walking thread) and a large one (by the pool) alike: warned about as vanished."""
    source, outside = tmp_path / "src", tmp_path / "outside"
    (source / "x" / "sec").mkdir(parents=True)
    (outside / "sec").mkdir(parents=True)
    large = files.snapshot.INLINE_BELOW + 1
    for name, data in (("key", b"mine"), ("big", b"m" * large)):
        (source / "x" / "sec" / name).write_bytes(data)
        (outside / "sec" / name).write_bytes(b"SECRET" + data)
    host = LocalHost()
    walk_folders = host.walk_folders

    def listed_then_swapped(*args: object, **kwargs: object) -> Iterator[tuple[str, object]]:
        for folder, entries in walk_folders(*args, **kwargs):  # type: ignore[arg-type]
            if folder == "x/sec":
                (source / "x").rename(source / "x.old")
                (source / "x").symlink_to(outside)
            yield folder, entries

    host.walk_folders = listed_then_swapped  # type: ignore[method-assign, assignment]
    component, snapshot = _take(host, source, tmp_path / "repo")
    stored = snapshot.component_dir("u") / files.TREE / "x" / "sec"
    assert sorted(os.listdir(stored)) == []
    index = dict(files.read_index(LocalHost(), snapshot.component_dir("u") / files.INDEX).entries)
    assert sorted(index) == ["x", "x/sec"]
    section = FilesManifest.model_validate(snapshot.manifest["components"]["u"])
    assert sorted(section.vanished_during_backup) == [str(source / "x/sec/big"), str(source / "x/sec/key")]
    assert component.verify(snapshot)["problems"] == []


def _unprivileged(work: Callable[[], None]) -> None:
    """Run ``work`` as a user without root's capabilities (in a child as nobody, when root)."""
    if os.geteuid() != 0:
        work()
        return
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            work()
            code = 0
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_a_read_only_files_xattrs_are_kept_by_a_copy_made_without_root() -> None:
    """Not root, a user xattr cannot be set on a file whose mode forbids writing it: the copy's
    xattrs are set before its mode (they were lost, and the new snapshot failed its own verify:
    "xattrs or ACLs changed"). Small (walking thread) and large (pool) files take the same call."""
    work = Path(tempfile.mkdtemp(prefix="aura-review-b-"))
    try:
        os.chmod(work, 0o777)
        source, control = work / "src", work / "control"

        def copy() -> None:
            source.mkdir()
            control.mkdir()
            for name, mode in (("ro", 0o444), ("owner-only-ro", 0o400)):
                (source / name).write_bytes(name.encode())
                os.setxattr(source / name, "user.origin", b"https://example.org/" + name.encode())
                os.chmod(source / name, mode)
            listed = [(name, os.lstat(source / name)) for name in ("owner-only-ro", "ro")]
            found = LocalHost().fetch_files(str(source), str(control), listed, "sha256", owners=False)
            assert all(not isinstance(copied, int) for copied in found)

        _unprivileged(copy)
        for name, mode in (("ro", 0o444), ("owner-only-ro", 0o400)):
            assert os.getxattr(control / name, "user.origin") == b"https://example.org/" + name.encode()
            assert stat.S_IMODE(os.stat(control / name).st_mode) == mode
    finally:
        shutil.rmtree(work)


def test_a_read_only_files_xattrs_are_kept_by_a_restore_made_without_root() -> None:
    """The restore's batch copy (``put_files``) gives a file its metadata in ``set_metadata``'s
    order too: not root, a 0444 file's user xattr set after its mode was refused (logged at debug
    only) and the restored file came back without it."""
    work = Path(tempfile.mkdtemp(prefix="aura-review-b-"))
    try:
        os.chmod(work, 0o777)
        stored, target = work / "stored", work / "target"

        def put() -> None:
            stored.mkdir()
            target.mkdir()
            (stored / "ro").write_bytes(b"ro")
            item = PutFile("ro", 0o444, None, {"user.origin": b"kept"}, (5, 7))
            assert LocalHost().put_files(str(stored), str(target), [item], "sha256")[0].error == 0

        _unprivileged(put)
        assert os.getxattr(target / "ro", "user.origin") == b"kept"
        assert stat.S_IMODE((target / "ro").stat().st_mode) == 0o444 and (target / "ro").stat().st_mtime_ns == 7
    finally:
        shutil.rmtree(work)


def test_a_file_that_cannot_be_read_or_written_is_named_by_its_whole_path_in_the_error() -> None:
    """Opened relative to its folder's descriptor, an unreadable file's error named the file
    alone ("Permission denied: 'key'" in the CLI's one error line: in which folder of the
    tree?); the copy's the same."""
    work = Path(tempfile.mkdtemp(prefix="aura-review-b-"))
    try:
        os.chmod(work, 0o777)
        source, control = work / "src", work / "control"

        def copy() -> None:
            source.mkdir()
            control.mkdir()
            (source / "key").write_bytes(b"unreadable")
            os.chmod(source / "key", 0)
            (source / "dup").write_bytes(b"dup")
            (control / "dup").write_bytes(b"there already")
            for name, error, path in (
                ("key", PermissionError, source / "key"),
                ("dup", FileExistsError, control / "dup"),
            ):
                try:
                    LocalHost().fetch_files(
                        str(source), str(control), [(name, os.lstat(source / name))], "sha256", owners=False
                    )
                except error as exc:
                    assert exc.filename == str(path)
                else:
                    raise AssertionError(f"{name} was copied")

        _unprivileged(copy)
    finally:
        shutil.rmtree(work)


def test_a_source_given_as_a_symlink_has_its_top_level_files_copied(tmp_path: Path) -> None:
    """``path: /var/www`` where /var/www is a symlink to /srv/www: the walk follows it, and the
    copy opened the root folder without following it, so every top-level file (small or large)
    was "vanished" and left out of a snapshot that sealed as good."""
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    (real / "top.txt").write_bytes(b"top")
    (real / "big.bin").write_bytes(b"b" * (files.snapshot.INLINE_BELOW + 1))
    (real / "sub" / "s.txt").write_bytes(b"s")
    (tmp_path / "link").symlink_to(real)
    component, snapshot = _take(LocalHost(), tmp_path / "link", tmp_path / "repo")
    index = dict(files.read_index(LocalHost(), snapshot.component_dir("u") / files.INDEX).entries)
    assert sorted(index) == ["big.bin", "sub", "sub/s.txt", "top.txt"]
    assert FilesManifest.model_validate(snapshot.manifest["components"]["u"]).vanished_during_backup == []
    assert (snapshot.component_dir("u") / files.TREE / "top.txt").read_bytes() == b"top"
    assert component.verify(snapshot)["problems"] == []


def test_a_file_made_private_between_the_walk_and_its_copy_is_stored_and_indexed_private(tmp_path: Path) -> None:
    """Listed 0644, then ``chmod 600`` and a secret written in before the copy read it: the copy
    holds the secret, so it must not keep the mode listed (a restore would give it 0644). Its
    status as opened is recorded instead (the ctime moved); unchanged files keep the listed one."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("notes", "big", "kept"):
        (source / name).write_bytes(b"public" * (files.snapshot.INLINE_BELOW if name == "big" else 1))
        os.chmod(source / name, 0o644)
    host = LocalHost()
    walk_folders = host.walk_folders

    def listed_then_made_private(*args: object, **kwargs: object) -> Iterator[tuple[str, object]]:
        for folder, entries in walk_folders(*args, **kwargs):  # type: ignore[arg-type]
            for name in ("notes", "big"):
                os.chmod(source / name, 0o600)
                (source / name).write_bytes(b"secret")
            yield folder, entries

    host.walk_folders = listed_then_made_private  # type: ignore[method-assign, assignment]
    component, snapshot = _take(host, source, tmp_path / "repo")
    index = dict(files.read_index(LocalHost(), snapshot.component_dir("u") / files.INDEX).entries)
    for name, mode in (("notes", 0o600), ("big", 0o600), ("kept", 0o644)):
        stored = snapshot.component_dir("u") / files.TREE / name
        assert stat.S_IMODE(stored.stat().st_mode) == mode, name
        assert stat.S_IMODE(int(index[name]["m"])) == mode, name  # type: ignore[call-overload]
        assert index[name]["ct"] == os.lstat(source / name).st_ctime_ns
    assert (snapshot.component_dir("u") / files.TREE / "notes").read_bytes() == b"secret"
    assert component.verify(snapshot)["problems"] == []


def test_set_metadata_without_root_keeps_the_xattrs_of_a_read_only_folder() -> None:
    """The stored tree's folders get their metadata last (``set_metadata``): not root, a 0555
    folder's user xattr was refused after its mode was set (logged at debug only), and the
    snapshot just taken failed its verify. Xattrs are set before the mode now."""
    work = Path(tempfile.mkdtemp(prefix="aura-review-b-"))
    try:
        os.chmod(work, 0o777)
        folder = work / "stored-folder"

        def give() -> None:
            folder.mkdir(mode=0o700)
            LocalHost().set_metadata(str(folder), mode=0o555, xattrs={"user.origin": b"kept"}, times_ns=(5, 7))

        _unprivileged(give)
        assert os.getxattr(folder, "user.origin") == b"kept"
        assert stat.S_IMODE(folder.stat().st_mode) == 0o555 and folder.stat().st_mtime_ns == 7
    finally:
        shutil.rmtree(work)


def test_a_folder_replaced_by_another_real_folder_after_its_parent_was_listed_is_copied_as_the_walk_listed_it(
    tmp_path: Path,
) -> None:
    """``x`` listed in the root, then replaced by a new folder (moved away, mkdir, files written)
    before the walk opened it: the walk reads the new one (a name at a time, no symlink on the
    way), so its files are copied from it, not reported vanished and left out (they exist)."""
    source = tmp_path / "src"
    (source / "x").mkdir(parents=True)
    (source / "x" / "old.txt").write_bytes(b"old")
    host = LocalHost()
    walk_folders = host.walk_folders

    def root_listed_then_x_replaced(*args: object, **kwargs: object) -> Iterator[tuple[str, object]]:
        for folder, entries in walk_folders(*args, **kwargs):  # type: ignore[arg-type]
            if folder == "":
                (source / "x").rename(tmp_path / "x.old")  # (kept: its inode not reused by the new one)
                (source / "x").mkdir()
                (source / "x" / "new.txt").write_bytes(b"new")
                (source / "x" / "new-large.bin").write_bytes(b"n" * files.snapshot.INLINE_BELOW)
            yield folder, entries

    host.walk_folders = root_listed_then_x_replaced  # type: ignore[method-assign, assignment]
    component, snapshot = _take(host, source, tmp_path / "repo")
    index = dict(files.read_index(LocalHost(), snapshot.component_dir("u") / files.INDEX).entries)
    assert sorted(index) == ["x", "x/new-large.bin", "x/new.txt"]
    assert FilesManifest.model_validate(snapshot.manifest["components"]["u"]).vanished_during_backup == []
    assert (snapshot.component_dir("u") / files.TREE / "x" / "new.txt").read_bytes() == b"new"
    assert component.verify(snapshot)["problems"] == []
