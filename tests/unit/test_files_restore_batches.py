"""A files restore copies the files of a folder in batches (one ``Host.put_files`` a batch, on
worker threads): folders larger than a batch, hard links to a file of a batch already sent or
still being gathered, large files that close a batch by its bytes; every file is still checked
against the index as it is written, and a stored file that is changed, missing, a symlink or a
FIFO stops the restore, naming it, before the target is touched."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from aura_ops.components import files
from aura_ops.components.files import FilesComponent, restorer
from aura_ops.errors import VerificationError
from aura_ops.repository import Snapshot
from tests.unit.test_files_outline import _component, _describe, _restore, _take

SMALL = 2 * restorer.BATCH_FILES + 44  # three batches in one folder


def _tree(root: Path) -> None:
    rng = random.Random(11)
    folder = root / "many"
    folder.mkdir(parents=True)
    for index in range(SMALL):
        path = folder / f"f{index:03d}"
        path.write_bytes(rng.randbytes(rng.randint(0, 2000)))
        os.chmod(path, 0o600 + index % 3 * 0o040)
        os.utime(path, ns=(1, 1_600_000_000_000_000_000 + index))
    os.link(folder / "f000", folder / "zz-link-to-a-sent-batch")
    os.link(folder / f"f{restorer.BATCH_FILES + 5:03d}", folder / f"f{restorer.BATCH_FILES + 5:03d}-link")
    os.link(folder / "f001", root / "a-link-in-another-folder")
    for index in range(3):  # a batch closes at BATCH_BYTES
        (root / f"large{index}").write_bytes(rng.randbytes(restorer.BATCH_BYTES // 2 + 1))
    (root / "empty").mkdir()


@pytest.fixture
def taken(tmp_path: Path) -> tuple[Path, FilesComponent, Snapshot]:
    source = tmp_path / "source"
    _tree(source)
    component = _component(source)
    return source, component, _take(component, tmp_path / "repo")


def test_folders_larger_than_a_batch_and_hard_links_across_batches_restore_exactly(
    taken: tuple[Path, FilesComponent, Snapshot], tmp_path: Path
) -> None:
    source, component, snapshot = taken
    report = _restore(component, snapshot, tmp_path / "copy", tmp_path / "state")
    assert report["copied_files"] == SMALL + 3 and report["linked_files"] == 0
    assert _describe(tmp_path / "copy") == _describe(source)  # content, mode, mtime, which name links which
    link = tmp_path / "copy" / "many" / f"f{restorer.BATCH_FILES + 5:03d}-link"
    assert link.stat().st_nlink == 2
    assert (tmp_path / "copy" / "a-link-in-another-folder").stat().st_ino == (
        tmp_path / "copy" / "many" / "f001"
    ).stat().st_ino
    stored = snapshot.component_dir("uploads") / files.TREE
    assert (tmp_path / "copy" / "many" / "f002").stat().st_ino != (stored / "many" / "f002").stat().st_ino


def _damage(stored: Path, how: str) -> None:
    path = stored / "many" / f"f{restorer.BATCH_FILES + 10:03d}"  # in the second batch
    if how == "changed":
        data = path.read_bytes()
        path.write_bytes(bytes(255 - byte for byte in data))  # same size, other bytes
    elif how == "missing":
        path.unlink()
    elif how == "symlink":
        path.unlink()
        os.symlink("f000", path)
    else:
        path.unlink()
        os.mkfifo(path)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("changed", "does not match the index"),
        ("missing", "is missing"),
        ("symlink", "cannot be read as a file"),
        ("fifo", "is not a regular file, the index says one"),
    ],
)
def test_a_damaged_file_in_a_batch_stops_the_restore_naming_it_and_leaves_the_target_alone(
    taken: tuple[Path, FilesComponent, Snapshot], tmp_path: Path, how: str, message: str
) -> None:
    _, component, snapshot = taken
    target = tmp_path / "target"
    target.mkdir()
    (target / "kept").write_bytes(b"what the target held")
    _damage(snapshot.component_dir("uploads") / files.TREE, how)
    name = f"many/f{restorer.BATCH_FILES + 10:03d}"
    with pytest.raises(VerificationError, match=f"uploads: {name} {message}"):
        _restore(component, snapshot, target, tmp_path / "state")
    assert [p.name for p in target.iterdir()] == ["kept"] and (target / "kept").read_bytes() == b"what the target held"
    assert [p.name for p in tmp_path.iterdir() if "staging" in p.name] == []


def test_the_batches_hard_links_name_keep_no_entries_once_copied(
    taken: tuple[Path, FilesComponent, Snapshot], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``first_batches`` keeps the batch of every file a hard link names till the tree is built:
    once a batch is copied and accounted for, it holds its future only, not its files' entries
    (else a tree whose files are all hard-linked kept every entry in memory: 162 MB at 100,000
    files and 100,000 links, 79 MB once dropped)."""
    stagers: list[restorer._Stager] = []
    real = restorer._Stager.finish

    def finish(self: restorer._Stager) -> None:
        stagers.append(self)
        real(self)

    monkeypatch.setattr(restorer._Stager, "finish", finish)
    source, component, snapshot = taken
    _restore(component, snapshot, tmp_path / "copy", tmp_path / "state")
    assert _describe(tmp_path / "copy") == _describe(source)
    kept = stagers[0].first_batches
    assert len(kept) == 3 and all(batch.future is not None and batch.future.done() for batch in kept.values())
    assert [batch.items for batch in kept.values()] == [[], [], []]
