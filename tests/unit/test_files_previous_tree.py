"""An incremental snapshot links unchanged files from the previous snapshot's stored tree only
through real folders of that tree: a folder on the way replaced by a symlink (a damaged or
tampered repository) is never followed, its files are copied from the source instead, and the
snapshot's stored tree matches its index."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from aura_ops.components import files
from aura_ops.components.base import SnapshotTarget
from aura_ops.components.files import FilesComponent, FilesManifest
from aura_ops.config import FilesConfig
from aura_ops.hosts import LocalHost
from aura_ops.repository import Snapshot


def _take(component: FilesComponent, repository: Path, snapshot_id: str, previous: Snapshot | None) -> Snapshot:
    folder = repository / snapshot_id / "uploads"
    folder.mkdir(parents=True)
    manifest = component.snapshot(SnapshotTarget(snapshot_id, folder, previous))
    sections = {"uploads": manifest.section()}
    return Snapshot(snapshot_id, repository / snapshot_id, {"components": sections, "checksum_algorithm": "sha256"})


def _stored(snapshot: Snapshot, relative: str) -> Path:
    return snapshot.component_dir("uploads") / files.TREE / relative


def test_a_folder_above_a_previous_folder_replaced_by_a_symlink_is_never_followed_to_link_from(
    tmp_path: Path,
) -> None:
    source, repository = tmp_path / "source", tmp_path / "repo"
    for folder in ("a/deep/er", "b"):
        (source / folder).mkdir(parents=True)
        for number in range(2):
            (source / folder / f"f{number}").write_bytes(f"{folder} {number}".encode())
    os.link(source / "a" / "deep" / "er" / "f1", source / "a" / "deep" / "er" / "f1-too")  # (a hard-link pair)
    (source / "c").mkdir()
    (source / "c" / "h1").write_bytes(b"c h1")
    os.link(source / "c" / "h1", source / "c" / "h2")
    component = FilesComponent("uploads", FilesConfig(type="files", path=source), LocalHost())
    first = _take(component, repository, "s1", None)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(_stored(first, "a"), elsewhere)
    (elsewhere / "deep" / "er" / "f0").write_bytes(b"NOT the file")  # (same size would be worse)
    (elsewhere / "deep" / "er" / "f1").write_bytes(b"not it either")
    shutil.rmtree(_stored(first, "a"))
    os.symlink(elsewhere, _stored(first, "a"))  # the previous tree's a, above a/deep/er, now a symlink
    shutil.copytree(_stored(first, "c"), tmp_path / "elsewhere-c")
    (tmp_path / "elsewhere-c" / "h1").write_bytes(b"NOT h1")
    shutil.rmtree(_stored(first, "c"))
    os.symlink(tmp_path / "elsewhere-c", _stored(first, "c"))  # the folder itself (its files linked by path)

    second = _take(component, repository, "s2", first)
    section = FilesManifest.model_validate(second.manifest["components"]["uploads"])
    assert (section.copied_files, section.linked_files) == (3, 2)  # a/deep/er/f0, f1, c/h1 copied (pairs: links)
    assert _stored(second, "c/h1").read_bytes() == b"c h1" == _stored(second, "c/h2").read_bytes()
    assert _stored(second, "c/h1").stat().st_ino != (tmp_path / "elsewhere-c" / "h1").stat().st_ino
    for name in ("f0", "f1"):
        stored = _stored(second, f"a/deep/er/{name}")
        assert stored.read_bytes() == f"a/deep/er {name[1]}".encode()
        assert stored.stat().st_ino != (elsewhere / "deep" / "er" / name).stat().st_ino
    assert _stored(second, "b/f0").stat().st_ino == _stored(first, "b/f0").stat().st_ino  # still linked
    assert component.verify(second)["problems"] == []
