"""snapshots stats: the repository's space (totals per component, what a prune would free, the
disk's free space and the reserve)."""

from __future__ import annotations

from typing import Any

import click

from aura_ops.cli.base import State, _human_size, _table, common, emit
from aura_ops.cli.snapshots import snapshots
from aura_ops.errors import EXIT_CODES_HELP


@snapshots.command("stats", epilog=EXIT_CODES_HELP)
@common
def snapshots_stats() -> None:
    """Show the space snapshots take per component (own: what deleting them frees; on disk: each
    file counted once), what a prune would free, and the disk's free space."""
    from aura_ops.workflows import snapshots as engine
    from aura_ops.workflows import space

    config = click.get_current_context().ensure_object(State).load()
    repo = engine.repository(config)
    loaded = repo.all_snapshots()  # listed and read once: for the totals and for the prune's plan
    emit(space.stats(config, engine.listing(config, repo=repo, loaded=loaded, remember=True), repo, loaded), _show)


def _show(data: dict[str, Any]) -> None:
    click.echo(
        f"repository {data['repository']}: {data['snapshots']} snapshot(s), {_human_size(data['on_disk'])} on disk"
    )
    if data["components"]:
        _table(
            ["component", "type", "snapshots", "own", "shared", "on disk"],
            [
                [
                    name,
                    row["type"],
                    row["snapshots"],
                    _human_size(row["own"]),
                    _human_size(row["shared"]),
                    _human_size(row["on_disk"]),
                ]
                for name, row in data["components"].items()
            ],
        )
    click.echo(f"prune: {_prune_line(data['prune'])}")
    capacity = f" of {_human_size(data['capacity'])}" if data["capacity"] else ""
    reserve = data["reserve"]
    click.echo(
        f"disk: {_human_size(data['free'])} free{capacity}; reserve {reserve['setting']}"
        f" ({_human_size(reserve['bytes'])}) kept free for the next snapshot"
    )


def _prune_line(prune: dict[str, Any]) -> str:
    if not prune["configured"]:
        return "no retention configured"
    if prune.get("error"):
        return f"unknown ({prune['error']})"
    count = len(prune["snapshots"])
    if not count:
        return "would delete nothing"
    return f"would delete {count} snapshot{'s' if count > 1 else ''}, freeing {_human_size(prune['bytes'])}"
