"""``aura-ops deploy``: the shipped ``deploy`` playbook run by the engine, keyed by version.

With ``--rollback-on-fail`` any failure is undone in reverse (services back, database restored
from the snapshot this run took, release switched back) and the health checks then run against
the old version: the report says how long it took from the failure to the old version healthy.
Without it the run stops at the failure with services running and says how to undo it.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from aura_ops import components, engine, logs
from aura_ops.components import doctor, release
from aura_ops.components.postgres import PostgresComponent
from aura_ops.components.postgres import clone as pgclone
from aura_ops.config import Config
from aura_ops.engine import checks, planner, playbook
from aura_ops.errors import AuraError, ChecksFailed, CommandFailed, ConfigError, RollbackError, UsageError, first_line
from aura_ops.hosts import DEVNULL, Command, Host
from aura_ops.hosts.inventory import Inventory
from aura_ops.workflows import retention, snapshots


def _playbook() -> playbook.Playbook:
    return playbook.load("deploy")


def plan(config: Config, version: str, source: Path | None, hosts: Inventory) -> list[dict[str, Any]]:
    check_usage(config, version, source, hosts)
    return planner.plan(config, _playbook(), {"version": version, "source": str(source or "<source>")}, hosts)


def _release_or_none(config: Config, hosts: Inventory) -> release.ReleaseComponent | None:
    """The deploy's release component on its host, or None when the configuration has none."""
    name = config.only("release", config.deploy.release, "release")
    if name is None:
        return None
    return components.build_as(config, name, hosts, release.ReleaseComponent)


def _release(config: Config, hosts: Inventory) -> release.ReleaseComponent:
    component = _release_or_none(config, hosts)
    if component is None:
        raise ConfigError("a deploy needs a component of type release")
    return component


def check_usage(config: Config, version: str, source: Path | None, hosts: Inventory) -> None:
    """Every mistake a deploy can find without touching anything (an invalid version, a source
    that is missing or neither a folder nor a tarball, a component named in ``deploy.*`` that
    does not exist or has another type, a tarball that cannot be read to its end): UsageError /
    ConfigError (exit 2) before any lock, snapshot or service stop. The source is on this
    machine (``hosts.local()``)."""
    release.check_version(version)
    _release(config, hosts)
    config.only("docker", config.deploy.services, "services")
    config.only("postgres", config.deploy.database, "database")
    if source is None:
        return
    local, path = hosts.local(), str(source)
    if not local.exists(path):
        raise UsageError(f"release source {source} does not exist")
    is_dir = local.is_dir(path)
    if not (is_dir or (local.is_file(path) and source.name.endswith(release.TARBALL))):
        raise UsageError(f"release source {source} is neither a folder nor a tarball ({', '.join(release.TARBALL)})")
    if not local.access(path, os.R_OK | (os.X_OK if is_dir else 0)):
        raise UsageError(f"release source {source} is not readable")
    if not is_dir:
        _check_tarball(local, path)


def _check_tarball(host: Host, path: str) -> None:
    """UsageError when ``tar`` cannot list the tarball to its end (truncated, corrupt, not the
    format its name says): found now rather than by the upload, after the snapshot. Reads only."""
    try:
        host.run(Command(("tar", "-t", "-f", path)), stdout=DEVNULL)
    except CommandFailed as exc:
        lines = exc.stderr_tail.strip().splitlines()
        why = lines[0] if lines else f"tar exited {exc.returncode}"  # the cause; the last is "exiting now"
        raise UsageError(f"release source {path} is not a readable tarball: {why}") from None


def already_live(config: Config, version: str, hosts: Inventory) -> dict[str, Any] | None:
    """What deploying ``version`` means now (idempotency is "this version is live"):

    - it is the live release: the health checks run; a report (nothing to do), or CheckFailed
      (exit 1: live but unhealthy, go back with ``aura-ops rollback``);
    - it was live before and has been replaced since (``verified`` but not current, or a deploy
      of it succeeded and it was not rolled back since): UsageError naming ``rollback --to-release``;
    - otherwise (new, failed, rolled back): None, deploy it."""
    component = _release(config, hosts)
    live = component.current()
    if live == version:
        try:
            results = checks.run_all(config.checks, config, hosts)
        except AuraError as exc:
            raise checks.CheckFailed(
                f"release {version} is live, but its health checks fail ({first_line(exc)}); "
                "to go back to the previous release: `aura-ops rollback`"
            ) from None
        return {
            "version": version,
            "live": True,
            "checks": results,
            "exit_code": 0,
            "message": f"release {version} is live and its health checks pass; nothing to do",
        }
    state = component.states().get(version, {}).get("state")
    if state in ("rolled_back", "failed"):
        return None
    runs = engine.Engine(config, hosts).journal.by_key(f"deploy:{version}")
    succeeded = [r.id for r in runs if r.status == "succeeded"]
    if state == "verified" or succeeded:
        installed = component.is_installed(version)
        how = (
            f"`aura-ops rollback --to-release {version}`"
            if installed
            else f"it has been pruned since, so `aura-ops rollback --to-release {version}` cannot reach it: "
            "deploy it under a new version"
        )
        raise UsageError(
            f"release {version} was live before and has been replaced since (live now: {live or 'none'}); "
            f"going back is a rollback, with its database semantics: {how}"
        )
    return None


class PreflightFailed(ChecksFailed):
    """A preflight check failed: nothing was changed, no run was started."""


