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


class PreflightFailed(AuraError):
    """A preflight check failed: nothing was changed, no run was started."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def preflight(config: Config) -> list[dict[str, Any]]:
    """Before the run lock is taken: ``doctor``'s checks (tools, versions, reachability, disk
    for the snapshot) and whether the database can be cloned for a fast rollback (privileges,
    disk on its server). PreflightFailed naming every failed check; a clone that cannot be made
    fails it only with ``deploy.fast_rollback: required``."""
    from aura_ops import doctor
    from aura_ops.components import pgclone
    from aura_ops.config import PostgresConfig

    results, code = doctor.run(config)
    database = config.only("postgres", config.deploy.database, "database")
    if database and config.deploy.fast_rollback != "off" and not code:
        cfg = config.component(database)
        assert isinstance(cfg, PostgresConfig)
        can = pgclone.feasibility(database, cfg)
        required = config.deploy.fast_rollback == "required"
        results.append(
            {
                "check": f"{database}: fast rollback clone",
                "ok": can["ok"] or not required,
                "detail": can["reason"]
                + ("; a rollback would restore the snapshot" if not (can["ok"] or required) else ""),
                "exit_code": 1,
            }
        )
        if not can["ok"]:
            (logs.get().error if required else logs.get().warning)("deploy.no_fast_rollback", reason=can["reason"])
            code = code or (1 if required else 0)
    if code:
        failed = [f"{c['check']}: {c['detail']}" for c in results if not c["ok"]]
        raise PreflightFailed("preflight failed, nothing was changed: " + "; ".join(failed), code)
    return results


def deploy(config: Config, version: str, source: Path, rollback: bool) -> tuple[engine.Outcome, dict[str, Any]]:
    runner = engine.Engine(config)
    key = f"deploy:{version}"
    done = runner.succeeded(key)
    if done is not None:
        return done, {}
    report: dict[str, Any] = {"preflight": preflight(config)}
    outcome = runner.run(
        _playbook(),
        {"version": version, "source": str(source)},
        key=key,
        trigger="deploy",
        rollback=rollback,
    )
    if outcome.run.status == "rolled_back":
        report.update(_verify_old_version(config, outcome))
    return outcome, report


def _verify_old_version(config: Config, outcome: engine.Outcome) -> dict[str, Any]:
    """After a rollback: the old version must pass the health checks again."""
    import json

    from aura_ops.actions import DATABASE_ROLLBACK
    from aura_ops.components import release
    from aura_ops.config import ReleaseConfig

    failed_at = (outcome.run.result or {}).get("failure_detected")
    how = engine.state_dir(config) / "runs" / outcome.run.id / DATABASE_ROLLBACK
    database = json.loads(how.read_text()) if how.exists() else None
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
    if database:
        report["database_restore"] = database
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
