"""backup, snapshots list/show/verify/delete, restore."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from aura_ops.cli.base import (
    State,
    _announce,
    _human_age,
    _human_size,
    _refuse_if_interrupted,
    _table,
    cli,
    common,
    confirm,
    emit,
)
from aura_ops.errors import (
    EXIT_CODES_HELP,
    UsageError,
)
from aura_ops.secrets import mask

# ---------------------------------------------------------------- backup


@cli.command(epilog=EXIT_CODES_HELP)
@click.option(
    "--component",
    "components",
    multiple=True,
    metavar="NAME",
    help="Snapshot only this component (repeatable). Default: all.",
)
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Tag the snapshot (repeatable).")
@common
def backup(components: tuple[str, ...], tags: tuple[str, ...]) -> None:
    """Snapshot every configured component into the repository, verify, seal."""
    from aura_ops import engine
    from aura_ops.cli import announce
    from aura_ops.hosts.inventory import Inventory
    from aura_ops.workflows import snapshots, space

    config = click.get_current_context().ensure_object(State).load()
    hosts = Inventory(config)
    names = list(components) or list(config.components)
    for name in names:
        config.component(name)  # an unknown name is a usage error before anything is announced
    _announce(config, announce.backup(config, names, hosts))
    engine.warn_if_interrupted(config)  # an unrelated interrupted run does not block a backup
    guard = space.guard(config, snapshots.repository(config))  # the reserve; what prune would free
    snapshot = snapshots.backup(config, list(components) or None, list(tags), hosts=hosts, guard=guard)
    pruned = None
    if config.retention.auto:  # (the retention workflow is imported only for it, after the backup)
        from aura_ops.workflows import retention

        pruned = retention.auto_prune(config, "backup")  # a failure there is a warning only

    def human(data: dict[str, Any]) -> None:
        click.echo(
            f"snapshot {data['id']} sealed: {', '.join(data['components'])}, "
            f"{_human_size(data['size'])} in {data['seconds']:.1f}s"
        )

    emit(snapshot.manifest | ({"auto_prune": pruned} if pruned is not None else {}), human)


# ---------------------------------------------------------------- snapshots


@cli.group(epilog=EXIT_CODES_HELP)
@common
def snapshots() -> None:
    """Inspect, verify, pin, prune and delete snapshots, and the space they take."""


def _summary(snapshot: Any) -> dict[str, Any]:
    manifest = snapshot.manifest
    return {
        "id": snapshot.id,
        "created": manifest.get("created", "?"),
        "components": list(manifest.get("components", {})),
        "size": manifest.get("size", 0),
        "seconds": manifest.get("seconds"),
        "tags": manifest.get("tags", []),
        "host": manifest.get("host"),
        "damaged": snapshot.damaged,
    }


@snapshots.command("list", epilog=EXIT_CODES_HELP)
@common
def snapshots_list() -> None:
    """List sealed snapshots, oldest first (partial ones never appear; damaged ones say why)."""
    from aura_ops.workflows import snapshots as engine
    from aura_ops.workflows import space

    config = click.get_current_context().ensure_object(State).load()
    repo = engine.repository(config)
    found = engine.listing(config, repo=repo, remember=True)  # listed once, each manifest read once
    sizes = space.sizes(repo, found)  # own: what deleting it frees
    rows = [_summary(s) | {"own_bytes": sizes[s.id].own, "shared_bytes": sizes[s.id].shared} for s in found]
    pinned = repo.pinned(s.id for s in found)  # a marker column: pinned snapshots are never pruned
    for row in rows:
        row["pinned"] = row["id"] in pinned

    def human(data: dict[str, Any]) -> None:
        if not data["snapshots"]:
            click.echo("no snapshots yet")
            return
        _table(
            ["id", "created", "components", "size", "own", "shared", "tags", "state", "pin"],
            [
                [
                    r["id"],
                    r["created"],
                    ", ".join(r["components"]),
                    _human_size(r["size"]),
                    _human_size(r["own_bytes"]),
                    _human_size(r["shared_bytes"]),
                    ", ".join(r["tags"]),
                    f"DAMAGED: {r['damaged'].replace(' of snapshot ' + r['id'], '')}" if r["damaged"] else "ok",
                    "pinned" if r["pinned"] else "",
                ]
                for r in data["snapshots"]
            ],
        )

    emit({"snapshots": rows}, human)


@snapshots.command("show", epilog=EXIT_CODES_HELP)
@click.argument("snapshot_id", metavar="ID")
@common
def snapshots_show(snapshot_id: str) -> None:
    """Show a snapshot's manifest (ID may be a unique prefix or 'latest')."""
    from aura_ops.components import component_class
    from aura_ops.workflows import snapshots as engine

    config = click.get_current_context().ensure_object(State).load()
    manifest = engine.repository(config).get(snapshot_id).manifest

    def human(data: dict[str, Any]) -> None:
        click.echo(
            f"snapshot {data['id']}  created {data['created']} on {data['host']}  "
            f"{_human_size(data.get('size', 0))}  tags: {', '.join(data['tags']) or '-'}"
        )
        for name, entry in data["components"].items():  # each type says what it recorded
            click.echo(f"  {name} ({entry['type']}) {component_class(entry['type']).summary(entry, _human_size)}")

    emit(manifest, human)


