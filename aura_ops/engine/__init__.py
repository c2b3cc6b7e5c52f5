"""The transaction engine: a playbook run that completes or is undone, and survives a crash.

Every step transition is committed to the journal before the side effect goes on, and the
journal is the run's only state: a failing step (after its retries) makes the engine compensate
the applied steps in reverse order; a failing compensation ends the run ``rollback_failed``
(exit 4). A killed run is found by the next invocation on the same target, which refuses new
work until ``runs resume`` or ``runs abort``.

The parts: ``runner`` (forward: steps, apply/verify, idempotency), ``compensation`` (undo, or
stop at the failure), ``resume`` (unfinished runs, the checks before resume / abort),
``signals`` (SIGTERM/SIGINT), ``session`` (what a process driving a run works with),
``outcome`` (how a run ended). ``Engine`` joins them under the run lock.

Test hooks (``aura_ops.faults``): ``AURA_FAULT=<step>:<before|after|applied|during-compensate>``
makes the process exit abruptly (as SIGKILL would) at that point of that step; with a third
part, e.g. ``AURA_FAULT=config:applied:SIGTERM``, the process sends itself that signal there
instead. The run itself has the points ``run:start`` (journaled, no step begun) and ``run:end``
(every step applied, not yet journaled succeeded). ``AURA_PAUSE=<point>`` stops the process
there (SIGSTOP) until a test continues it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

# Imported when used, not here: ``from aura_ops import engine`` (or any of its modules) must stay
# cheap for the commands that only look for an interrupted run (a backup), since the runner
# imports every action, hence every component and the playbook templates (about 0.3 s).
if TYPE_CHECKING:
    from pathlib import Path

    from aura_ops.config import Config
    from aura_ops.engine.outcome import Outcome
    from aura_ops.engine.playbook import Playbook
    from aura_ops.engine.resume import describe_unfinished
    from aura_ops.engine.session import state_dir
    from aura_ops.hosts.inventory import Inventory

__all__ = [
    "Engine",
    "Outcome",
    "describe_unfinished",
    "refuse_if_interrupted",
    "state_dir",
    "warn_if_interrupted",
]

_LAZY = {
    "Outcome": "aura_ops.engine.outcome",
    "describe_unfinished": "aura_ops.engine.resume",
    "state_dir": "aura_ops.engine.session",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _journal_exists(config: Config) -> bool:
    """Whether the configuration's state folder holds a journal (a stat: no run was ever
    journaled there otherwise, so none can be unfinished)."""
    return (config.state.path / "journal.db").exists()


def refuse_if_interrupted(config: Config) -> None:
    """LockedError when a run on this configuration was interrupted and not yet resolved."""
    if _journal_exists(config):
        from aura_ops.engine import resume

        resume.refuse_if_interrupted(config)


def warn_if_interrupted(config: Config) -> list[str]:
    """Log a warning for each unfinished run on this configuration (a backup goes on); their ids."""
    if not _journal_exists(config):
        return []
    from aura_ops.engine import resume

    return resume.warn_if_interrupted(config)


def _remember_state(config: Config, state: Path) -> None:
    """Record the state folder in the repository (``repository.journals``, once), so that a
    prune by another configuration on the same repository reads this journal's runs too."""
    from aura_ops import logs
    from aura_ops.hosts import local_hostname
    from aura_ops.repository import Repository, journals

    try:
        journals.remember(Repository(config.repository.path), state, local_hostname())
    except OSError as exc:  # (a read-only repository: the run goes on; said in the log)
        logs.get().warning("run.state_not_recorded", repository=str(config.repository.path), reason=str(exc))


