"""Review of the first-snapshot copy (``Host.fetch_files``, small files copied by the walking
thread): a source that changes under the copy, on the real file system."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from aura_ops.components import files
from aura_ops.components.base import SnapshotTarget
from aura_ops.components.files import FilesComponent, FilesManifest
from aura_ops.config import FilesConfig
from aura_ops.hosts import LocalHost
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
