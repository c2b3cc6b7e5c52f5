"""Going back: undo, in reverse, every step a run may have applied; or stop at the failure.

A failing undo ends the run ``rollback_failed`` (exit 4) after the other steps were undone; a
signal or an unexpected error during the undo leaves it ``compensating`` for ``runs resume`` /
``runs abort``. A run that asked for no rollback stops at its failure, undoing only the
``always_undo`` steps (stopped services start again).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import tenacity

from aura_ops import logs
from aura_ops.engine.actions import REGISTRY
from aura_ops.engine.outcome import Outcome, reason
from aura_ops.engine.playbook import Playbook, Step
from aura_ops.engine.session import Session, fault, params_of
from aura_ops.errors import Interrupted, RollbackError, RunFailed
from aura_ops.state.journal import StepRecord

COMPENSATION_ATTEMPTS = 3
# compensation passes over these: nothing of this run to undo
NOTHING_TO_UNDO = ("pending", "skipped", "compensated", "already_applied")


def compensate(session: Session, why: str, aborted: bool = False) -> Outcome:
    """Undo, in reverse, every step this run may have applied (never one journaled
    ``already_applied``). A signal during the undo leaves the run ``compensating`` for
    ``runs resume`` / ``runs abort`` (RollbackError); so does an unexpected error."""
    journal, run_id, guard = session.journal, session.run_id, session.guard
    guard.disarm()
    first_time = journal.run(run_id).result is None  # keep the first detection on resume
    detected = {"failure_detected": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")}
    journal.set_run(run_id, "compensating", error=why, result=detected if first_time else None)
    failures = []
    try:
        guard.arm()
        context = session.context()
        for record in reversed(session.records()):
            if record.status in NOTHING_TO_UNDO:
                continue
            with logs.bind(step=record.name):
                error = _undo(session, session.playbook.steps[record.index], record, context)
            if error:
                failures.append((record.name, error))
        guard.disarm()
    except (Interrupted, Exception) as stopped:
        guard.disarm()
        cause = str(stopped) if isinstance(stopped, Interrupted) else reason(stopped)
        logs.get().error("run.rollback_interrupted", reason=cause)
        raise RollbackError(
            f"{cause} during the rollback of run {run_id}; it is left compensating: "
            f"`aura-ops runs resume {run_id}` finishes the undo"
        ) from None
    return _compensated(session, why, failures, aborted)


def _compensated(session: Session, why: str, failures: list[tuple[str, str]], aborted: bool) -> Outcome:
    """Journal how the undo ended; its outcome."""
    run_id = session.run_id
    if failures:
        session.journal.set_run(run_id, "rollback_failed")
        states = "; ".join(f"{name}: {error}" for name, error in failures)
        logs.get().error("run.rollback_failed", failures=states)
        return session.ended(
            RollbackError(
                f"run {run_id} failed ({why}) and its rollback failed: {states}. "
                f"The other steps were undone. Fix the cause, then `aura-ops runs abort {run_id}` "
                f"retries the undo; `aura-ops runs show {run_id}` shows every step's state."
            )
        )
    session.journal.set_run(run_id, "rolled_back")
    logs.get().info("run.rolled_back")
    if aborted:
        return session.ended(f"run {run_id} aborted: every step it applied was undone")
    return session.ended(RunFailed(f"run {run_id} failed ({why}); every applied step was undone"))


def stop_at_failure(session: Session, why: str) -> Outcome:
    """No rollback asked: undo only the ``always_undo`` steps (stopped services start again)."""
    run_id, guard = session.run_id, session.guard
    context = session.context()
    failures = []
    for record in reversed(session.records()):
        step = session.playbook.steps[record.index]
        if not (step.always_undo and record.status in ("applied", "applying")):
            continue
        # Not journaled as compensated: a later `runs abort` still undoes this step in its turn.
        action = REGISTRY[step.action]
        try:
            guard.arm()
            with logs.bind(step=record.name):
                action.compensate(params_of(action, step.with_, context), session.action_context(step), record.outputs)
                logs.get().info("step.undone_at_stop")
        except (Interrupted, Exception) as exc:
            failures.append(f"{record.name}: {reason(exc)}")
        finally:
            guard.disarm()
    session.journal.set_run(run_id, "rollback_failed" if failures else "failed", error=why)
    hint = f"to undo it: `aura-ops runs abort {run_id}`"
    if failures:
        return session.ended(
            RollbackError(f"run {run_id} failed ({why}); restarting services failed too: {'; '.join(failures)}; {hint}")
        )
    return session.ended(
        RunFailed(f"run {run_id} failed ({why}); nothing was rolled back and services are running; {hint}")
    )


def _undo(session: Session, step: Step, record: StepRecord, context: dict[str, Any]) -> str | None:
    """Compensate one step; return None, or the reason its compensation failed."""
    journal, run_id = session.journal, session.run_id
    own_action = REGISTRY[step.action]
    action_name, raw = (step.undo.action, step.undo.with_) if step.undo else (step.action, step.with_)
    action = REGISTRY[action_name]
    ctx = session.action_context(step)
    if record.status == "failed" and record.attempts == 0:
        return None  # it failed before it was journaled applying (its parameters or its check)
    try:
        try:
            own = params_of(own_action, step.with_, context)
        except Exception:
            if record.status == "failed":  # rendering is deterministic: it never began applying
                return None
            raise
        params = params_of(action, raw, context)
        if (
            record.status == "failed"
            and not own_action.undo_after_failure
            and not (own_action.can_check(own) and own_action.check(own, ctx))
        ):
            return None  # it failed before changing anything (or no check can tell: leave it)
        if record.status == "applying" and own_action.can_check(own) and not own_action.check(own, ctx):
            journal.step_finished(run_id, record.index, "compensated")
            logs.get().info("step.compensated", note="it had not been applied")
            return None
        journal.step_started(run_id, record.index, "compensating")
        fault(step.name, "during-compensate")
        for attempt in tenacity.Retrying(
            stop=tenacity.stop_after_attempt(COMPENSATION_ATTEMPTS),
            wait=tenacity.wait_fixed(step.delay),
            reraise=True,
        ):
            with attempt:
                if step.undo:
                    action.apply(params, ctx)
                else:
                    action.compensate(params, ctx, record.outputs)
    except Exception as exc:  # any exception fails the undo (a signal is no Exception)
        why = reason(exc)
        journal.step_finished(run_id, record.index, "compensation_failed", error=why)
        logs.get().error("step.compensation_failed", reason=why)
        return why
    journal.step_finished(run_id, record.index, "compensated")
    logs.get().info("step.compensated")
    return None


def discards_data(playbook: Playbook, records: list[StepRecord]) -> list[str]:
    """The steps whose undo would put a database back from a snapshot (discarding what was
    written since): what ``runs abort`` asks consent for."""
    found = []
    for record in records:
        step = playbook.steps[record.index]
        undone = record.status not in NOTHING_TO_UNDO and (
            record.status != "failed" or REGISTRY[step.action].undo_after_failure
        )
        restores = step.action == "migrate" or (step.undo is not None and step.undo.action == "restore")
        if undone and restores:
            found.append(record.name)
    return found