@snapshots.command("verify", epilog=EXIT_CODES_HELP)
@click.argument("snapshot_id", metavar="ID")
@click.option(
    "--deep", is_flag=True, help="Also restore databases into a scratch database and compare with the manifest."
)
@click.option(
    "--component",
    "components",
    multiple=True,
    metavar="NAME",
    help="Verify only this component (repeatable). Default: all.",
)
@common
def snapshots_verify(snapshot_id: str, deep: bool, components: tuple[str, ...]) -> None:
    """Verify a snapshot's checksums; with --deep, prove it restores. Exit 3 on a mismatch."""
    from aura_ops.hosts.inventory import Inventory
    from aura_ops.workflows import snapshots as engine

    config = click.get_current_context().ensure_object(State).load()
    if components:  # an unknown name would verify nothing and report success
        snapshot = engine.repository(config).get(snapshot_id)
        unknown = [c for c in components if c not in snapshot.manifest["components"]]
        if unknown:
            raise UsageError(
                f"snapshot {snapshot.id} has no component {', '.join(map(repr, unknown))} "
                f"(it has: {', '.join(snapshot.manifest['components'])})"
            )
        snapshot_id = snapshot.id
    try:
        report = engine.verify(config, snapshot_id, deep, list(components) or None, Inventory(config))
    except engine.VerifyFailed as failed:
        # every problem, not only the first: listed on stdout (and in --json), one line on stderr
        emit({"ok": False, **failed.report, "error": mask(str(failed)), "exit_code": failed.exit_code}, _problems)
        raise

    def human(data: dict[str, Any]) -> None:
        click.echo(f"snapshot {data['snapshot']} verified{' (deep)' if deep else ''}")
        for name, result in data["components"].items():
            details = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result.items())
            click.echo(f"  {name}: {details}")

    emit({"ok": True, **report}, human)


def _problems(data: dict[str, Any]) -> None:
    click.echo(f"snapshot {data['snapshot']}: {len(data['problems'])} problem(s)")
    for problem in data["problems"]:
        click.echo(f"  {problem}")


@snapshots.command("delete", epilog=EXIT_CODES_HELP)
@click.argument("snapshot_id", metavar="ID")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (needed off a terminal).")
@common
def snapshots_delete(snapshot_id: str, yes: bool) -> None:
    """Delete a sealed snapshot."""
    from aura_ops import logs
    from aura_ops.workflows import retention
    from aura_ops.workflows import snapshots as engine

    config = click.get_current_context().ensure_object(State).load()
    repo = engine.repository(config)
    resolved = repo.resolve(snapshot_id)
    engine.refuse_if_pinned(repo, resolved)  # before asking (checked again under the lock)
    _announce(config, f"deleting snapshot {resolved} from repository {config.repository.path}")
    needed = retention.needed_by(config, repo, resolved)  # what a prune would never delete, and why
    if needed:
        logs.get().warning("snapshot.still_needed", snapshot=resolved, reasons=needed)
        confirm(f"Snapshot {resolved} is still needed: {'; '.join(needed)}. Delete it anyway?", yes)
    else:
        confirm(f"Delete snapshot {resolved}?", yes)
    engine.delete(config, resolved)
    emit(
        {"deleted": resolved, "was_needed": needed},
        lambda d: click.echo(f"snapshot {d['deleted']} deleted"),
    )


