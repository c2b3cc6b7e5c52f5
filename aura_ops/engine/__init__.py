"""The transaction engine: a playbook run that completes or is undone, and survives a crash.

Every step transition is committed to the journal before the side effect goes on. A failing
step (after its retries) makes the engine compensate the applied steps in reverse order; a
failing compensation ends the run ``rollback_failed`` (exit 4). A killed run is found by the
next invocation on the same target, which refuses new work until ``runs resume`` (forward; each
step's ``check`` makes re-applying a maybe-applied step safe) or ``runs abort`` (compensate).

Any exception from a step (an aura-ops error, a database or template error, a bug) fails it
and starts the compensation. A step that its check finds applied before the run touched it is
journaled ``already_applied`` and never undone: a failed run removes only its own work.

Signals: the engine owns SIGTERM and SIGINT for the whole command (``_Guard``). The first one
stops the current step (its process group is killed) and compensates; one that arrives while
the run's own state changes (created, compensating, ended) is held until that change is
committed. Nested code never replaces this handling (``snapshots.interruptible`` defers to it).

Test hooks (``aura_ops.faults``): ``AURA_FAULT=<step>:<before|after|applied|during-compensate>`` makes the process exit
abruptly (as SIGKILL would) at that point of that step; with a third part, e.g.
``AURA_FAULT=config:applied:SIGTERM``, the process sends itself that signal there instead. The
run itself has the points ``run:start`` (journaled, no step begun) and ``run:end`` (every step
applied, not yet journaled succeeded).
``AURA_PAUSE=<point>`` stops the process there (SIGSTOP) until a test continues it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from aura_ops import faults, logs
from aura_ops.config import Config
from aura_ops.engine.actions import REGISTRY, Action, Context
from aura_ops.engine.playbook import Playbook, Step, render
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
from aura_ops.hosts import local_hostname
from aura_ops.hosts.inventory import Inventory
from aura_ops.repository import new_snapshot_id
from aura_ops.secrets import mask, mask_values, register
from aura_ops.state import lock, temporaries
from aura_ops.state.journal import Journal, RunRecord, StepRecord

FAULT_ENV = faults.FAULT_ENV
COMPENSATION_ATTEMPTS = 3
FALSY = {"", "false", "no", "0", "none", "off"}


# a step in these states is done and is not applied again on resume
DONE = ("applied", "already_applied", "skipped")
# compensation passes over these: nothing of this run to undo
NOTHING_TO_UNDO = ("pending", "skipped", "compensated", "already_applied")


def _fault(step: str, point: str) -> None:
    faults.point(f"{step}:{point}")  # AURA_FAULT exits or signals there, AURA_PAUSE stops there


class StepFailed(Exception):
    def __init__(self, step: str, reason: str) -> None:
        self.step = step
        self.reason = reason
        super().__init__(f"step {step} failed: {reason}")


class Interrupted(KeyboardInterrupt):
    """First SIGINT/SIGTERM: stop the current step (its process is killed), then compensate.

    A KeyboardInterrupt, so that no ``except Exception`` on the way swallows it."""


class _Guard:
    """SIGTERM/SIGINT for one engine command. Armed, a signal raises ``Interrupted`` at once
    (and disarms: the code that handles it decides when the next one may interrupt); disarmed,
    it is held and raised by the next ``arm``, so a journal update is never torn by it."""

    def __init__(self) -> None:
        self.armed = False
        self.pending: str | None = None

    def handler(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if self.armed:
            self.armed = False
            raise Interrupted(f"interrupted by {name}")
        self.pending = self.pending or name

    def arm(self) -> None:
        """Interrupt from now on; raise ``Interrupted`` for a signal held meanwhile."""
        pending, self.pending = self.pending, None
        if pending:
            raise Interrupted(f"interrupted by {pending}")
        self.armed = True

    def disarm(self) -> None:
        self.armed = False


@contextmanager
def _signals() -> Iterator[_Guard]:
    guard = _Guard()
    if threading.current_thread() is not threading.main_thread():  # only the main thread has signals
        yield guard
        return
    previous = {s: signal.signal(s, guard.handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield guard
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        if guard.pending:
            logs.get().warning("run.signal_after_end", signal=guard.pending, note="the run had already ended")


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


def warn_if_interrupted(config: Config) -> list[str]:
    """Log a warning for each unfinished run on this configuration (a backup goes on); their ids."""
    if not (state_dir(config) / "journal.db").exists():
        return []
    journal = Journal(state_dir(config) / "journal.db")
    try:
        runs = journal.unfinished(str(state_dir(config)))
    finally:
        journal.close()
    for run in runs:
        logs.get().warning("run.unfinished", run=run.id, detail=describe_unfinished(run))
    return [run.id for run in runs]


def _process_state(run: RunRecord) -> str:
    """Whether the process that last drove ``run`` is alive, from the pid and host in the journal."""
    from aura_ops.state.lock import _pid_alive

    if not run.pid:
        return "its process is unknown"
    if run.host and run.host != local_hostname():
        return f"its process (pid {run.pid} on {run.host}) cannot be checked from this host"
    alive = _pid_alive(run.pid)
    with contextlib.suppress(OSError):  # a pid the kernel has given to another program is not the run's
        alive = alive and b"aura" in Path(f"/proc/{run.pid}/cmdline").read_bytes()
    if alive:
        return f"its process (pid {run.pid} on {run.host or 'this host'}) is still alive: it may still be running"
    return f"its process (pid {run.pid} on {run.host or 'this host'}) is dead"


def describe_unfinished(run: RunRecord) -> str:
    """One line: which run, whether its process is alive, and the commands that resolve it."""
    return (
        f"run {run.id} ({Path(run.playbook).stem}) is unfinished ({run.status}) and {_process_state(run)}; "
        f"resolve it first: `aura-ops runs resume {run.id}` (finish it) or `aura-ops runs abort {run.id}` (undo it)"
    )


class Engine:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.state = state_dir(config)
        self.journal = Journal(self.state / "journal.db")
        self.hosts = Inventory(config)  # shared by every step of the command
        self.target = str(self.state)  # the run lock's scope

    # ------------------------------------------------------------ entry points

    def run(
        self,
        playbook: Playbook,
        given: dict[str, str],
        key: str | None = None,
        trigger: str = "cli",
        rollback: bool = True,
        succeeded_is_done: bool = True,
    ) -> Outcome:
        """Run ``playbook``. With ``key``: a run with that key that is unfinished refuses (exit 5),
        and one that succeeded makes this a no-op unless ``succeeded_is_done`` is False (the
        caller has decided, e.g. a deploy of a version that was rolled back since)."""
        params = playbook.resolve_params(given)  # secret values are registered from here on
        stored, withheld = playbook.stored_params(params)
        run_id = new_snapshot_id()
        with self._locked(run_id, f"run {playbook.name}"), _signals() as guard:
            if key:
                done = self._idempotent(key, succeeded_is_done)
                if done is not None:
                    return done
            self._refuse_interrupted()
            self.journal.create_run(
                run_id,
                playbook.source or playbook.name,
                stored,
                key,
                self.target,
                trigger,
                local_hostname(),
                [(s.name, s.action) for s in playbook.steps],
                # the stored definition names every withheld parameter: resume asks for it again
                playbook.model_copy(update={"secrets": withheld}).model_dump_json(by_alias=True),
            )
            _fault("run", "start")
            return self._drive(run_id, playbook, params, guard, rollback)

    def resume(self, reference: str, given: dict[str, str] | None = None) -> Outcome:
        run_id = self.journal.run(reference).id
        with self._locked(run_id, f"resume {run_id}"), _signals() as guard:
            run = self.journal.run(run_id)  # read again now that no one else can change it
            self._require_unfinished(run)
            playbook = Playbook.model_validate_json(self.journal.definition(run.id))
            params = self._params_again(run, playbook, given or {}, "resume")
            self.journal.claim(run.id)
            if run.status == "compensating":
                return self._compensate(run.id, playbook, params, run.error or "resumed", guard)
            return self._drive(run.id, playbook, params, guard)

    def abort(self, reference: str, given: dict[str, str] | None = None) -> Outcome:
        """Undo every step an unfinished, failed or rollback_failed run applied: exit 0 when
        the undo brought everything back, 4 when a step's undo failed."""
        run_id = self.journal.run(reference).id
        with self._locked(run_id, f"abort {run_id}"), _signals() as guard:
            run = self.journal.run(run_id)
            self._require_unfinished(run, allow_failed=True)  # a failed run may still be undone
            self._refuse_if_overtaken(run)
            playbook = Playbook.model_validate_json(self.journal.definition(run.id))
            params = self._params_again(run, playbook, given or {}, "abort")
            self.journal.claim(run.id)
            return self._compensate(run.id, playbook, params, "aborted by the operator", guard, aborted=True)

    def _refuse_if_overtaken(self, run: RunRecord) -> None:
        """A run that ended (failed, rollback_failed) handed the system back: a later run on the
        same target may have changed it since, and undoing this one on top of that would undo
        more than its own work (say, restore its pre-deploy snapshot over a later deploy's
        database). UsageError naming the later runs that did anything."""
        if not run.finished:
            return  # an interrupted run blocks every later run on its target (backups aside)
        later = [
            other
            for other in self.journal.runs(10_000)
            if other.id > run.id and other.target == run.target and other.status != "rolled_back"
        ]
        if later:
            names = ", ".join(
                f"{r.id} ({Path(r.playbook).stem}, {r.status})" for r in sorted(later, key=lambda r: r.id)
            )
            raise UsageError(
                f"run {run.id} ended {run.status} and later runs changed the system since: {names}; undoing it "
                "now would undo on top of them. Nothing was changed (restore a snapshot, or roll back, instead)"
            )

    def undo_discards_data(self, reference: str) -> list[str]:
        """The steps of a run whose undo puts a database back from a snapshot (discarding what was
        written since): what ``runs abort`` asks consent for. Read only."""
        run = self.journal.run(reference)
        playbook = Playbook.model_validate_json(self.journal.definition(run.id))
        found = []
        for record in self.journal.steps(run.id):
            step = playbook.steps[record.index]
            action = REGISTRY[step.action]
            undone = record.status not in NOTHING_TO_UNDO and (record.status != "failed" or action.undo_after_failure)
            restores = step.action == "migrate" or (step.undo is not None and step.undo.action == "restore")
            if undone and restores:
                found.append(record.name)
        return found

    @staticmethod
    def _params_again(run: RunRecord, playbook: Playbook, given: dict[str, str], command: str) -> dict[str, Any]:
        """The run's parameters for resume / abort: the journal's, plus the secret ones (never
        stored) given again with ``-e``. UsageError naming any that is missing."""
        unknown = sorted(set(given) - set(playbook.secrets))
        if unknown:
            raise UsageError(
                f"run {run.id}: only its secret parameters can be given again "
                f"({', '.join(playbook.secrets) or 'it has none'}); not {', '.join(unknown)}"
            )
        missing = [name for name in playbook.secrets if name not in given]
        if missing:
            again = " ".join(f"-e {name}=..." for name in missing)
            raise UsageError(
                f"run {run.id} needs its secret parameter(s) {', '.join(missing)} again (they are never "
                f"stored): `aura-ops runs {command} {run.id} {again}`"
            )
        for value in given.values():
            register(value)
        return {**run.params, **given}

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

    def _idempotent(self, key: str, succeeded_is_done: bool = True) -> Outcome | None:
        done = self.succeeded(key) if succeeded_is_done else None
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
            raise LockedError(describe_unfinished(run))

    @staticmethod
    def _require_unfinished(run: RunRecord, allow_failed: bool = False) -> None:
        if run.finished and not (allow_failed and run.status in ("failed", "rollback_failed")):
            raise UsageError(f"run {run.id} already ended {run.status}; nothing to resume or abort")

    # ------------------------------------------------------------ forward

    def _context(self, run_id: str, params: dict[str, Any]) -> dict[str, Any]:
        outputs = {
            s.name: s.outputs
            for s in self.journal.steps(run_id)
            if s.status in ("applied", "already_applied", "compensating", "compensated")
        }
        return {"params": params, "steps": outputs, "run_id": run_id}

    def _step_context(self, run_id: str, step: Step) -> Context:
        """What the step's action works with: the command's hosts, and the journal for its saved state."""
        return Context(
            self.config, run_id, step.name, self.state / "runs" / run_id, step.timeout, self.hosts, self.journal
        )

    def _drive(
        self, run_id: str, playbook: Playbook, params: dict[str, Any], guard: _Guard, rollback: bool = True
    ) -> Outcome:
        """Apply the steps not yet applied; on any failure (an exception of any kind, a signal)
        compensate, or stop there when no rollback is asked. Never leaves the run ``running``
        except when the process is killed."""
        log = logs.get()
        try:
            guard.arm()
            context = self._context(run_id, params)
            records = self.journal.steps(run_id)
            for index, step in enumerate(playbook.steps):
                if records[index].status in DONE:
                    continue
                with logs.bind(step=step.name):
                    self._step(run_id, index, step, context, records[index].status)
            _fault("run", "end")
            guard.disarm()  # from here a signal is held: it comes after the run's last step
            self.journal.set_run(run_id, "succeeded", result=context["steps"])
        except (Interrupted, Exception) as failure:
            guard.disarm()
            reason = failure.reason if isinstance(failure, StepFailed) else _reason(failure)
            log.error("run.failed", reason=reason)
            if not rollback and isinstance(failure, StepFailed):
                return self._stop_at_failure(run_id, playbook, params, reason, guard)
            return self._compensate(run_id, playbook, params, reason, guard)
        log.info("run.succeeded")
        return self.outcome(run_id, EXIT_OK, f"run {run_id} succeeded")

    def _step(self, run_id: str, index: int, step: Step, context: dict[str, Any], status: str) -> None:
        log = logs.get()
        action = REGISTRY[step.action]
        ctx = self._step_context(run_id, step)
        try:
            if step.when is not None and str(render(step.when, context)).strip().lower() in FALSY:
                self.journal.step_finished(run_id, index, "skipped")
                log.info("step.skipped", reason=f"when: {step.when}")
                return
            params = _params(action, step.with_, context)
            # Checked before the step is journaled `applying`: found applied now, it is an earlier
            # run's work, journaled apart and never undone by this run's compensation.
            if status == "pending" and action.check(params, ctx):
                outputs = {"already_applied": True}
                self.journal.step_finished(run_id, index, "already_applied", outputs)
                context["steps"][step.name] = outputs
                log.info("step.already_applied")
                return
            self.journal.step_started(run_id, index)
            log.info("step.started", action=step.action)
            _fault(step.name, "before")
            applied = self._apply(action, params, ctx, step, recheck=status != "pending")
            outputs = {k: v if k in action.identifiers else mask_values(v) for k, v in applied.items()}
        except Exception as exc:  # any exception fails the step (a signal is no Exception)
            reason = _reason(exc)
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
        _fault(step.name, "applied")

    @staticmethod
    def _apply(action: Action, params: Any, ctx: Context, step: Step, recheck: bool) -> dict[str, Any]:
        import tenacity

        # a step this run began before a crash: applied then, by this run (its undo is ours)
        if recheck and action.check(params, ctx):
            logs.get().info("step.found_applied")
            return {"found_applied": True}
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

    def _compensate(
        self,
        run_id: str,
        playbook: Playbook,
        params: dict[str, Any],
        reason: str,
        guard: _Guard,
        aborted: bool = False,
    ) -> Outcome:
        """Undo, in reverse, every step this run may have applied (never one journaled
        ``already_applied``). A signal during the undo leaves the run ``compensating`` for
        ``runs resume`` / ``runs abort`` (RollbackError); so does an unexpected error."""
        log = logs.get()
        guard.disarm()
        first_time = self.journal.run(run_id).result is None  # keep the first detection on resume
        detected = {"failure_detected": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")}
        self.journal.set_run(run_id, "compensating", error=reason, result=detected if first_time else None)
        failures = []
        try:
            guard.arm()
            context = self._context(run_id, params)
            for record in reversed(self.journal.steps(run_id)):
                if record.status in NOTHING_TO_UNDO:
                    continue
                with logs.bind(step=record.name):
                    error = self._undo(run_id, playbook.steps[record.index], record, context)
                if error:
                    failures.append((record.name, error))
            guard.disarm()
        except (Interrupted, Exception) as stopped:
            guard.disarm()
            cause = str(stopped) if isinstance(stopped, Interrupted) else _reason(stopped)
            log.error("run.rollback_interrupted", reason=cause)
            raise RollbackError(
                f"{cause} during the rollback of run {run_id}; it is left compensating: "
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
        if aborted:
            return self.outcome(run_id, EXIT_OK, f"run {run_id} aborted: every step it applied was undone")
        return self.outcome(run_id, EXIT_FAILED, f"run {run_id} failed ({reason}); every applied step was undone")

    def _stop_at_failure(
        self, run_id: str, playbook: Playbook, params: dict[str, Any], reason: str, guard: _Guard
    ) -> Outcome:
        """No rollback asked: undo only the ``always_undo`` steps (stopped services start again)."""
        context = self._context(run_id, params)
        failures = []
        for record in reversed(self.journal.steps(run_id)):
            step = playbook.steps[record.index]
            if not (step.always_undo and record.status in ("applied", "applying")):
                continue
            # Not journaled as compensated: a later `runs abort` still undoes this step in its turn.
            ctx = self._step_context(run_id, step)
            try:
                guard.arm()
                with logs.bind(step=record.name):
                    REGISTRY[step.action].compensate(
                        _params(REGISTRY[step.action], step.with_, context), ctx, record.outputs
                    )
                    logs.get().info("step.undone_at_stop")
            except (Interrupted, Exception) as exc:
                failures.append(f"{record.name}: {_reason(exc)}")
            finally:
                guard.disarm()
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
        ctx = self._step_context(run_id, step)
        try:
            try:
                own = _params(REGISTRY[step.action], step.with_, context)
            except Exception:
                if record.status == "failed":  # rendering is deterministic: it never began applying
                    return None
                raise
            params = _params(action, raw, context)
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
        except Exception as exc:  # any exception fails the undo (a signal is no Exception)
            reason = _reason(exc)
            self.journal.step_finished(run_id, record.index, "compensation_failed", error=reason)
            logs.get().error("step.compensation_failed", reason=reason)
            return reason
        self.journal.step_finished(run_id, record.index, "compensated")
        logs.get().info("step.compensated")
        return None


def _params(action: Action, raw: dict[str, Any], context: dict[str, Any]) -> Any:
    return action.Params.model_validate(render(raw, context))


def _reason(exc: BaseException) -> str:
    """One masked line; an exception that is not aura-ops' own also names its type (a database
    or template error, a bug)."""
    if isinstance(exc, AuraError | ValidationError | OSError | Interrupted):
        return mask(first_line(exc))
    return mask(f"{type(exc).__name__}: {first_line(exc)}")
