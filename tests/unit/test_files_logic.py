"""Pure logic of files snapshots and restores: index lines, refused targets, the swap handler."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import orjson
import pytest

from aura_ops.components import files
from aura_ops.components.files import restorer as files_restore
from aura_ops.errors import UsageError
from aura_ops.hosts import LocalHost
from aura_ops.state.temporaries import Temporary
from aura_ops.workflows import targets


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
    problems = files.read_index(index).problems
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
        targets.check(LocalHost(), target, _config(tmp_path), to_path=True)


@pytest.mark.parametrize("target", ["/srv/site-restored", "/var/www/app", "/home/alice/restore", "/opt/app/data"])
def test_folders_below_the_common_data_folders_are_allowed(target: str, tmp_path: Path) -> None:
    assert targets.check(LocalHost(), target, _config(tmp_path), to_path=True) == Path(target)


@pytest.mark.parametrize("where", ["repo", "repo/snapshots/x", ".", "state", "logs/deeper", "link"])
def test_the_repository_state_and_logs_and_what_holds_them_are_refused_in_place_too(where: str, tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "repo" / "snapshots", target_is_directory=True)
    for to_path in (True, False):
        with pytest.raises(UsageError, match="refused"):
            targets.check(LocalHost(), tmp_path / where, _config(tmp_path), to_path=to_path)
    assert targets.check(LocalHost(), tmp_path / "elsewhere", _config(tmp_path), to_path=True) == tmp_path / "elsewhere"


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
