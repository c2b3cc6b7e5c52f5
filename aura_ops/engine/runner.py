"""Running forward: each step not yet done is checked, journaled, applied, verified, journaled.

Every transition is committed to the journal before the side effect goes on. Any exception from
a step (an aura-ops error, a database or template error, a bug) fails it after its retries;
the run is then compensated (``compensation``), or stopped there when no rollback is asked. A
step that its check finds applied before the run touched it is journaled ``already_applied``
and never undone: a failed run removes only its own work.
"""

from __future__ import annotations

from typing import Any

import tenacity
from pydantic import ValidationError

from aura_ops import logs
from aura_ops.engine import compensation
from aura_ops.engine.actions import REGISTRY, Action, Context
from aura_ops.engine.outcome import Outcome, reason
from aura_ops.engine.playbook import Playbook, Step, environment, render
from aura_ops.engine.session import Session, fault, params_of
from aura_ops.errors import AuraError, Interrupted, LockedError, StepFailed, UsageError
from aura_ops.secrets import mask, mask_values
from aura_ops.state.journal import Journal, RunRecord

# a step in these states is done and is not applied again on resume
DONE = ("applied", "already_applied", "skipped")
FALSY = {"", "false", "no", "0", "none", "off"}


def succeeded(journal: Journal, key: str) -> RunRecord | None:
    """The last run with idempotency ``key`` that succeeded, if any."""
    for run in reversed(journal.by_key(key)):
        if run.status == "succeeded":
            return run
    return None


def refuse_unfinished_key(journal: Journal, key: str) -> None:
    """LockedError when a run with ``key`` is unfinished: it is resumed or aborted, not run again."""
    for run in reversed(journal.by_key(key)):
        if not run.finished:
            raise LockedError(
                f"idempotency key {key!r}: run {run.id} is {run.status} "
                f"(interrupted); `aura-ops runs resume {run.id}` or "
                f"`aura-ops runs abort {run.id}`"
            )


def check_usage(playbook: Playbook, params: dict[str, Any]) -> None:
    """Before the run lock and the run's first step (its snapshot): UsageError (exit 2, nothing
    run) naming the first step whose ``with`` is invalid, for every step whose ``with`` and
    ``when`` depend on the playbook's parameters only. A step that uses an earlier step's outputs
    or the run id is checked when it runs; a step its ``when`` skips is not checked. Pure: no
    state is read, nothing is changed."""
    env = environment()
    context: dict[str, Any] = {"params": params, "steps": {}, "run_id": ""}
    for index, step in enumerate(playbook.steps):
        if not _depends_on_params_only(env, [step.with_, step.when]):
            continue
        where = f"{playbook.source or playbook.name}: step {index + 1} '{step.name}'"
        try:
            if step.when is not None and str(render(step.when, context, env)).strip().lower() in FALSY:
                continue
            params_of(REGISTRY[step.action], step.with_, context)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'with'}: {e['msg']}" for e in exc.errors())
            raise UsageError(f"{where}: {mask(problems)}; nothing was run") from None
        except Exception as exc:  # a template error: the run would fail at this step
            raise UsageError(f"{where}: {reason(exc)}; nothing was run") from None


def _depends_on_params_only(env: Any, values: list[Any]) -> bool:
    """Whether every template string in ``values`` names no variable but ``params``."""
    from jinja2 import TemplateError, meta

    strings: list[str] = []
    pending = list(values)
    while pending:
        value = pending.pop()
        if isinstance(value, str) and "{" in value:
            strings.append(value)
        elif isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    try:
        return all(meta.find_undeclared_variables(env.parse(text)) <= {"params"} for text in strings)
    except TemplateError:  # the playbook's own check reports it; the run fails at this step
        return False


def drive(session: Session) -> Outcome:
    """Apply the steps not yet done; on any failure (an exception of any kind, a signal)
    compensate, or stop there when the run asked for no rollback (as journaled: a resumed run
    keeps its choice). Never leaves the run ``running`` except when the process is killed."""
    log = logs.get()
    guard = session.guard
    try:
        guard.arm()
        for index, step in enumerate(session.playbook.steps):
            records = session.records()
            if records[index].status in DONE:
                continue
            with logs.bind(step=step.name):
                _step(session, index, step, session.context(records), records[index].status)
        fault("run", "end")
        guard.disarm()  # from here a signal is held: it comes after the run's last step
        session.journal.set_run(session.run_id, "succeeded", result=session.context()["steps"])
    except (Interrupted, Exception) as failure:
        guard.disarm()
        why = failure.reason if isinstance(failure, StepFailed) else reason(failure)
        log.error("run.failed", reason=why)
        if isinstance(failure, StepFailed) and not session.journal.run(session.run_id).rollback:
            return compensation.stop_at_failure(session, why)
        return compensation.compensate(session, why)
    log.info("run.succeeded")
    return session.ended(f"run {session.run_id} succeeded")


def _step(session: Session, index: int, step: Step, context: dict[str, Any], status: str) -> None:
    """Apply one step (``status`` its journaled state) and journal how it ended; StepFailed
    when it failed and the run must not go on."""
    log = logs.get()
    journal, run_id = session.journal, session.run_id
    action = REGISTRY[step.action]
    ctx = session.action_context(step)
    try:
        if step.when is not None and str(render(step.when, context)).strip().lower() in FALSY:
            journal.step_finished(run_id, index, "skipped")
            log.info("step.skipped", reason=f"when: {step.when}")
            return
        params = params_of(action, step.with_, context)
        # Checked before the step is journaled `applying`: found applied now, it is an earlier
        # run's work, journaled apart and never undone by this run's compensation.
        if status == "pending" and action.check(params, ctx):
            journal.step_finished(run_id, index, "already_applied", {"already_applied": True})
            log.info("step.already_applied")
            return
        journal.step_started(run_id, index)
        log.info("step.started", action=step.action)
        fault(step.name, "before")
        applied = _apply(action, params, ctx, step, recheck=status != "pending")
        outputs = {k: v if k in action.identifiers else mask_values(v) for k, v in applied.items()}
    except Exception as exc:  # any exception fails the step (a signal is no Exception)
        why = reason(exc)
        journal.step_finished(run_id, index, "failed", error=why)
        log.error("step.failed", reason=why)
        if step.on_failure == "continue":
            return
        raise StepFailed(step.name, why) from None
    fault(step.name, "after")
    journal.step_finished(run_id, index, "applied", outputs)
    log.info("step.applied")
    fault(step.name, "applied")


def _apply(action: Action, params: Any, ctx: Context, step: Step, recheck: bool) -> dict[str, Any]:
    """Apply and verify, retried on a retryable AuraError; a step this run began before a crash
    (``recheck``) is first checked: applied then, by this run, its undo is ours."""
    if recheck and action.check(params, ctx):
        logs.get().info("step.found_applied")
        return {"found_applied": True}
    for attempt in tenacity.Retrying(
        stop=tenacity.stop_after_attempt(step.retries + 1),
        wait=tenacity.wait_fixed(step.delay),
        retry=tenacity.retry_if_exception(lambda exc: isinstance(exc, AuraError) and exc.retryable),
        reraise=True,
        before_sleep=lambda s: logs.get().warning("step.retry", attempt=f"{s.attempt_number}/{step.retries + 1}"),
    ):
        with attempt:
            outputs = action.apply(params, ctx)
            if step.verify:
                action.verify(params, ctx, outputs)
    return outputs
