"""A restore handed the snapshot its caller already read (``restore`` reads it once, then asks):
refused as unknown when the snapshot was deleted since (not a half-read exit 3), and refused as
damaged when the caller read a damaged one."""

from __future__ import annotations

from pathlib import Path

import pytest

from aura_ops import config as aura_config
from aura_ops.errors import UsageError, VerificationError
from aura_ops.repository import Snapshot
from aura_ops.workflows import snapshots


def _setup(tmp_path: Path) -> tuple[aura_config.Config, Path]:
    source = tmp_path / "src"
    source.mkdir()
    for n in range(3):
        (source / f"f{n}").write_text(f"file {n}\n")
    data = {"repository": {"path": "repo"}, "components": {"up": {"type": "files", "path": "src"}}}
    return aura_config.parse(data, tmp_path / "aura.yaml"), source


def test_a_snapshot_deleted_after_it_was_read_is_refused_as_unknown_and_nothing_changes(tmp_path: Path) -> None:
    config, source = _setup(tmp_path)
    taken = snapshots.backup(config)
    read = snapshots.repository(config).get(taken.id)  # what `aura-ops restore` read before its prompt
    (source / "f0").write_text("changed\n")
    snapshots.delete(config, taken.id)  # while the prompt waited
    with pytest.raises(UsageError, match=f"unknown snapshot '{taken.id}'"):
        snapshots.restore(config, read)
    assert (source / "f0").read_text() == "changed\n"
    assert sorted(p.name for p in source.iterdir()) == ["f0", "f1", "f2"]


def test_a_damaged_snapshot_handed_in_is_refused_as_get_refuses_it(tmp_path: Path) -> None:
    config, source = _setup(tmp_path)
    taken = snapshots.backup(config)
    repo = snapshots.repository(config)
    repo.sum_path(taken.id).write_text("0" * 64 + "  manifest.json\n")
    damaged = repo.load(taken.id)
    assert damaged.damaged
    (source / "f0").write_text("changed\n")
    with pytest.raises(VerificationError, match="checksum mismatch"):
        snapshots.restore(config, damaged)
    with pytest.raises(VerificationError, match="checksum mismatch"):
        snapshots.restore(config, Snapshot(taken.id, damaged.path, taken.manifest, damaged.damaged))
    assert (source / "f0").read_text() == "changed\n"