# ---------------------------------------------------------------- restore


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("snapshot_id", metavar="ID")
@click.option(
    "--component",
    "components",
    multiple=True,
    metavar="NAME",
    help="Restore only this component (repeatable). Default: all in the snapshot.",
)
@click.option(
    "--to-database",
    metavar="NAME",
    help="Restore into this database instead: a new one, an empty one, or (with consent) one to replace.",
)
@click.option(
    "--to-path",
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Restore the files component into this folder instead.",
)
@click.option(
    "--globals",
    "with_globals",
    is_flag=True,
    help="Create the snapshot's missing roles and tablespaces first (existing ones are left as they are).",
)
@click.option(
    "--globals-overwrite",
    is_flag=True,
    help="Implies --globals; also set existing roles and tablespaces to the snapshot's (attributes, passwords, "
    "memberships, settings).",
)
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.option(
    "--yes", is_flag=True, help="Confirm a restore that replaces data (a database, files in place, a non-empty folder)."
)
@common
def restore(
    snapshot_id: str,
    components: tuple[str, ...],
    to_database: str | None,
    to_path: Path | None,
    with_globals: bool,
    globals_overwrite: bool,
    dry_run: bool,
    yes: bool,
) -> None:
    """Put a snapshot back, in place or into a new database / folder."""
    from aura_ops.cli import announce
    from aura_ops.components import component_class, snapshotting
    from aura_ops.hosts.inventory import Inventory
    from aura_ops.workflows import snapshots as engine

    config = click.get_current_context().ensure_object(State).load()
    hosts = Inventory(config)  # one for the whole command: the targets looked at are the ones restored
    snapshot = engine.repository(config).get(snapshot_id)
    # --to-database / --to-path without --component: only what they redirect (never the
    # snapshot's other components in place, which `--to-database scratch --yes` would replace)
    redirected = [
        n
        for n, entry in snapshot.manifest["components"].items()
        if (to_database is not None and component_class(entry["type"]).restore_to == "database")
        or (to_path is not None and component_class(entry["type"]).restore_to == "path")
    ]
    names = list(components) or redirected or list(snapshot.manifest["components"])
    unknown = [n for n in names if n not in snapshot.manifest["components"]]
    if unknown:  # before the announcement, which would name nothing to restore
        raise UsageError(
            f"snapshot {snapshot.id} has no component {', '.join(map(repr, unknown))} "
            f"(it has: {', '.join(snapshot.manifest['components'])})"
        )
    entries = {n: e for n, e in snapshot.manifest["components"].items() if n in names}
    doing = announce.restore(config, snapshot.id, entries, to_database, to_path, hosts)
    _announce(config, ("dry run: " if dry_run else "") + doing)
    if not dry_run:
        _refuse_if_interrupted(config)
    files_replace = None
    if not dry_run:
        found = snapshotting.files_targets(config, snapshot, names, to_path, hosts=hosts)
        files_replace = _confirm_files_restore(found, snapshot, yes)
    in_place = [
        n
        for n in names
        if n in snapshot.manifest["components"]
        # asked with their targets: those restored into a folder or a database
        and component_class(snapshot.manifest["components"][n]["type"]).restore_to is None
    ]
    known = [n for n in names if n in snapshot.manifest["components"]]
    # every database the restore would replace, however its name was spelled (read-only look)
    replaced = [
        f"{t.description} (component {n})"
        for n, t in snapshotting.database_targets(config, snapshot, known, to_database, hosts)
        if t.replaces
    ]
    if (in_place or replaced) and not dry_run:
        age = engine.age_seconds(snapshot)
        what = ([f"{', '.join(in_place)} in place"] if in_place else []) + replaced
        confirm(
            f"Restore from snapshot {snapshot.id}, taken {_human_age(age)} ago: {'; '.join(what)}? "
            "Changes made since then are discarded.",
            yes,
        )
    report = engine.restore(
        config,
        snapshot,  # read once: the manifest is not read and checked again
        names,
        to_database,
        to_path.absolute() if to_path else None,
        dry_run,
        with_globals or globals_overwrite,
        replace=bool(replaced),  # consent covers what was named; anything else that appears is refused
        globals_overwrite=globals_overwrite,
        files_replace=files_replace,  # a folder judged empty (no consent asked) must still be empty
        hosts=hosts,
    )

    def human(data: dict[str, Any]) -> None:
        verb = "would restore" if dry_run else "restored"
        for name, result in data["components"].items():
            target = result.get("database") or result.get("target") or ""
            click.echo(
                f"{name}: {verb} from {data['snapshot']} into {target}"
                + (f" in {result['seconds']:.1f}s" if "seconds" in result else "")
            )
            for line in result.get("changes", [])[:200]:
                click.echo(f"  {line}")
            if result.get("note"):
                click.echo(f"  note: {result['note']}")
            for path in result.get("not_in_index", [])[:50]:
                click.echo(f"  not restored (in the stored tree but not in its index): {path}")
            for line in result.get("notes", []):
                click.echo(f"  {line}")

    emit(report, human)


def _confirm_files_restore(targets: list[dict[str, Any]], snapshot: Any, yes: bool) -> list[str]:
    """A files restore replaces what its folder holds: ask (or require --yes) when it holds
    anything, naming the folder; an empty or missing folder needs no confirmation. Returns the
    components whose folder may hold something when it is replaced (consented to)."""
    from aura_ops.workflows import snapshots as engine

    consented = []
    for target in targets:
        if yes or target["entries"]:
            consented.append(target["component"])
        if not target["entries"]:
            continue
        where = "in place" if target["in_place"] else "into another folder"
        confirm(
            f"Restore {target['component']} {where} from snapshot {snapshot.id}, taken "
            f"{_human_age(engine.age_seconds(snapshot))} ago? The {target['entries']} entries now in "
            f"{target['target']} are replaced by the snapshot's (excluded ones are kept).",
            yes,
        )
    return consented
