"""Unfinished runs: found by the next command on the same target, and the checks before a
``runs resume`` (forward; each step's ``check`` makes re-applying a maybe-applied step safe) or
a ``runs abort`` (compensate) takes one up again.

A killed run is found by the next invocation on the same target, which refuses new work until
the run is resumed or aborted (a backup warns and goes on).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aura_ops import logs
from aura_ops.engine.session import open_journal, state_dir
from aura_ops.errors import LockedError, UsageError
from aura_ops.hosts import local_hostname
from aura_ops.secrets import register
from aura_ops.state.journal import Journal, RunRecord, same_target
from aura_ops.state.lock import pid_alive

if TYPE_CHECKING:  # (the playbook imports jinja2 and every action: not for a look at the journal)
    from aura_ops.config import Config
    from aura_ops.engine.playbook import Playbook


def refuse_interrupted(journal: Journal, target: str) -> None:
    """LockedError naming the first unfinished run on ``target``."""
    for run in journal.unfinished(target):
        raise LockedError(describe_unfinished(run))


def refuse_if_interrupted(config: Config) -> None:
    """LockedError when a run on this configuration was interrupted and not yet resolved."""
    if (state_dir(config) / "journal.db").exists():
        journal = open_journal(config)
        try:
            refuse_interrupted(journal, str(state_dir(config)))
        finally:
            journal.close()


def warn_if_interrupted(config: Config) -> list[str]:
    """Log a warning for each unfinished run on this configuration (a backup goes on); their ids."""
    if not (state_dir(config) / "journal.db").exists():
        return []
    journal = open_journal(config)
    try:
        runs = journal.unfinished(str(state_dir(config)))
    finally:
        journal.close()
    for run in runs:
        logs.get().warning("run.unfinished", run=run.id, detail=describe_unfinished(run))
    return [run.id for run in runs]


def describe_unfinished(run: RunRecord) -> str:
    """One line: which run, whether its process is alive, and the commands that resolve it."""
    return (
        f"run {run.id} ({Path(run.playbook).stem}) is unfinished ({run.status}) and {_process_state(run)}; "
        f"resolve it first: `aura-ops runs resume {run.id}` (finish it) or `aura-ops runs abort {run.id}` (undo it)"
    )


def _process_state(run: RunRecord) -> str:
    """Whether the process that last drove ``run`` is alive, from the pid and host in the journal."""
    if not run.pid:
        return "its process is unknown"
    if run.host and run.host != local_hostname():
        return f"its process (pid {run.pid} on {run.host}) cannot be checked from this host"
    alive = pid_alive(run.pid)
    with contextlib.suppress(OSError):  # a pid the kernel has given to another program is not the run's
        alive = alive and b"aura" in Path(f"/proc/{run.pid}/cmdline").read_bytes()
    if alive:
        return f"its process (pid {run.pid} on {run.host or 'this host'}) is still alive: it may still be running"
    return f"its process (pid {run.pid} on {run.host or 'this host'}) is dead"


def require_unfinished(run: RunRecord, allow_failed: bool = False) -> None:
    """UsageError when ``run`` ended (but, with ``allow_failed``, a failed run may still be undone)."""
    if run.finished and not (allow_failed and run.status in ("failed", "rollback_failed")):
        raise UsageError(f"run {run.id} already ended {run.status}; nothing to resume or abort")


def refuse_if_overtaken(journal: Journal, run: RunRecord) -> None:
    """A run that ended (failed, rollback_failed) handed the system back: a later run on the
    same target may have changed it since, and undoing this one on top of that would undo
    more than its own work (say, restore its pre-deploy snapshot over a later deploy's
    database). UsageError naming the later runs that did anything."""
    if not run.finished:
        return  # an interrupted run blocks every later run on its target (backups aside)
    later = [
        other
        for other in journal.runs(10_000)
        if other.id > run.id and same_target(other.target, run.target) and other.status != "rolled_back"
    ]
    if later:
        names = ", ".join(f"{r.id} ({Path(r.playbook).stem}, {r.status})" for r in sorted(later, key=lambda r: r.id))
        raise UsageError(
            f"run {run.id} ended {run.status} and later runs changed the system since: {names}; undoing it "
            "now would undo on top of them. Nothing was changed (restore a snapshot, or roll back, instead)"
        )


def params_again(run: RunRecord, playbook: Playbook, given: dict[str, str], command: str) -> dict[str, Any]:
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
