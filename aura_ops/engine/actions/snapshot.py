"""The ``snapshot`` and ``restore`` actions: the snapshot workflows as playbook steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from aura_ops.engine.actions.base import Action, Context, _Params
from aura_ops.workflows import snapshots


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
        snapshot = snapshots.backup(ctx.config, p.components, p.tags, run_id=ctx.run_id)
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
        return snapshots.restore(
            ctx.config,
            p.snapshot,
            p.components,
            p.to_database,
            Path(p.to_path) if p.to_path else None,
            run_id=ctx.run_id,
        )
