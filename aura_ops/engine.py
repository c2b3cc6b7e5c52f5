"""The transaction engine: a playbook run that completes or is undone, and survives a crash.

Every step transition is committed to the journal before the side effect goes on. A failing
step (after its retries) makes the engine compensate the applied steps in reverse order; a
failing compensation ends the run ``rollback_failed`` (exit 4). A killed run is found by the
next invocation on the same target, which refuses new work until ``runs resume`` (forward; each
step's ``check`` makes re-applying a maybe-applied step safe) or ``runs abort`` (compensate).

Test hook: ``AURA_FAULT=<step>:<before|after|during-compensate>`` makes the process exit
abruptly (as SIGKILL would) at that point of that step; ``AURA_PAUSE=...`` stops it there
(``aura_ops.faults``).
"""

from __future__ import annotations

import datetime as dt
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from aura_ops import faults, lock, logs, temporaries
from aura_ops.actions import REGISTRY, Action, Context
from aura_ops.config import Config
from aura_ops.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_ROLLBACK,
    AuraError,
    LockedError,
    RollbackError,
    UsageError,
    first_line,
)
from aura_ops.host import local_hostname
from aura_ops.journal import Journal, RunRecord, StepRecord
from aura_ops.playbook import Playbook, Step, render
from aura_ops.repository import new_snapshot_id
from aura_ops.secrets import mask

FAULT_ENV = faults.FAULT_ENV
COMPENSATION_ATTEMPTS = 3
FALSY = {"", "false", "no", "0", "none", "off"}


def _fault(step: str, point: str) -> None:
    faults.point(f"{step}:{point}")  # AURA_FAULT exits there, AURA_PAUSE stops there


class StepFailed(Exception):
    def __init__(self, step: str, reason: str) -> None:
        self.step = step
        self.reason = reason
        super().__init__(f"step {step} failed: {reason}")


class Interrupted(KeyboardInterrupt):
    """First SIGINT/SIGTERM: stop the current step (its process is killed), then compensate.

    A KeyboardInterrupt, so that no ``except Exception`` on the way swallows it."""


@contextmanager
def _signals() -> Iterator[None]:
    def handler(signum: int, _frame: object) -> None:
        raise Interrupted(f"interrupted by {signal.Signals(signum).name}")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass(frozen=True)
class Outcome:
    run: RunRecord
    steps: list[StepRecord]
    exit_code: int
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": self.run.as_dict(),
            "steps": [{**s.__dict__, "seconds": _seconds(s.started, s.ended)} for s in self.steps],
            "exit_code": self.exit_code,
            "message": self.message,
        }


def _seconds(started: str | None, ended: str | None) -> float | None:
    """How long a step's last phase took: its apply, or for an undone step its compensation."""
    if not started or not ended or ended < started:
        return None
    return round((dt.datetime.fromisoformat(ended) - dt.datetime.fromisoformat(started)).total_seconds(), 3)


def state_dir(config: Config) -> Path:
    return config.state.path


def refuse_if_interrupted(config: Config) -> None:
    """LockedError when a run on this configuration was interrupted and not yet resolved."""
    if (state_dir(config) / "journal.db").exists():
        engine = Engine(config)
        try:
            engine._refuse_interrupted()
        finally:
            engine.journal.close()


