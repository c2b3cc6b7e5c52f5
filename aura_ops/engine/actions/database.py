"""The deploy's database actions: ``migrate`` (undone by swapping back the fast-rollback clone or
restoring a snapshot), ``database_clones_cleanup``, ``database_clone`` and ``database_clone_drop``."""

from __future__ import annotations

import shlex
import time
from typing import Any

from aura_ops import logs
from aura_ops.components import build_as, snapshotting
from aura_ops.components.postgres import PostgresComponent
from aura_ops.components.postgres import clone as pgclone
from aura_ops.engine.actions.base import Action, Context, NoParams, _Params
from aura_ops.engine.actions.release import _release
from aura_ops.engine.actions.snapshot import restore_snapshot, take_snapshot
from aura_ops.hosts import Command
from aura_ops.secrets import mask


def _postgres(ctx: Context, name: str) -> PostgresComponent:
    """The configured postgres component ``name`` on its host (from the run's inventory)."""
    return build_as(ctx.config, name, ctx.hosts, PostgresComponent)


class MigrateParams(_Params):
    snapshot: str
    version: str


class MigrateAction(Action):
    """Run ``deploy.migrate`` (argv) in the new release with the database's credentials in its
    environment; compensation restores the database in place from the run's snapshot."""

    Params = MigrateParams
    honours_timeout = True
    undo_after_failure = True  # a migration can fail half-way; restoring the snapshot is safe

    def _database(self, ctx: Context) -> str | None:
        return ctx.config.only("postgres", ctx.config.deploy.database, "database")

    def describe(self, p: MigrateParams, ctx: Context) -> tuple[str, str]:
        argv = ctx.config.deploy.migrate
        return (
            mask(shlex.join(argv)) if argv else "nothing (no deploy.migrate)",
            f"swap back {self._database(ctx) or 'no database'}'s clone, or restore it from snapshot {p.snapshot}",
        )

    def apply(self, p: MigrateParams, ctx: Context) -> dict[str, Any]:
        argv = ctx.config.deploy.migrate
        if not argv:
            return {"migrated": False}
        env: dict[str, str] = {}
        database = self._database(ctx)
        if database:
            env = _postgres(ctx, database).connection().env()
        component = _release(ctx)  # the migration runs in the new release, on its host
        result = component.host.run(Command(tuple(argv), env, component.release_path(p.version)), timeout=ctx.timeout)
        return {"migrated": True, "stdout": mask(result.text)[-2000:].strip()}

    def compensate(self, p: MigrateParams, ctx: Context, outputs: dict[str, Any]) -> None:
        database = self._database(ctx)
        if not database:
            return
        started = time.monotonic()
        # fast path: the clone this run took after stopping the services, swapped back in
        fast = ctx.config.deploy.fast_rollback != "off"
        done = pgclone.swap_back(_postgres(ctx, database), ctx.run_id) if fast else None
        if done is None:
            # the deploy's playbook passes the snapshot its clone step took after the stop, when it
            # could make no clone; else (a clone that is gone) the snapshot taken before the stop
            snapshot = snapshotting.repository(ctx.config).get(p.snapshot)
            taken = AFTER_STOP if AFTER_STOP_TAG in snapshot.manifest.get("tags", []) else BEFORE_STOP
            logs.get().info("deploy.database_from_snapshot", snapshot=snapshot.id, taken=taken)
            restore_snapshot(ctx, snapshot.id, [database])
            done = {"path": "snapshot", "snapshot": snapshot.id, "taken": taken, "database": database}
        done["seconds"] = round(time.monotonic() - started, 3)
        ctx.record_undo(done)  # the deploy's report reads it from the journal (``database_restore``)


AFTER_STOP_TAG = "after-stop"  # a database snapshot taken by the clone step, services stopped
AFTER_STOP = "after the services stopped"
BEFORE_STOP = "before the services stopped"