class Engine:
    """Runs, resumes and aborts playbook runs on one configuration's state folder (the run
    lock's scope), each under the run lock with the engine's signal handling."""

    def __init__(self, config: Config, hosts: Inventory | None = None) -> None:
        from aura_ops.engine.session import open_journal, state_dir
        from aura_ops.hosts.inventory import Inventory

        self.config = config
        self.state = state_dir(config)
        self.journal = open_journal(config)
        self.hosts = hosts or Inventory(config)  # shared by every step of the command
        self.target = str(self.state)  # the run lock's scope

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
        from aura_ops.engine import discard, resume, runner
        from aura_ops.engine.session import Session, fault
        from aura_ops.engine.signals import guarded
        from aura_ops.hosts import local_hostname
        from aura_ops.repository import new_snapshot_id

        params = playbook.resolve_params(given)  # secret values are registered from here on
        runner.check_usage(playbook, params)  # before the lock and the snapshot
        stored, withheld = playbook.stored_params(params)
        run_id = new_snapshot_id()
        with self._locked(run_id, f"run {playbook.name}"), guarded() as guard:
            if key:
                done = self.succeeded(key) if succeeded_is_done else None
                if done is not None:
                    return done
                runner.refuse_unfinished_key(self.journal, key)
            resume.refuse_interrupted(self.journal, self.target)
            _remember_state(self.config, self.state)  # a prune by another configuration sees this run
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
                rollback,
            )
            fault("run", "start")
            session = Session(self.config, self.journal, run_id, playbook, params, guard, self.hosts)
            return discard.settle(session, runner.drive(session))

    def resume(self, reference: str, given: dict[str, str] | None = None) -> Outcome:
        """Finish an unfinished run: forward, or a compensating one's undo."""
        from aura_ops.engine import compensation, discard, resume, runner
        from aura_ops.engine.playbook import Playbook
        from aura_ops.engine.session import Session
        from aura_ops.engine.signals import guarded

        run_id = self.journal.run(reference).id
        with self._locked(run_id, f"resume {run_id}"), guarded() as guard:
            run = self.journal.run(run_id)  # read again now that no one else can change it
            resume.require_unfinished(run)
            playbook = Playbook.model_validate_json(self.journal.definition(run.id))
            params = resume.params_again(run, playbook, given or {}, "resume")
            self.journal.claim(run.id)
            session = Session(self.config, self.journal, run.id, playbook, params, guard, self.hosts)
            if run.status == "compensating":
                return discard.settle(session, compensation.compensate(session, run.error or "resumed"))
            return discard.settle(session, runner.drive(session))  # no rollback asked: it stops again at a failure

    def abort(self, reference: str, given: dict[str, str] | None = None) -> Outcome:
        """Undo every step an unfinished, failed or rollback_failed run applied: no error when
        the undo brought everything back, RollbackError (exit 4) when a step's undo failed."""
        from aura_ops.engine import compensation, discard, resume
        from aura_ops.engine.playbook import Playbook
        from aura_ops.engine.session import Session
        from aura_ops.engine.signals import guarded

        run_id = self.journal.run(reference).id
        with self._locked(run_id, f"abort {run_id}"), guarded() as guard:
            run = self.journal.run(run_id)
            resume.require_unfinished(run, allow_failed=True)  # a failed run may still be undone
            resume.refuse_if_overtaken(self.journal, run)
            playbook = Playbook.model_validate_json(self.journal.definition(run.id))
            params = resume.params_again(run, playbook, given or {}, "abort")
            self.journal.claim(run.id)
            session = Session(self.config, self.journal, run.id, playbook, params, guard, self.hosts)
            return discard.settle(session, compensation.compensate(session, "aborted by the operator", aborted=True))

    def undo_discards_data(self, reference: str) -> list[str]:
        """The steps of a run whose undo puts a database back from a snapshot (discarding what was
        written since): what ``runs abort`` asks consent for. Read only."""
        from aura_ops.engine import compensation
        from aura_ops.engine.playbook import Playbook

        run = self.journal.run(reference)
        playbook = Playbook.model_validate_json(self.journal.definition(run.id))
        return compensation.discards_data(playbook, self.journal.steps(run.id))

    def succeeded(self, key: str) -> Outcome | None:
        """The no-op outcome when a run with ``key`` already succeeded (read only, no lock: a
        caller can skip its preflight; ``run`` checks again under the lock)."""
        from aura_ops.engine import runner
        from aura_ops.engine.outcome import Outcome

        run = runner.succeeded(self.journal, key)
        if run is None:
            return None
        return Outcome.read(
            self.journal, run.id, f"idempotency key {key!r}: run {run.id} already succeeded; nothing to do"
        )

    @contextmanager
    def _locked(self, run_id: str, command: str) -> Iterator[None]:
        from aura_ops import components, logs
        from aura_ops.hosts import local_hostname
        from aura_ops.state import lock, temporaries

        with (
            logs.bind(run_id=run_id, host=local_hostname()),
            lock.hold(self.state / "run.lock", run_id, command),
            temporaries.bound(self.config),
        ):
            temporaries.sweep(self.config, components.temporary_name_folders(self.config))  # a kill's leftovers first
            yield
