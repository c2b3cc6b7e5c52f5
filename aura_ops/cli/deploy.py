"""deploy a release as one transaction; rollback a deploy that went live but is bad."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from aura_ops.cli.base import (
    State,
    _announce,
    _human_age,
    _refuse_if_interrupted,
    _show_outcome,
    _show_plan,
    cli,
    common,
    confirm,
    emit,
)
from aura_ops.errors import (
    EXIT_CODES_HELP,
    UsageError,
)


@cli.command(epilog=EXIT_CODES_HELP)
@click.option("--version", "version", required=True, metavar="V", help="The release version to deploy.")
@click.option(
    "--source",
    type=click.Path(path_type=Path),
    metavar="DIR|TARBALL",
    help="The release to upload: a folder or a tarball (required, except with --dry-run).",
)
@click.option("--rollback-on-fail", is_flag=True, help="Undo everything (database included) if any step fails.")
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@common
def deploy(version: str, source: Path | None, rollback_on_fail: bool, dry_run: bool) -> None:
    """Deploy a release as one transaction: snapshot, upload, stop, migrate, switch, start, checks."""
    from aura_ops import deploy as deployer
    from aura_ops.cli import announce
    from aura_ops.hosts.inventory import Inventory

    config = click.get_current_context().ensure_object(State).load()
    hosts = Inventory(config)  # one for the whole command, passed down to every step
    _announce(config, ("dry run: " if dry_run else "") + announce.deploy(config, version, source, hosts))
    if dry_run:
        steps = deployer.plan(config, version, source, hosts)
        emit({"playbook": "deploy", "steps": steps}, _show_plan)
        return
    if source is None:
        raise UsageError("--source is required (a release folder or tarball)")
    outcome, report = deployer.deploy(config, version, source.absolute(), rollback_on_fail, hosts)
    if outcome is None:  # the version is live and healthy: nothing was run
        emit({"ok": True, **report}, lambda d: click.echo(d["message"]))
        return
    data = {**outcome.as_dict(), **report}

    def human(data: dict[str, Any]) -> None:
        _show_outcome(data)
        restored = data.get("database_restore")
        if restored:
            how = (
                "swapped back its pre-migration clone"
                if restored["path"] == "clone"
                else f"restored snapshot {restored['snapshot']} (taken {restored.get('taken', 'before the deploy')})"
            )
            click.echo(f"database {restored['database']}: {how} in {restored['seconds']:.2f}s")
        if "time_to_restore_seconds" in data:
            click.echo(f"time from failure detected to the old version healthy: {data['time_to_restore_seconds']:.1f}s")

    emit(data, human)
    if outcome.error:
        raise outcome.error


@cli.command(epilog=EXIT_CODES_HELP)
@click.option("--to-release", metavar="V", help="The release to go back to (default: the newest other verified one).")
@click.option("--to-snapshot", metavar="ID", help="The snapshot whose database (and release) to go back to.")
@click.option("--keep-data", is_flag=True, help="Roll back code and services only; leave the database alone.")
@click.option("--yes", is_flag=True, help="Confirm restoring the database without asking.")
@common
def rollback(to_release: str | None, to_snapshot: str | None, keep_data: bool, yes: bool) -> None:
    """Undo a deploy that went live but is bad: release, database and services, then prove it healthy."""
    from aura_ops import deploy as deployer
    from aura_ops.cli import announce
    from aura_ops.hosts.inventory import Inventory

    config = click.get_current_context().ensure_object(State).load()
    hosts = Inventory(config)  # one for the whole command, passed down to every step
    target = deployer.rollback_plan(config, to_release, to_snapshot, keep_data, hosts)
    _announce(config, announce.rollback(config, target, hosts))
    _refuse_if_interrupted(config)
    if target["restore_data"] == "yes":
        confirm(
            f"Roll back to release {target['release']} and restore database {target['database']} from snapshot "
            f"{target['snapshot']}, taken {_human_age(target['snapshot_age_seconds'])} ago? Writes made since "
            "then are discarded (--keep-data rolls back code and services only).",
            yes,
        )
    outcome, report = deployer.rollback(config, target, hosts)

    def human(data: dict[str, Any]) -> None:
        _show_outcome(data)
        if "time_to_restore_seconds" in data:
            click.echo(f"rolled back to {target['release']} in {data['time_to_restore_seconds']:.1f}s")

    emit({**outcome.as_dict(), **report}, human)
    if outcome.error:
        raise outcome.error