def preflight(config: Config, hosts: Inventory) -> list[dict[str, Any]]:
    """Before the run lock is taken: ``doctor``'s checks (tools, versions, reachability, disk
    for the snapshot) and whether the database can be cloned for a fast rollback (privileges,
    disk on its server). PreflightFailed naming every failed check; a clone that cannot be made
    fails it only with ``deploy.fast_rollback: required``."""
    results, code = doctor.run(config, hosts)
    database = config.only("postgres", config.deploy.database, "database")
    if database and config.deploy.fast_rollback != "off" and not code:
        can = pgclone.feasibility(components.build_as(config, database, hosts, PostgresComponent))
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


def deploy(
    config: Config, version: str, source: Path, rollback: bool, hosts: Inventory
) -> tuple[engine.Outcome | None, dict[str, Any]]:
    """Deploy ``version`` from ``source`` (components on their hosts from ``hosts``, shared with
    the run); (None, report) when there is nothing to do (it is live)."""
    check_usage(config, version, source, hosts)
    engine.refuse_if_interrupted(config)
    done = already_live(config, version, hosts)
    if done is not None:
        return None, done
    runner = engine.Engine(config, hosts)
    report: dict[str, Any] = {"preflight": preflight(config, hosts)}
    outcome = runner.run(
        _playbook(),
        {"version": version, "source": str(source)},
        key=f"deploy:{version}",
        trigger="deploy",
        rollback=rollback,
        succeeded_is_done=False,  # already_live decided: a succeeded run of a rolled-back version is history
    )
    if outcome.run.status == "rolled_back":
        try:
            report.update(_verify_old_version(config, outcome, hosts))
        except RollbackError as unhealthy:  # undone, but the old version fails its checks: exit 4
            outcome = outcome.failed(unhealthy)
    if outcome.run.status in ("succeeded", "rolled_back"):  # recorded finished: its snapshots judged as such
        pruned = retention.auto_prune(config, "deploy")  # retention.auto; a failure is a warning only
        if pruned is not None:
            report["auto_prune"] = pruned
    return outcome, report


def _verify_old_version(config: Config, outcome: engine.Outcome, hosts: Inventory) -> dict[str, Any]:
    """After a rollback: the old version must pass the health checks again; RollbackError
    when it does not. How the database was put back is what the migrate step's undo journaled."""
    failed_at = (outcome.run.result or {}).get("failure_detected")
    database = next((s.undo for s in outcome.steps if s.action == "migrate" and s.undo), None)
    component = _release_or_none(config, hosts)
    if component is not None and component.current() is None:
        return {"old_version_checks": [], "note": "no release was live before this deploy: nothing to check"}
    try:
        results = checks.run_all(config.checks, config, hosts)
    except AuraError as exc:
        logs.get().error("deploy.rollback_unhealthy", reason=str(exc))
        raise RollbackError(f"rolled back, but the old version is not healthy: {exc}") from None
    report: dict[str, Any] = {"old_version_checks": results}
    if database:
        report["database_restore"] = database
    if failed_at:
        detected = dt.datetime.fromisoformat(failed_at)
        report["time_to_restore_seconds"] = round((dt.datetime.now(dt.UTC) - detected).total_seconds(), 2)
    logs.get().info("deploy.rolled_back_healthy", seconds=report.get("time_to_restore_seconds"))
    return report


def rollback_plan(
    config: Config, to_release: str | None, to_snapshot: str | None, keep_data: bool, hosts: Inventory
) -> dict[str, Any]:
    """Resolve where a rollback goes: the release, and (unless data is kept) the snapshot whose
    database goes back with it. UsageError when there is nowhere to go."""
    component = _release_or_none(config, hosts)
    if component is None:
        raise UsageError("rollback needs a component of type release")
    name = component.name
    if to_release is not None:
        release.check_version(to_release)
    repo = snapshots.repository(config)
    snapshot = repo.get(to_snapshot) if to_snapshot is not None else None
    recorded = snapshot.manifest["components"].get(name, {}).get("current") if snapshot else None
    if snapshot is not None and not to_release and not recorded:
        raise UsageError(f"snapshot {snapshot.id} records no release of {name}; name the release with --to-release V")
    target = to_release or recorded or component.rollback_target()
    if target is None:
        raise UsageError("no release to roll back to: no other verified release (use --to-release)")
    if target == component.current():
        raise UsageError(f"release {target} is already current")
    if not component.is_installed(target):
        raise UsageError(
            f"release {target} is not installed in {component.releases} "
            f"(installed: {', '.join(component.installed()) or 'none'})"
        )
    database = config.only("postgres", config.deploy.database, "database")
    if not keep_data and database and snapshot is not None and database not in snapshot.manifest["components"]:
        raise UsageError(
            f"snapshot {snapshot.id} holds no {database} (it has: {', '.join(snapshot.manifest['components'])}); "
            "choose another --to-snapshot, or --keep-data"
        )
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


def rollback(config: Config, params: dict[str, Any], hosts: Inventory) -> tuple[engine.Outcome, dict[str, Any]]:
    book = playbook.load("rollback")
    given = {k: str(params[k]) for k in ("release", "snapshot", "database", "restore_data")}
    outcome = engine.Engine(config, hosts).run(book, given, trigger="rollback")
    report: dict[str, Any] = {"target": params}
    if outcome.run.status == "succeeded":
        started = dt.datetime.fromisoformat(outcome.run.created)
        report["time_to_restore_seconds"] = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 2)
    return outcome, report
