"""The ``snapshot`` and ``restore`` actions: ``components.snapshotting`` as playbook steps, under
the repository lock (the engine already holds the run lock, handles signals and has swept what
killed processes left)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from pydantic import Field

from aura_ops.components import snapshotting
from aura_ops.engine.actions.base import Action, Context, _Params
from aura_ops.hosts import local_hostname
from aura_ops.repository import Snapshot, journals, space


class SnapshotParams(_Params):
    components: list[str] | None = None
    tags: list[str] = Field(default_factory=list)


class SnapshotAction(Action):
    """Take a snapshot (the snapshot engine); it is kept on compensation: a durable record."""

    identifiers = frozenset({"snapshot_id"})

    Params = SnapshotParams

    def describe(self, p: SnapshotParams, ctx: Context) -> tuple[str, str]:
        what = ", ".join(p.components or list(ctx.config.components))
        return f"snapshot {what}", "nothing (the snapshot is kept)"

    def apply(self, p: SnapshotParams, ctx: Context) -> dict[str, Any]:
        snapshot = take_snapshot(ctx, p.components, p.tags)
        return {"snapshot_id": snapshot.id, "size": snapshot.manifest.get("size", 0)}


class RestoreParams(_Params):
    snapshot: str
    components: list[str] | None = None
    to_database: str | None = None
    to_path: str | None = None


class RestoreAction(Action):
    """Restore a snapshot. It cannot be undone by itself: take a snapshot step before it."""

    Params = RestoreParams

    def describe(self, p: RestoreParams, ctx: Context) -> tuple[str, str]:
        return f"restore snapshot {p.snapshot}", "nothing (take a snapshot step before it)"

    def apply(self, p: RestoreParams, ctx: Context) -> dict[str, Any]:
        return restore_snapshot(ctx, p.snapshot, p.components, p.to_database, Path(p.to_path) if p.to_path else None)


def take_snapshot(ctx: Context, components: list[str] | None, tags: list[str]) -> Snapshot:
    """A new sealed snapshot of ``components`` (None: all), taken under the repository lock."""
    chosen = snapshotting.build(ctx.config, components, ctx.hosts)
    repo = snapshotting.repository(ctx.config)
    with repo.locked(ctx.run_id, "backup"):
        with contextlib.suppress(OSError):  # (the run's start recorded it, unless it made the repository)
            journals.remember(repo, ctx.config.state.path, local_hostname())
        return snapshotting.take(
            repo, chosen, tags, guard=space.Guard(ctx.config.repository.reserve_setting(), _advice)
        )


def _advice() -> str:
    """What would make room, as a run's step can say it (an action uses no workflow: the
    retention plan is the prune command's)."""
    return "`aura-ops snapshots prune --dry-run` shows what a prune would free"


def restore_snapshot(
    ctx: Context,
    reference: str,
    components: list[str] | None = None,
    to_database: str | None = None,
    to_path: Path | None = None,
) -> dict[str, Any]:
    """Restore ``components`` (None: all) of the snapshot ``reference`` under the repository
    lock (no consent asked: a playbook step is the consent); the restore workflow's report."""
    repo = snapshotting.repository(ctx.config)
    snapshot = repo.get(reference)
    requests = snapshotting.plan_restore(
        ctx.config, snapshot, ctx.hosts, components, to_database, to_path, run_id=ctx.run_id
    )
    report: dict[str, Any] = {"snapshot": snapshot.id, "dry_run": False, "components": {}}
    with repo.locked(ctx.run_id, "restore"):
        report["components"] = snapshotting.restore(snapshot, requests)
    return report
