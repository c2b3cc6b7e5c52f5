"""``aura-ops deploy``: the shipped ``deploy`` playbook run by the engine, keyed by version.

With ``--rollback-on-fail`` any failure is undone in reverse (services back, database restored
from the snapshot this run took, release switched back) and the health checks then run against
the old version: the report says how long it took from the failure to the old version healthy.
Without it the run stops at the failure with services running and says how to undo it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from aura_ops import checks, engine, logs, planner, playbook
from aura_ops.config import Config
from aura_ops.errors import EXIT_ROLLBACK, AuraError


def _playbook() -> playbook.Playbook:
    return playbook.load("deploy")


def plan(config: Config, version: str, source: Path | None) -> list[dict[str, Any]]:
    return planner.plan(config, _playbook(), {"version": version, "source": str(source or "<source>")})


def deploy(config: Config, version: str, source: Path, rollback: bool) -> tuple[engine.Outcome, dict[str, Any]]:
    runner = engine.Engine(config)
    outcome = runner.run(
        _playbook(),
        {"version": version, "source": str(source)},
        key=f"deploy:{version}",
        trigger="deploy",
        rollback=rollback,
    )
    report: dict[str, Any] = {}
    if outcome.run.status == "rolled_back":
        report = _verify_old_version(config, outcome)
    return outcome, report


def _verify_old_version(config: Config, outcome: engine.Outcome) -> dict[str, Any]:
    """After a rollback: the old version must pass the health checks again."""
    from aura_ops.components import release
    from aura_ops.config import ReleaseConfig

    failed_at = (outcome.run.result or {}).get("failure_detected")
    name = config.only("release", config.deploy.release, "release")
    cfg = config.component(name) if name else None
    if isinstance(cfg, ReleaseConfig) and release.current(cfg) is None:
        return {"old_version_checks": [], "note": "no release was live before this deploy: nothing to check"}
    try:
        results = checks.run_all(config.checks, config)
    except AuraError as exc:
        logs.get().error("deploy.rollback_unhealthy", reason=str(exc))
        return {"exit_code": EXIT_ROLLBACK, "message": f"rolled back, but the old version is not healthy: {exc}"}
    report: dict[str, Any] = {"old_version_checks": results}
    if failed_at:
        detected = dt.datetime.fromisoformat(failed_at)
        report["time_to_restore_seconds"] = round((dt.datetime.now(dt.UTC) - detected).total_seconds(), 2)
    logs.get().info("deploy.rolled_back_healthy", seconds=report.get("time_to_restore_seconds"))
    return report


def rollback_plan(config: Config, to_release: str | None, to_snapshot: str | None, keep_data: bool) -> dict[str, Any]:
    """Resolve where a rollback goes: the release, and (unless data is kept) the snapshot whose
    database goes back with it. UsageError when there is nowhere to go."""
    from aura_ops import snapshots
    from aura_ops.components import release
    from aura_ops.config import ReleaseConfig
    from aura_ops.errors import UsageError

    name = config.only("release", config.deploy.release, "release")
    if name is None:
        raise UsageError("rollback needs a component of type release")
    cfg = config.component(name)
    assert isinstance(cfg, ReleaseConfig)
    repo = snapshots.repository(config)
    snapshot = repo.get(to_snapshot) if to_snapshot else None
    target = to_release or (snapshot.manifest["components"].get(name, {}).get("current") if snapshot else None)
    target = target or release.rollback_target(cfg)
    if target is None:
        raise UsageError("no release to roll back to: no other verified release (use --to-release)")
    if target == release.current(cfg):
        raise UsageError(f"release {target} is already current")
    database = config.only("postgres", config.deploy.database, "database")
    if not keep_data and database and snapshot is None:
        # the snapshot a deploy took while `target` was current: the data that went with it
        candidates = [
            s
            for s in repo.snapshots()
            if s.manifest["components"].get(name, {}).get("current") == target and database in s.manifest["components"]
        ]
        if not candidates:
            raise UsageError(
                f"no snapshot holds {database} from when {target} was current; use --to-snapshot ID or --keep-data"
            )
        snapshot = candidates[-1]
    restore_data = bool(database) and not keep_data
    return {
        "release": target,
        "snapshot": snapshot.id if snapshot and restore_data else "",
        "database": database or "",
        "restore_data": "yes" if restore_data else "no",
        "snapshot_age_seconds": snapshots.age_seconds(snapshot) if snapshot and restore_data else None,
    }


def rollback(config: Config, params: dict[str, Any]) -> tuple[engine.Outcome, dict[str, Any]]:
    book = playbook.load("rollback")
    given = {k: str(params[k]) for k in ("release", "snapshot", "database", "restore_data")}
    outcome = engine.Engine(config).run(book, given, trigger="rollback")
    report: dict[str, Any] = {"target": params}
    if outcome.run.status == "succeeded":
        started = dt.datetime.fromisoformat(outcome.run.created)
        report["time_to_restore_seconds"] = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 2)
    return outcome, report