class Engine:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.state = state_dir(config)
        self.journal = Journal(self.state / "journal.db")
        self.target = str(self.state)  # the run lock's scope

    # ------------------------------------------------------------ entry points

    def run(
        self,
        playbook: Playbook,
        given: dict[str, str],
        key: str | None = None,
        trigger: str = "cli",
        rollback: bool = True,
    ) -> Outcome:
        params = playbook.resolve_params(given)
        run_id = new_snapshot_id()
        with self._locked(run_id, f"run {playbook.name}"):
            if key:
                done = self._idempotent(key)
                if done is not None:
                    return done
            self._refuse_interrupted()
            self.journal.create_run(
                run_id,
                playbook.source or playbook.name,
                params,
                key,
                self.target,
                trigger,
                local_hostname(),
                [(s.name, s.action) for s in playbook.steps],
                playbook.model_dump_json(by_alias=True),
            )
            return self._drive(run_id, playbook, params, rollback)

    def resume(self, reference: str) -> Outcome:
        run_id = self.journal.run(reference).id
        with self._locked(run_id, f"resume {run_id}"):
            run = self.journal.run(run_id)  # read again now that no one else can change it
            self._require_unfinished(run)
            self.journal.claim(run.id)
            playbook = Playbook.model_validate_json(self.journal.definition(run.id))
            if run.status == "compensating":
                return self._compensate(run.id, playbook, run.params, run.error or "resumed")
            return self._drive(run.id, playbook, run.params)

    def abort(self, reference: str) -> Outcome:
        run_id = self.journal.run(reference).id
        with self._locked(run_id, f"abort {run_id}"):
            run = self.journal.run(run_id)
            self._require_unfinished(run, allow_failed=True)  # a failed run may still be undone
            self.journal.claim(run.id)
            playbook = Playbook.model_validate_json(self.journal.definition(run.id))
            return self._compensate(run.id, playbook, run.params, "aborted by the operator")

    def succeeded(self, key: str) -> Outcome | None:
        """The no-op outcome when a run with ``key`` already succeeded (read only, no lock: a
        caller can skip its preflight; ``run`` checks again under the lock)."""
        for run in reversed(self.journal.by_key(key)):
            if run.status == "succeeded":
                return self.outcome(
                    run.id, EXIT_OK, f"idempotency key {key!r}: run {run.id} already succeeded; nothing to do"
                )
        return None

    def outcome(self, run_id: str, exit_code: int, message: str) -> Outcome:
        return Outcome(self.journal.run(run_id), self.journal.steps(run_id), exit_code, message)

    # ------------------------------------------------------------ guards

    @contextmanager
    def _locked(self, run_id: str, command: str) -> Iterator[None]:
        with (
            logs.bind(run_id=run_id, host=local_hostname()),
            lock.hold(self.state / "run.lock", run_id, command),
            temporaries.bound(self.config),
        ):
            temporaries.sweep(self.config)  # what a killed process left: put right first
            yield

    def _idempotent(self, key: str) -> Outcome | None:
        done = self.succeeded(key)
        if done is not None:
            return done
        for run in reversed(self.journal.by_key(key)):
            if not run.finished:
                raise LockedError(
                    f"idempotency key {key!r}: run {run.id} is {run.status} "
                    f"(interrupted); `aura-ops runs resume {run.id}` or "
                    f"`aura-ops runs abort {run.id}`"
                )
        return None

    def _refuse_interrupted(self) -> None:
        for run in self.journal.unfinished(self.target):
            raise LockedError(
                f"run {run.id} ({run.playbook}) was interrupted while {run.status}; "
                f"resolve it first: `aura-ops runs resume {run.id}` or "
                f"`aura-ops runs abort {run.id}`"
            )

    @staticmethod
    def _require_unfinished(run: RunRecord, allow_failed: bool = False) -> None:
        if run.finished and not (allow_failed and run.status == "failed"):
            raise UsageError(f"run {run.id} already ended {run.status}; nothing to resume or abort")

    # ------------------------------------------------------------ forward

    def _context(self, run_id: str, params: dict[str, Any]) -> dict[str, Any]:
        outputs = {
            s.name: s.outputs
            for s in self.journal.steps(run_id)
            if s.status in ("applied", "compensating", "compensated")
        }
        return {"params": params, "steps": outputs, "run_id": run_id}

    def _drive(self, run_id: str, playbook: Playbook, params: dict[str, Any], rollback: bool = True) -> Outcome:
        log = logs.get()
        context = self._context(run_id, params)
        records = self.journal.steps(run_id)
        try:
            with _signals():
                for index, step in enumerate(playbook.steps):
                    if records[index].status in ("applied", "skipped"):
                        continue
                    with logs.bind(step=step.name):
                        self._step(run_id, index, step, context)
        except (StepFailed, Interrupted) as failure:
            reason = failure.reason if isinstance(failure, StepFailed) else str(failure)
            log.error("run.failed", reason=mask(reason))
            if not rollback and isinstance(failure, StepFailed):
                return self._stop_at_failure(run_id, playbook, params, mask(reason))
            return self._compensate(run_id, playbook, params, mask(reason))
        self.journal.set_run(run_id, "succeeded", result=context["steps"])
        log.info("run.succeeded")
        return self.outcome(run_id, EXIT_OK, f"run {run_id} succeeded")

    def _step(self, run_id: str, index: int, step: Step, context: dict[str, Any]) -> None:
        log = logs.get()
        if step.when is not None and str(render(step.when, context)).strip().lower() in FALSY:
            self.journal.step_finished(run_id, index, "skipped")
            log.info("step.skipped", reason=f"when: {step.when}")
            return
        action = REGISTRY[step.action]
        ctx = Context(self.config, run_id, step.name, self.state / "runs" / run_id, step.timeout)
        self.journal.step_started(run_id, index)
        log.info("step.started", action=step.action)
        _fault(step.name, "before")
        try:
            params = _params(action, step.with_, context)
            outputs = self._apply(action, params, ctx, step)
        except (AuraError, ValidationError, OSError) as exc:
            reason = mask(first_line(exc))
            self.journal.step_finished(run_id, index, "failed", error=reason)
            log.error("step.failed", reason=reason)
            if step.on_failure == "continue":
                context["steps"][step.name] = {}
                return
            raise StepFailed(step.name, reason) from None
        _fault(step.name, "after")
        self.journal.step_finished(run_id, index, "applied", outputs)
        context["steps"][step.name] = outputs
        log.info("step.applied")

    @staticmethod
    def _apply(action: Action, params: Any, ctx: Context, step: Step) -> dict[str, Any]:
        import tenacity

        if action.check(params, ctx):
            logs.get().info("step.already_applied")
            return {"already_applied": True}
        for attempt in tenacity.Retrying(
            stop=tenacity.stop_after_attempt(step.retries + 1),
            wait=tenacity.wait_fixed(step.delay),
            retry=tenacity.retry_if_exception_type(AuraError),
            reraise=True,
            before_sleep=lambda s: logs.get().warning("step.retry", attempt=f"{s.attempt_number}/{step.retries + 1}"),
        ):
            with attempt:
                outputs = action.apply(params, ctx)
                if step.verify:
                    action.verify(params, ctx, outputs)
        return outputs

    # ------------------------------------------------------------ backward

    def _compensate(self, run_id: str, playbook: Playbook, params: dict[str, Any], reason: str) -> Outcome:
        log = logs.get()
        first_time = self.journal.run(run_id).result is None  # keep the first detection on resume
        detected = {"failure_detected": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")}
        self.journal.set_run(run_id, "compensating", error=reason, result=detected if first_time else None)
        context = self._context(run_id, params)
        failures = []
        try:
            with _signals():
                for record in reversed(self.journal.steps(run_id)):
                    if record.status in ("pending", "skipped", "compensated"):
                        continue
                    with logs.bind(step=record.name):
                        error = self._undo(run_id, playbook.steps[record.index], record, context)
                    if error:
                        failures.append((record.name, error))
        except Interrupted as second:
            log.error("run.rollback_interrupted", reason=str(second))
            raise RollbackError(
                f"{second} during the rollback of run {run_id}; it is left compensating: "
                f"`aura-ops runs resume {run_id}` finishes the undo"
            ) from None
        if failures:
            self.journal.set_run(run_id, "rollback_failed")
            states = "; ".join(f"{name}: {error}" for name, error in failures)
            log.error("run.rollback_failed", failures=states)
            return self.outcome(
                run_id,
                EXIT_ROLLBACK,
                (
                    f"run {run_id} failed ({reason}) and its rollback failed: {states}. "
                    f"The other steps were undone. Fix the cause, then `aura-ops runs abort {run_id}` "
                    f"retries the undo; `aura-ops runs show {run_id}` shows every step's state."
                ),
            )
        self.journal.set_run(run_id, "rolled_back")
        log.info("run.rolled_back")
        return self.outcome(run_id, EXIT_FAILED, f"run {run_id} failed ({reason}); every applied step was undone")

    def _stop_at_failure(self, run_id: str, playbook: Playbook, params: dict[str, Any], reason: str) -> Outcome:
        """No rollback asked: undo only the ``always_undo`` steps (stopped services start again)."""
        context = self._context(run_id, params)
        failures = []
        for record in reversed(self.journal.steps(run_id)):
            step = playbook.steps[record.index]
            if not (step.always_undo and record.status in ("applied", "applying")):
                continue
            # Not journaled as compensated: a later `runs abort` still undoes this step in its turn.
            ctx = Context(self.config, run_id, step.name, self.state / "runs" / run_id, step.timeout)
            try:
                with logs.bind(step=record.name):
                    REGISTRY[step.action].compensate(
                        _params(REGISTRY[step.action], step.with_, context), ctx, record.outputs
                    )
                    logs.get().info("step.undone_at_stop")
            except (AuraError, ValidationError, OSError) as exc:
                failures.append(f"{record.name}: {mask(str(exc))}")
        self.journal.set_run(run_id, "rollback_failed" if failures else "failed", error=reason)
        hint = f"to undo it: `aura-ops runs abort {run_id}`"
        if failures:
            return self.outcome(
                run_id,
                EXIT_ROLLBACK,
                f"run {run_id} failed ({reason}); restarting services failed too: {'; '.join(failures)}; {hint}",
            )
        return self.outcome(
            run_id,
            EXIT_FAILED,
            f"run {run_id} failed ({reason}); nothing was rolled back and services are running; {hint}",
        )

    def _undo(self, run_id: str, step: Step, record: StepRecord, context: dict[str, Any]) -> str | None:
        """Compensate one step; return None, or the reason its compensation failed."""
        import tenacity

        action_name, raw = (step.undo.action, step.undo.with_) if step.undo else (step.action, step.with_)
        action = REGISTRY[action_name]
        ctx = Context(self.config, run_id, step.name, self.state / "runs" / run_id, step.timeout)
        try:
            params = _params(action, raw, context)
            own = _params(REGISTRY[step.action], step.with_, context)
            if (
                record.status == "failed"
                and not REGISTRY[step.action].undo_after_failure
                and not (REGISTRY[step.action].can_check(own) and REGISTRY[step.action].check(own, ctx))
            ):
                return None  # it failed before changing anything (or no check can tell: leave it)
            if (
                record.status == "applying"
                and REGISTRY[step.action].can_check(own)
                and not REGISTRY[step.action].check(own, ctx)
            ):
                self.journal.step_finished(run_id, record.index, "compensated")
                logs.get().info("step.compensated", note="it had not been applied")
                return None
            self.journal.step_started(run_id, record.index, "compensating")
            _fault(step.name, "during-compensate")
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
        except (AuraError, ValidationError, OSError) as exc:
            reason = mask(first_line(exc))
            self.journal.step_finished(run_id, record.index, "compensation_failed", error=reason)
            logs.get().error("step.compensation_failed", reason=reason)
            return reason
        self.journal.step_finished(run_id, record.index, "compensated")
        logs.get().info("step.compensated")
        return None


def _params(action: Action, raw: dict[str, Any], context: dict[str, Any]) -> Any:
    return action.Params.model_validate(render(raw, context))
