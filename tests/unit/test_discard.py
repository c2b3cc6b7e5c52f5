"""Which snapshots a failed run leaves unused (it changed nothing else), and which runs name a
snapshot: the pure decisions behind deleting a failed run's own snapshot."""

from __future__ import annotations

from pathlib import Path

import pytest

from aura_ops.engine.discard import unused_snapshots
from aura_ops.state.journal import Journal, StepRecord


def _step(index: int, name: str, action: str, status: str, attempts: int = 0, **outputs: str) -> StepRecord:
    return StepRecord(index, name, action, status, attempts, dict(outputs), None, None, None)


SNAP = _step(0, "snapshot", "snapshot", "applied", 1, snapshot_id="20261201-070000-000")


@pytest.mark.parametrize(
    ("then", "unused"),
    [
        ([_step(1, "upload", "release_upload", "failed", 0)], True),  # failed before it began applying
        ([_step(1, "upload", "release_upload", "pending")], True),
        ([_step(1, "gate", "command", "skipped"), _step(2, "conf", "file", "already_applied")], True),
        ([_step(1, "upload", "release_upload", "failed", 1)], False),  # it ran: it may have changed things
        ([_step(1, "upload", "release_upload", "compensated", 1)], False),
        ([_step(1, "upload", "release_upload", "applying", 1)], False),  # killed while applying
        ([_step(1, "stop", "services_stop", "applied", 1), _step(2, "x", "command", "failed", 0)], False),
    ],
)
def test_a_snapshot_is_unused_only_when_no_other_step_may_have_changed_anything(
    then: list[StepRecord], unused: bool
) -> None:
    assert unused_snapshots([SNAP, *then]) == ([("snapshot", SNAP.outputs["snapshot_id"])] if unused else [])


def test_a_snapshot_step_that_sealed_nothing_leaves_nothing_to_delete() -> None:
    failed = _step(0, "snapshot", "snapshot", "failed", 1)
    assert unused_snapshots([failed, _step(1, "gate", "command", "pending")]) == []
    compensated = _step(0, "snapshot", "snapshot", "compensated", 1, snapshot_id="s1")
    assert unused_snapshots([compensated, _step(1, "gate", "command", "failed", 0)]) == [("snapshot", "s1")]


def test_the_journal_names_the_other_runs_that_refer_to_a_snapshot(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    sid = "20261201-070000-000"
    journal.create_run("a", "deploy", {}, None, "t", "cli", "h", [("snapshot", "snapshot")], "{}")
    journal.step_finished("a", 0, "applied", {"snapshot_id": sid})
    journal.create_run("b", "rollback", {"snapshot": sid}, None, "t", "cli", "h", [("stop", "services_stop")], "{}")
    journal.create_run("c", "other", {"snapshot": "20261201-070000-001"}, None, "t", "cli", "h", [], "{}")
    assert journal.references(sid, except_run="a") == ["b"]
    assert journal.references(sid) == ["a", "b"]
    assert journal.references("20261201-070000-002") == []
    journal.close()


def test_a_pinned_snapshot_is_never_deleted_by_a_failed_run_and_the_run_says_so(tmp_path: Path) -> None:
    from aura_ops.config import Config
    from aura_ops.engine.discard import delete_recorded
    from aura_ops.repository import Repository
    from aura_ops.state.temporaries import Temporary

    config = Config.model_validate({"repository": {"path": str(tmp_path / "repo")}, "state": {"path": str(tmp_path)}})
    repo = Repository(tmp_path / "repo")
    repo.ensure()
    ids = ["20261201-070000-000", "20261201-070000-001"]
    for sid in ids:
        repo.begin(sid)
        repo.commit(sid, {"id": sid, "format": 2, "created": "2026-12-01T07:00:00+00:00", "components": {}})
    repo.pin(ids[0])
    journal = Journal(tmp_path / "journal.db")
    for run, sid in zip("ab", ids, strict=True):
        journal.create_run(run, "deploy", {}, None, "t", "cli", "h", [("snapshot", "snapshot")], "{}")
        journal.step_finished(run, 0, "applied", {"snapshot_id": sid})
    journal.close()

    def record(run: str, sid: str) -> Temporary:
        return Temporary(1, "snapshot", sid, {"step": "snapshot"}, run, 1, "", "h", "")

    assert delete_recorded(config, record("a", ids[0])) == "kept: pinned"
    assert delete_recorded(config, record("b", ids[1])) == "snapshot deleted"
    assert repo.ids() == [ids[0]]
    journal = Journal(tmp_path / "journal.db")
    undone = {run: journal.steps(run)[0].undo for run in "ab"}
    journal.close()
    assert undone == {
        "a": {"snapshot_kept": ids[0], "reason": "pinned"},
        "b": {"snapshot_deleted": ids[1], "reason": undone["b"]["reason"]},
    }
