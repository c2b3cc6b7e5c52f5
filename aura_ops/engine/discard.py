"""A run that failed before it changed anything leaves no snapshot behind.

Such a run took its snapshot(s) and then stopped: every other step is pending, skipped, found
applied before the run (not its work), or failed before it began applying (its parameters, its
``when`` or its check failed: the journal shows no attempt). Nothing it did needs undoing, so no
rollback needs its snapshot, and keeping it only fills the repository.

It is deleted at the end of the run, while the run lock is still held (no other run can have
started since, let alone named it), under the repository lock, and never when another run's
journal names it (a rollback ``--to-snapshot``, a run's parameters or outputs). The deletion is
recorded as a temporary object (kind ``snapshot``) before it begins: a kill in between, or a
repository lock held by another process, leaves the record, and the next command that takes the
run lock finishes it (``delete_recorded``; the test hook ``AURA_FAULT=run:discard`` is right after
the record). The snapshot step keeps its ``snapshot_id`` output and its ``undo`` record says the
snapshot was deleted and why (``runs show``).
"""

from __future__ import annotations

from typing import Any

from aura_ops import logs
from aura_ops.config import Config
from aura_ops.engine.outcome import Outcome, reason
from aura_ops.engine.session import Session, fault, open_journal
from aura_ops.state import temporaries
from aura_ops.state.journal import Journal, StepRecord

KIND = "snapshot"  # the temporaries kind (handler: delete_recorded)
SNAPSHOT_ACTION = "snapshot"
# a step in these states changed nothing in this run
UNCHANGED = ("pending", "skipped", "already_applied")
# a run that ended so may leave its snapshot unused (a succeeded run keeps it; an unfinished
# or rollback_failed one needs it)
ENDED_FAILED = ("rolled_back", "failed")
REASON = "the run failed before any step changed anything: no rollback needs this snapshot"


def changed_nothing(record: StepRecord) -> bool:
    """Whether a step (not a snapshot step) left everything as it was: never begun, skipped,
    an earlier run's work, or failed before the journal recorded it applying (no attempt)."""
    return record.status in UNCHANGED or (record.status == "failed" and record.attempts == 0)


def unused_snapshots(records: list[StepRecord]) -> list[tuple[str, str]]:
    """(step name, snapshot id) of every snapshot a run took when no other step of it changed
    anything; [] as soon as one may have (its snapshot may be what undoes it)."""
    taken = []
    for record in records:
        if record.action == SNAPSHOT_ACTION:
            snapshot_id = record.outputs.get("snapshot_id")
            if record.status in ("applied", "compensated") and snapshot_id:
                taken.append((record.name, str(snapshot_id)))
        elif not changed_nothing(record):
            return []
    return taken


def discard_unused(config: Config, journal: Journal, run_id: str) -> list[str]:
    """Delete the snapshots a failed run took when it changed nothing (call with the run lock
    and the temporaries registry bound); the ids deleted. A deletion that cannot happen now
    stays recorded for the next sweep (logged, never fatal: the run's outcome stands)."""
    if journal.run(run_id).status not in ENDED_FAILED:
        return []
    deleted = []
    _, registry = temporaries.current()
    for step, snapshot_id in unused_snapshots(journal.steps(run_id)):
        record = registry.add(KIND, snapshot_id, run_id, step=step)  # committed before the deletion
        fault("run", "discard")  # a test hook: killed here, the next run's sweep deletes it
        if temporaries.cleanup(config, record) and snapshot_id in _deleted(journal, run_id, step):
            deleted.append(snapshot_id)
    return deleted


def settle(session: Session, outcome: Outcome) -> Outcome:
    """``outcome`` after the unused snapshots of its run were deleted (``discard_unused``): read
    again from the journal when one was, so its steps show it. A failure here never changes how
    the run ended: it is logged, and the snapshot stays (recorded, when it got that far)."""
    try:
        if not discard_unused(session.config, session.journal, session.run_id):
            return outcome
    except Exception as exc:  # noqa: BLE001 - the run's outcome stands; the snapshot is only kept
        logs.get().warning("run.snapshot_not_deleted", reason=reason(exc))
        return outcome
    return Outcome(session.journal.run(session.run_id), session.records(), outcome.message, outcome.error)


def _deleted(journal: Journal, run_id: str, step: str) -> list[str]:
    undo = next((s.undo for s in journal.steps(run_id) if s.name == step), None) or {}
    return [undo["snapshot_deleted"]] if undo.get("snapshot_deleted") else []


def delete_recorded(config: Any, record: temporaries.Temporary) -> str:
    """The ``snapshot`` temporaries handler: delete the unused snapshot ``record.name`` of run
    ``record.run_id`` unless another run names it, and journal that on the run's snapshot step.
    Idempotent (the snapshot may already be gone); LockedError while the repository is locked."""
    from aura_ops.components import snapshotting

    snapshot_id, run_id, step = record.name, record.run_id, str(record.details.get("step", "snapshot"))
    journal = open_journal(config)
    try:
        others = journal.references(snapshot_id, except_run=run_id)
        if others:
            note = {"snapshot_kept": snapshot_id, "reason": f"named by run {', '.join(others)}"}
            if run_id:
                journal.step_undone(run_id, step, note)
            logs.get().info("run.snapshot_kept", snapshot=snapshot_id, referenced_by=others)
            return f"kept: named by run {', '.join(others)}"
        repo = snapshotting.repository(config)
        pinned = False
        if snapshot_id in repo.ids():
            with repo.locked(run_id or snapshot_id, "delete"):
                pinned = snapshot_id in repo.pinned()  # (pins change under this lock only)
                if not pinned:
                    repo.delete(snapshot_id)
        if pinned:
            if run_id:
                journal.step_undone(run_id, step, {"snapshot_kept": snapshot_id, "reason": "pinned"})
            logs.get().info("run.snapshot_kept", snapshot=snapshot_id, reason="pinned")
            return "kept: pinned"
        if run_id:
            journal.step_undone(run_id, step, {"snapshot_deleted": snapshot_id, "reason": REASON})
        logs.get().info("run.snapshot_deleted", snapshot=snapshot_id, reason=REASON)
        return "snapshot deleted"
    finally:
        journal.close()
