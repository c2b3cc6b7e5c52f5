"""Playbook actions: a tiny protocol and an explicit registry.

An action is what a playbook step does (``uses: <name>``). Each has a pydantic ``Params`` model
for its ``with`` block and four operations: ``check`` (already applied? used on resume and by
``plan``), ``apply`` (returns outputs later steps can reference), ``verify``, and ``compensate``
(undo; must be safe to call when the step may or may not have been applied). ``describe`` says
what apply and compensate would do, masked, for ``plan``. Each operation gets the step's
``Context``: the configuration, the command's hosts, and the run's journal (what the undo needs).

One module per group of actions; ``REGISTRY`` below maps every step name to its action.
"""

from __future__ import annotations

from aura_ops.engine.actions.base import Action, Context
from aura_ops.engine.actions.checks import ChecksAction, PreflightAction
from aura_ops.engine.actions.command import CommandAction, WaitAction
from aura_ops.engine.actions.database import (
    DatabaseCloneAction,
    DatabaseCloneDropAction,
    DatabaseClonesCleanupAction,
    MigrateAction,
)
from aura_ops.engine.actions.file import FileAction
from aura_ops.engine.actions.release import (
    ReleaseMarkAction,
    ReleasePruneAction,
    ReleaseSwitchAction,
    ReleaseUploadAction,
)
from aura_ops.engine.actions.services import ServicesStartAction, ServicesStopAction
from aura_ops.engine.actions.snapshot import RestoreAction, SnapshotAction
from aura_ops.engine.actions.sql import SqlAction

__all__ = ["REGISTRY", "Action", "Context"]

REGISTRY: dict[str, Action] = {
    "command": CommandAction(),
    "sql": SqlAction(),
    "file": FileAction(),
    "wait": WaitAction(),
    "snapshot": SnapshotAction(),
    "restore": RestoreAction(),
    "release_upload": ReleaseUploadAction(),
    "release_switch": ReleaseSwitchAction(),
    "release_mark": ReleaseMarkAction(),
    "release_prune": ReleasePruneAction(),
    "services_stop": ServicesStopAction(),
    "services_start": ServicesStartAction(),
    "migrate": MigrateAction(),
    "database_clones_cleanup": DatabaseClonesCleanupAction(),
    "database_clone": DatabaseCloneAction(),
    "database_clone_drop": DatabaseCloneDropAction(),
    "checks": ChecksAction(),
    "preflight": PreflightAction(),
}