class DatabaseCloneAction(Action):
    """Runs once the services are stopped and makes the copy that undoing ``migrate`` puts
    back: a clone of the deploy's database on its server, swapped back in seconds
    (``deploy.fast_rollback`` auto / required / off); when no clone is made (``off``, or in
    ``auto`` a clone that cannot be made, a warning), a database snapshot taken now, so that
    it holds every write the services accepted before they stopped (outputs ``snapshot_id``)."""

    identifiers = frozenset({"clone", "snapshot_id"})

    Params = NoParams

    def _snapshot_now(self, ctx: Context, reason: str) -> dict[str, Any]:
        name = ctx.config.only("postgres", ctx.config.deploy.database, "database")
        if name is None:
            return {"clone": ""}
        logs.get().info("deploy.database_snapshot_after_stop", reason=reason)
        snapshot = take_snapshot(ctx, [name], [AFTER_STOP_TAG, "pre-migrate"])
        return {"clone": "", "reason": reason, "snapshot_id": snapshot.id}

    def _database(self, ctx: Context) -> Any:
        name = ctx.config.only("postgres", ctx.config.deploy.database, "database")
        if name is None or ctx.config.deploy.fast_rollback == "off":
            return None
        return _postgres(ctx, name)

    def describe(self, p: NoParams, ctx: Context) -> tuple[str, str]:
        found = self._database(ctx)
        if found is None:
            name = ctx.config.only("postgres", ctx.config.deploy.database, "database")
            if name is None:
                return "nothing (no database)", "nothing"
            return f"snapshot {name} now that the services are stopped (deploy.fast_rollback: off)", "nothing"
        return (
            f"clone {found.name} on its server for a fast rollback (else snapshot it, services stopped)",
            "drop the clone",
        )

    def can_check(self, p: NoParams) -> bool:
        return True

    def check(self, p: NoParams, ctx: Context) -> bool:
        found = self._database(ctx)
        return found is not None and pgclone.exists(found, ctx.run_id)

    def apply(self, p: NoParams, ctx: Context) -> dict[str, Any]:
        found = self._database(ctx)
        if found is None:
            return self._snapshot_now(ctx, "deploy.fast_rollback: off")
        name = found.name
        required = ctx.config.deploy.fast_rollback == "required"
        can = pgclone.feasibility(found)
        try:
            if not can["ok"]:
                raise pgclone.CloneError(f"cannot clone {name}: {can['reason']}")
            return pgclone.create(found, ctx.run_id, ctx.config.deploy.fast_rollback_wait)
        except pgclone.CloneError as exc:
            if required:
                raise
            logs.get().warning(
                "deploy.no_fast_rollback", reason=str(exc), fallback="restore a snapshot taken after the stop"
            )
            return self._snapshot_now(ctx, str(exc))

    def compensate(self, p: NoParams, ctx: Context, outputs: dict[str, Any]) -> None:
        found = self._database(ctx)
        if found is not None:
            pgclone.drop(found, ctx.run_id)


class DatabaseClonesCleanupAction(Action):
    """Placed before the services stop. Apply: drop clones left by earlier runs (a run that
    failed without a rollback keeps its clone for ``runs abort`` until then). Compensate: drop
    the database a fast rollback replaced, which runs after the services are started again:
    dropping grows with the database's size, the rename that rolled it back does not."""

    Params = NoParams

    def _database(self, ctx: Context) -> Any:
        name = ctx.config.only("postgres", ctx.config.deploy.database, "database")
        if name is None:
            return None
        return _postgres(ctx, name)

    def describe(self, p: NoParams, ctx: Context) -> tuple[str, str]:
        if self._database(ctx) is None:
            return "nothing (no database)", "nothing"
        return "drop fast-rollback clones left by earlier runs", "drop the database a fast rollback replaced"

    def apply(self, p: NoParams, ctx: Context) -> dict[str, Any]:
        found = self._database(ctx)
        return {"dropped": pgclone.drop_stale(found, keep={ctx.run_id}) if found else []}

    def compensate(self, p: NoParams, ctx: Context, outputs: dict[str, Any]) -> None:
        found = self._database(ctx)
        if found is not None:
            pgclone.drop_replaced(found, ctx.run_id)


class DatabaseCloneDropAction(DatabaseCloneAction):
    """Drop this run's clone once the deploy is verified; a later failure in the run restores
    from the snapshot instead."""

    def describe(self, p: NoParams, ctx: Context) -> tuple[str, str]:
        found = self._database(ctx)
        return ("drop the fast-rollback clone" if found else "nothing"), "nothing (a rollback uses the snapshot)"

    def can_check(self, p: NoParams) -> bool:
        return False

    def check(self, p: NoParams, ctx: Context) -> bool:
        return False  # dropping is idempotent: always "would apply"

    def apply(self, p: NoParams, ctx: Context) -> dict[str, Any]:
        found = self._database(ctx)
        return {"dropped": pgclone.drop(found, ctx.run_id) if found else False}

    def compensate(self, p: NoParams, ctx: Context, outputs: dict[str, Any]) -> None:
        return None
