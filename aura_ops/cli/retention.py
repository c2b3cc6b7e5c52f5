"""snapshots prune / pin / unpin: retention, registered on the ``snapshots`` group."""

from __future__ import annotations

from typing import Any

import click

from aura_ops.cli.base import State, _announce, _human_size, common, emit
from aura_ops.cli.snapshots import snapshots
from aura_ops.errors import EXIT_CODES_HELP

NO_POLICY = "no retention policy is configured (`retention:` in the config): every snapshot is kept, nothing deleted"


@snapshots.command("prune", epilog=EXIT_CODES_HELP)
@click.option("--dry-run", is_flag=True, help="List every snapshot with keep or delete and why; delete nothing.")
@common
def snapshots_prune(dry_run: bool) -> None:
    """Delete the snapshots the retention policy no longer keeps. Never deleted, whatever the
    policy: pinned snapshots, the newest verified one of each component, what a rollback or an
    unfinished run still needs, damaged ones. Without a policy nothing is deleted (exit 0)."""
    from aura_ops.components import snapshotting
    from aura_ops.workflows import retention

    config = click.get_current_context().ensure_object(State).load()
    repository = snapshotting.repository(config)
    configured = config.retention.retention().configured
    if not dry_run:
        _announce(config, f"pruning snapshots in repository {config.repository.path}")
    journal = retention.open_journal_if_any(config)
    try:
        if configured or dry_run:
            result = retention.prune(config, repository, journal, dry_run)
        else:  # nothing to delete: the plan (every snapshot kept), in the same shape as a prune's
            result = retention.prune(config, repository, journal, dry_run=True) | {"dry_run": False}
    finally:
        if journal is not None:
            journal.close()
    emit(result, _show)


def _show(data: dict[str, Any]) -> None:
    if not data["configured"]:
        click.echo(NO_POLICY)
    for line in data.get("policy", []):
        click.echo(f"policy: {line}")
    for snapshot_id in data.get("missing_protected", []):
        click.echo(f"warning: snapshot {snapshot_id} is still needed (a rollback or a run) but is gone already")
    if data["dry_run"]:
        _show_rows(data["snapshots"])
        doomed = [r for r in data["snapshots"] if r["decision"] == "delete"]
        click.echo(f"would delete {len(doomed)} of {len(data['snapshots'])} snapshots (dry run: nothing deleted)")
        return
    if not data["configured"]:
        return
    for snapshot_id in data["deleted"]:
        click.echo(f"deleted {snapshot_id}")
    kept = len(data["snapshots"]) - len(data["deleted"])
    click.echo(f"deleted {len(data['deleted'])} snapshots, freed {_human_size(data['freed'])}; kept {kept}")


def _show_rows(rows: list[dict[str, Any]]) -> None:
    if not rows:
        click.echo("no snapshots yet")
        return
    width = max(len(", ".join(r["components"]) or "-") for r in rows)
    for row in rows:
        components = ", ".join(row["components"]) or "-"
        reasons = "; ".join(row["reasons"]) or "no rule keeps it"
        click.echo(f"{row['decision']:<6}  {row['id']}  {row['time'][:19]}Z  {components:<{width}}  {reasons}")


@snapshots.command("pin", epilog=EXIT_CODES_HELP)
@click.argument("snapshot_id", metavar="ID")
@common
def snapshots_pin(snapshot_id: str) -> None:
    """Pin a snapshot (ID: full, unique prefix or 'latest'): no prune deletes it."""
    _pin(snapshot_id, True)


@snapshots.command("unpin", epilog=EXIT_CODES_HELP)
@click.argument("snapshot_id", metavar="ID")
@common
def snapshots_unpin(snapshot_id: str) -> None:
    """Unpin a snapshot: the retention policy judges it again."""
    _pin(snapshot_id, False)


def _pin(reference: str, pinned: bool) -> None:
    from aura_ops.workflows import retention

    config = click.get_current_context().ensure_object(State).load()
    _announce(
        config, f"{'pinning' if pinned else 'unpinning'} snapshot {reference} in repository {config.repository.path}"
    )
    snapshot_id, changed = retention.pin(config, reference, pinned)
    word = "pinned" if pinned else "unpinned"

    def human(data: dict[str, Any]) -> None:
        unchanged = " (it already was)" if pinned else " (it was not pinned)"
        click.echo(f"snapshot {data['id']} {word}" + ("" if data["changed"] else unchanged))

    emit({"id": snapshot_id, "pinned": pinned, "changed": changed}, human)
