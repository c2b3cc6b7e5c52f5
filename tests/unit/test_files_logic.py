"""Pure logic of files snapshots and restores (index lines, refused targets, the swap handler)
and the Host's bulk operations for file trees on LocalHost."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from aura_ops.components import files, targets
from aura_ops.components.base import RestoreRequest, SnapshotTarget
from aura_ops.components.files import FilesComponent
from aura_ops.components.files import restorer as files_restore
from aura_ops.config import FilesConfig
from aura_ops.errors import UsageError
from aura_ops.hosts import LocalHost
from aura_ops.hosts.base import compile_excludes
from aura_ops.repository import Snapshot
from aura_ops.state import temporaries
from aura_ops.state.temporaries import Temporary


def test_an_index_line_keeps_a_name_that_is_not_utf8_byte_exact_and_plain_names_as_they_were() -> None:
    odd = os.fsdecode(b"dir-\xff/caf\xe9.txt")
    line = files.encode_line({"p": odd, "t": "l", "m": 0o120777, "l": os.fsdecode(b"\x80target"), "u": 0})
    stored = orjson.loads(line)
    assert "p" not in stored and "l" not in stored  # base64 instead: orjson refuses lone surrogates
    entry = files.decode_entry(stored)
    assert os.fsencode(entry["p"]) == b"dir-\xff/caf\xe9.txt"
    assert os.fsencode(entry["l"]) == b"\x80target"

    plain = files.encode_line({"p": "café/ü.txt", "t": "d", "m": 0o40755})
    assert orjson.loads(plain)["p"] == "café/ü.txt"
    assert files.decode_entry(orjson.loads(plain))["p"] == "café/ü.txt"
    # a line written before this change still loads
    old = b'{"p":"a.txt","m":33188,"u":0,"g":0,"mt":1,"t":"f","s":3,"ct":1,"i":7,"h":"ab"}'
    assert files.decode_entry(orjson.loads(old))["s"] == 3


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "a/../../b", "a//b", "", "."])
def test_an_index_entry_whose_path_leaves_the_tree_is_unreadable(path: str) -> None:
    with pytest.raises(ValueError):
        files.decode_entry({"p": path, "t": "d", "m": 0o40755})
    with pytest.raises(ValueError):
        files.decode_entry({"p": "ok", "t": "h", "m": 0o100644, "l": path})


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        ([{"p": "evil", "t": "l", "l": "/etc"}, {"p": "evil/planted", "t": "d"}], "evil/planted is below evil"),
        ([{"p": "a/b", "t": "d"}], "a/b is below a"),
        ([{"p": "x", "t": "d"}, {"p": "x", "t": "l", "l": "/"}], "x is listed twice"),
        ([{"p": "h", "t": "h", "l": "f"}, {"p": "f", "t": "f", "s": 0, "h": ""}], "h is a hard link to f"),
        ([{"p": "d", "t": "d"}, {"p": "h", "t": "h", "l": "d"}], "h is a hard link to d"),
    ],
)
def test_an_index_whose_entries_are_not_below_folders_of_the_index_is_damaged(
    lines: list[dict[str, object]], problem: str, tmp_path: Path
) -> None:
    index = tmp_path / files.INDEX
    index.write_bytes(b"".join(orjson.dumps({"m": 0o40755, **line}) + b"\n" for line in lines))
    problems = files.read_index(LocalHost(), index).problems
    assert len(problems) == 1 and problem in problems[0], problems


def _config(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(
        repository=SimpleNamespace(path=tmp_path / "repo"),
        state=SimpleNamespace(path=tmp_path / "state"),
        logging=SimpleNamespace(dir=tmp_path / "logs"),
    )


@pytest.mark.parametrize(
    "target",
    ["/", "/etc", "/etc/nginx", "/usr/lib/x", "/proc/self", "/var", "/var/lib", "/root", "/home", "/srv", "/tmp"],
)
def test_system_folders_are_refused_as_to_path(target: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="refused"):
        targets.check(LocalHost(), target, _config(tmp_path), to_path=True, local=LocalHost())


@pytest.mark.parametrize("target", ["/srv/site-restored", "/var/www/app", "/home/alice/restore", "/opt/app/data"])
def test_folders_below_the_common_data_folders_are_allowed(target: str, tmp_path: Path) -> None:
    assert targets.check(LocalHost(), target, _config(tmp_path), to_path=True, local=LocalHost()) == Path(target)


@pytest.mark.parametrize("where", ["repo", "repo/snapshots/x", ".", "state", "logs/deeper", "link"])
def test_the_repository_state_and_logs_and_what_holds_them_are_refused_in_place_too(where: str, tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "repo" / "snapshots", target_is_directory=True)
    for to_path in (True, False):
        with pytest.raises(UsageError, match="refused"):
            targets.check(LocalHost(), tmp_path / where, _config(tmp_path), to_path=to_path, local=LocalHost())
    assert (
        targets.check(LocalHost(), tmp_path / "elsewhere", _config(tmp_path), to_path=True, local=LocalHost())
        == tmp_path / "elsewhere"
    )


def test_mount_points_are_read_with_their_escapes() -> None:
    assert files_restore._unescape_mount(rb"/mnt/with\040space") == "/mnt/with space"
    assert "/proc" in files_restore.mounts_at_or_under(LocalHost(), "/proc")


def _record(target: Path, **details: object) -> Temporary:
    return Temporary(0, "dir_swap", str(target), dict(details), None, 1, "", "h", "")


def _tree(path: Path, content: str) -> int:
    path.mkdir()
    (path / "file").write_text(content)
    return path.stat().st_ino


def test_a_swap_killed_after_the_exchange_is_finished(tmp_path: Path) -> None:
    target, staging = tmp_path / "site", tmp_path / "site.aura-staging-1"
    new, old = _tree(staging, "new"), _tree(target, "old")
    os.rename(target, tmp_path / "x")
    os.rename(staging, target)
    os.rename(tmp_path / "x", staging)  # as RENAME_EXCHANGE leaves them
    record = _record(target, staging=str(staging), staging_ino=new, target_ino=old)
    note = files_restore.finish_or_undo(None, record, LocalHost())
    assert note.startswith("finished")
    assert (target / "file").read_text() == "new"
    assert not staging.exists()


def test_a_swap_killed_before_the_exchange_is_undone_with_its_excluded_entries_moved_back(tmp_path: Path) -> None:
    target, staging = tmp_path / "site", tmp_path / "site.aura-staging-1"
    old, new = _tree(target, "old"), _tree(staging, "new")
    (staging / "cache").mkdir()
    (staging / "cache" / "kept").write_text("excluded")  # moved over from the target
    details = {"staging": str(staging), "staging_ino": new, "target_ino": old, "moves": ["cache"]}
    note = files_restore.finish_or_undo(None, _record(target, **details), LocalHost())
    assert note.startswith("undone")
    assert (target / "file").read_text() == "old"
    assert (target / "cache" / "kept").read_text() == "excluded"
    assert not staging.exists()


def test_a_two_rename_swap_killed_between_the_renames_puts_the_old_tree_back(tmp_path: Path) -> None:
    target, staging, aside = tmp_path / "site", tmp_path / "site.aura-staging-1", tmp_path / "site.aura-old-1"
    old, new = _tree(target, "old"), _tree(staging, "new")
    os.rename(target, aside)
    details = {"staging": str(staging), "old": str(aside), "staging_ino": new, "target_ino": old}
    files_restore.finish_or_undo(None, _record(target, **details), LocalHost())
    assert (target / "file").read_text() == "old"
    assert not staging.exists() and not aside.exists()
    files_restore.finish_or_undo(None, _record(target, **details), LocalHost())  # idempotent
    assert (target / "file").read_text() == "old"


# -- LocalHost's bulk operations for file trees (what snapshots and restores of files use)


def test_a_walk_lists_parents_first_in_name_order_and_hands_over_what_the_excludes_match(tmp_path: Path) -> None:
    for folder in ("b/inner", "a", "cache/deep"):
        (tmp_path / folder).mkdir(parents=True)
    for name in ("b/inner/z.txt", "b/y.tmp", "a/x.txt", "cache/deep/c", "top.txt"):
        (tmp_path / name).write_text(name)
    excluded: list[str] = []
    walked = list(LocalHost().walk(str(tmp_path), compile_excludes(["cache/", "*.tmp"]), on_excluded=excluded.append))
    # a folder's entries in name order, each before anything below it
    assert [relative for relative, _ in walked] == ["a", "b", "top.txt", "a/x.txt", "b/inner", "b/inner/z.txt"]
    assert excluded == ["cache", "b/y.tmp"]  # top-most only: nothing below an excluded folder is read
    assert dict(walked)["a/x.txt"].st_size == len("a/x.txt")


def test_a_walk_of_a_folder_that_is_gone_reports_it_as_vanished(tmp_path: Path) -> None:
    vanished: list[str] = []
    assert list(LocalHost().walk(str(tmp_path / "gone"), on_vanished=vanished.append)) == []
    assert vanished == [str(tmp_path / "gone")]


def test_a_target_file_is_linked_only_when_it_is_still_the_listed_file_with_the_expected_content(
    tmp_path: Path,
) -> None:
    host = LocalHost()
    current = tmp_path / "current"
    current.write_bytes(b"same")
    listed = os.lstat(current)

    def link(new: str, digest: str) -> bool:
        return host.link_if_unchanged(
            str(current), str(tmp_path / new), listed=listed, digest=digest, xattrs={}, algorithm="sha256"
        )

    assert not link("a", "0" * 64)
    assert not (tmp_path / "a").exists()
    assert link("b", hashlib.sha256(b"same").hexdigest())
    assert (tmp_path / "b").stat().st_ino == listed.st_ino
    os.utime(current, ns=(1, 1))  # same content, but touched since it was listed
    assert not link("c", hashlib.sha256(b"same").hexdigest())
    assert not (tmp_path / "c").exists()


def test_a_rename_without_replacing_refuses_an_existing_target(tmp_path: Path) -> None:
    (tmp_path / "new").mkdir()
    (tmp_path / "there").mkdir()
    with pytest.raises(FileExistsError):
        LocalHost().rename_noreplace(str(tmp_path / "new"), str(tmp_path / "there"))
    LocalHost().rename_noreplace(str(tmp_path / "new"), str(tmp_path / "free"))
    assert (tmp_path / "free").is_dir() and (tmp_path / "there").is_dir() and not (tmp_path / "new").exists()


def test_metadata_is_set_as_given_and_a_symlink_is_never_followed(tmp_path: Path) -> None:
    host = LocalHost()
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "file")
    host.set_metadata(str(tmp_path / "file"), mode=0o640, times_ns=(1_000_000_000, 2_000_000_000))
    host.set_metadata(str(tmp_path / "link"), times_ns=(3_000_000_000, 4_000_000_000))
    st = os.lstat(tmp_path / "file")
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_mtime_ns == 2_000_000_000
    assert os.lstat(tmp_path / "link").st_mtime_ns == 4_000_000_000


# -- FilesComponent through the Component protocol, on LocalHost and a folder as the snapshot


def _taken(tmp_path: Path) -> tuple[FilesComponent, Snapshot]:
    source = tmp_path / "source"
    (source / "folder").mkdir(parents=True)
    (source / "folder" / "file.txt").write_text("content")
    (source / "link").symlink_to("folder/file.txt")
    (source / "cache").mkdir()
    (source / "cache" / "skipped").write_text("excluded")
    config = FilesConfig(type="files", path=source, exclude=["cache/"])
    component = FilesComponent("uploads", config, LocalHost())
    (tmp_path / "snapshot" / "uploads").mkdir(parents=True)
    manifest = component.snapshot(SnapshotTarget("s1", tmp_path / "snapshot" / "uploads"))
    sections = {"uploads": manifest.section()}
    return component, Snapshot("s1", tmp_path / "snapshot", {"components": sections, "checksum_algorithm": "sha256"})


def test_a_files_component_snapshots_verifies_and_restores_through_the_protocol(tmp_path: Path) -> None:
    component, snapshot = _taken(tmp_path)
    section = files.FilesManifest.model_validate(snapshot.manifest["components"]["uploads"])
    assert (section.file_count, section.symlink_count, section.directory_count) == (1, 1, 1)
    assert section.exclude == ["cache/"] and section.source == str(tmp_path / "source")
    assert component.verify(snapshot)["problems"] == []

    target = tmp_path / "restored"
    request = RestoreRequest(to=str(target), replace=True, run_id="r1")
    planned = component.restore_target(snapshot, request)
    assert (planned.description, planned.replaces, planned.in_place) == (str(target), False, False)
    with temporaries.bound(SimpleNamespace(state=SimpleNamespace(path=tmp_path / "state"))):
        report = component.restore(snapshot, request)
    assert report["method"] == "swap" and report["copied_files"] == 1
    assert (target / "folder" / "file.txt").read_text() == "content"
    assert os.readlink(target / "link") == "folder/file.txt"
    assert not (target / "cache").exists()
    assert component.restore_target(snapshot, request).replaces  # it holds the tree now

    (tmp_path / "snapshot" / "uploads" / files.TREE / "folder" / "file.txt").write_text("rotten!")
    assert component.verify(snapshot)["problems"] == ["uploads: folder/file.txt: content changed (checksum mismatch)"]
