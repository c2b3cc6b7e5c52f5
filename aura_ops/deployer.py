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
    failed_at = (outcome.run.result or {}).get("failure_detected")
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
