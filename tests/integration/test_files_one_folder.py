"""A files component whose tree is one folder of thousands of files (issue 12, memory: 100,000
files in one folder cost 250 MB peak RSS, the folder handled whole), backed up, changed,
backed up incrementally and restored, with the per-part bound lowered so that the folder comes
in many parts: real files on this machine, the backup and restore workflows called in-process
(the bound is a module constant the test lowers)."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from aura_ops import config as aura_config
from aura_ops.components.files import snapshot as files_snapshot
from aura_ops.hosts import LocalHost
from aura_ops.hosts.base import StatResult
from aura_ops.workflows import snapshots

FILES = 3000
BATCH = 64
Listed = tuple[str, StatResult]


def _describe(root: Path) -> dict[str, Any]:
    """Content and metadata of every entry below ``root``; hard links by the first name of their inode."""
    found: dict[str, Any] = {}
    inodes: dict[int, str] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        item: dict[str, Any] = {"mode": stat.filemode(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
        if path.is_symlink():
            item["target"] = os.readlink(path)
        elif path.is_file():
            item["content"] = path.read_bytes()
            item["mtime"] = st.st_mtime_ns
            item["xattrs"] = {name: os.getxattr(path, name) for name in os.listxattr(path)}
            item["same_as"] = inodes.setdefault(st.st_ino, str(path.relative_to(root)))
        found[str(path.relative_to(root))] = item
    return found


def _section(snapshot_id: str, config: aura_config.Config) -> dict[str, Any]:
    section: dict[str, Any] = snapshots.repository(config).get(snapshot_id).manifest["components"]["one"]
    return section


def test_a_folder_of_thousands_of_files_backs_up_in_parts_links_what_is_unchanged_and_restores_byte_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files_snapshot, "BATCH", BATCH)
    largest = {"fetch_files": 0, "link_names": 0}
    fetch_files, link_names = LocalHost.fetch_files, LocalHost.link_names

    def fetch(
        host: LocalHost, folder: str, local: str, listed: Sequence[tuple[str, StatResult]], *a: Any, **k: Any
    ) -> Any:
        largest["fetch_files"] = max(largest["fetch_files"], len(listed))
        return fetch_files(host, folder, local, listed, *a, **k)

    def link(host: LocalHost, existing: str, new: str, names: Sequence[str]) -> list[tuple[str, int]]:
        largest["link_names"] = max(largest["link_names"], len(names))
        return link_names(host, existing, new, names)

    monkeypatch.setattr(LocalHost, "fetch_files", fetch)
    monkeypatch.setattr(LocalHost, "link_names", link)

    source = tmp_path / "one"
    source.mkdir()
    for number in range(FILES):
        (source / f"f{number:06d}").write_bytes(os.urandom(200))
    (source / "f001000-sub").mkdir()  # a folder in the middle of the names: walked after the last part
    (source / "f001000-sub" / "inner").write_bytes(b"inner")
    os.link(source / "f000100", source / "f002900-hardlink")  # two names of one file, parts apart
    os.symlink("f000007", source / "f001500-symlink")
    os.chmod(source / "f000640", 0o640)
    os.setxattr(source / "f002000", "user.origin", b"aura-test")
    data = {"repository": {"path": "repo"}, "components": {"one": {"type": "files", "path": "one"}}}
    config = aura_config.parse(data, tmp_path / "aura.yaml")

    first = snapshots.backup(config)
    assert _section(first.id, config)["copied_files"] == FILES + 1  # (and the hard link's second name)
    assert 0 < largest["fetch_files"] <= BATCH

    (source / "f001234").write_bytes(os.urandom(200))  # one file changed (same size)
    (source / "f000065").unlink()  # one gone, at the edge of a part
    (source / "f002500a").write_bytes(b"a new file between old names")
    second = snapshots.backup(config)
    section = _section(second.id, config)
    assert section["previous"] == first.id
    assert (section["copied_files"], section["linked_files"]) == (2, FILES - 2 + 1)  # (+ inner)
    assert 0 < largest["link_names"] <= BATCH and largest["fetch_files"] <= BATCH
    one, two = (snapshot.component_dir("one") / "tree" for snapshot in (first, second))
    assert (one / "f000000").stat().st_ino == (two / "f000000").stat().st_ino
    assert (one / "f002999").stat().st_ino == (two / "f002999").stat().st_ino
    assert (one / "f001234").stat().st_ino != (two / "f001234").stat().st_ino
    assert (two / "f001234").read_bytes() == (source / "f001234").read_bytes()
    report = snapshots.verify(config, second.id)  # every stored file hashed (VerifyFailed on a mismatch)
    assert report["problems"] == [] and report["components"]["one"]["files_hashed"] == FILES + 1

    expected = _describe(source)
    restored = tmp_path / "restored"
    snapshots.restore(config, second.id, to_path=restored)
    assert _describe(restored) == expected
    assert len(expected) == FILES + 4  # (one gone, one new; the folder, its file, two links)
