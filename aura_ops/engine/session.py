"""One process driving one run: what running forward and compensating both work with.

The journal is the single source of the run's state. A ``Session`` holds what does not change
while the process drives the run (configuration, journal, run id, playbook, parameters, signal
guard) and nothing else: each step's status and outputs, the run's status, error, result and
rollback choice are read from the journal whenever they are needed, so a resumed run sees
exactly what the run that was killed had committed. The one part of the run not in the journal is its secret
parameters (never stored: ``runs resume`` / ``runs abort`` are given them again).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aura_ops import faults
from aura_ops.errors import StateError, first_line
from aura_ops.state.journal import Journal

# Imported where used: ``state_dir`` and ``open_journal`` serve the commands that only look for
# an interrupted run (a backup, a restore: ``resume.refuse_if_interrupted``), which must not pay
# for the actions (every component), the playbook templates (jinja2) and the runner.
if TYPE_CHECKING:
    from aura_ops.config import Config
    from aura_ops.engine.actions import Action, Context
    from aura_ops.engine.outcome import Outcome
    from aura_ops.engine.playbook import Playbook, Step
    from aura_ops.engine.signals import Guard
    from aura_ops.errors import AuraError
    from aura_ops.hosts.inventory import Inventory
    from aura_ops.state.journal import StepRecord

# a step in these states is done: its outputs are there for later steps' templates
REFERABLE = ("applied", "already_applied", "compensating", "compensated")


def state_dir(config: Config) -> Path:
    """The folder of the journal, the run lock and each run's work folder."""
    return config.state.path


def open_journal(config: Config) -> Journal:
    """The journal in the configuration's state folder; StateError when it cannot be opened."""
    path = state_dir(config) / "journal.db"
    try:
        return Journal(path)
    except (OSError, sqlite3.Error) as exc:
        raise StateError(f"the journal {path} cannot be opened: {first_line(exc)}") from None


def fault(step: str, point: str) -> None:
    """A test hook: ``AURA_FAULT`` exits or signals at ``<step>:<point>``, ``AURA_PAUSE`` stops there."""
    faults.point(f"{step}:{point}")


def params_of(action: Action, raw: dict[str, Any], context: dict[str, Any]) -> Any:
    """A step's ``with`` block rendered against ``context`` and validated by its action."""
    from aura_ops.engine.playbook import render

    return action.Params.model_validate(render(raw, context))


@dataclass(frozen=True)
class Session:
    config: Config
    journal: Journal
    run_id: str
    playbook: Playbook
    params: dict[str, Any]  # the journal's, plus the secret ones given to this process
    guard: Guard
    hosts: Inventory  # the command's hosts, shared by every step

    def records(self) -> list[StepRecord]:
        return self.journal.steps(self.run_id)

    def context(self, records: list[StepRecord] | None = None) -> dict[str, Any]:
        """The template context, from the journal: the parameters, the run id and each done
        step's outputs (a step that failed with ``on_failure: continue`` has none)."""
        outputs = {}
        for record in self.records() if records is None else records:
            if record.status in REFERABLE:
                outputs[record.name] = record.outputs
            elif record.status == "failed" and self.playbook.steps[record.index].on_failure == "continue":
                outputs[record.name] = {}
        return {"params": self.params, "steps": outputs, "run_id": self.run_id}

    def action_context(self, step: Step) -> Context:
        from aura_ops.engine.actions import Context

        work_dir = state_dir(self.config) / "runs" / self.run_id
        return Context(self.config, self.run_id, step.name, work_dir, step.timeout, self.hosts, self.journal)

    def ended(self, result: str | AuraError) -> Outcome:
        from aura_ops.engine.outcome import Outcome

        return Outcome.read(self.journal, self.run_id, result)
