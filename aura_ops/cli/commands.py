"""The command line. Errors become one masked line and a documented exit code here, and only here."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from aura_ops import __version__, logs
from aura_ops.errors import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    AuraError,
    ChecksFailed,
    Interrupted,
    UsageError,
)
from aura_ops.secrets import mask, mask_values


class State:
    """Options shared by every command, settable before or after the command name."""

    def __init__(self) -> None:
        self.config_path: str | None = None
        self.json = False
        self.verbosity = 0
        self.emitted = False  # the command printed its document: the edge adds only the error line

    def load(self) -> Any:
        from aura_ops import config

        loaded = config.load(self.config_path)
        level = "debug" if self.verbosity > 0 else ("warning" if self.verbosity < 0 else loaded.logging.level)
        logs.configure(loaded.logging.dir, level, pretty=None if not self.json else False)
        return loaded


def _set_config(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(State).config_path = value


def _set_json(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(State).json = True


def _set_verbosity(ctx: click.Context, _: click.Parameter, value: int) -> None:
    ctx.ensure_object(State).verbosity += value


def common(function: Callable[..., Any]) -> Callable[..., Any]:
    """--config / --json / -v / -q on a command (also accepted before the command name)."""
    options = [
        click.option(
            "--config",
            "-c",
            metavar="FILE",
            expose_value=False,
            callback=_set_config,
            # no envvar here: click would read AURA_CONFIG for every command level where -c is
            # absent, overriding a -c given before the command; config.load falls back to it
            help="Config file (default: $AURA_CONFIG, else aura.yaml). Wins over AURA_CONFIG.",
        ),
        click.option(
            "--json",
            "json_",
            is_flag=True,
            expose_value=False,
            callback=_set_json,
            help="Print one JSON document on stdout (logs stay on stderr).",
        ),
        click.option(
            "-v", "--verbose", count=True, expose_value=False, callback=_set_verbosity, help="More log output."
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def emit(data: dict[str, Any], human: Callable[[dict[str, Any]], None]) -> None:
    state = click.get_current_context().ensure_object(State)
    data = mask_values(data)  # every registered secret, whatever the command put in its report
    state.emitted = True
    if state.json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        human(data)


def confirm(question: str, yes: bool) -> None:
    """Ask on a terminal; elsewhere require --yes. UsageError (exit 2) when declined."""
    if yes:
        return
    if sys.stdin.isatty() and not click.get_current_context().ensure_object(State).json:
        if click.confirm(question, default=False, err=True):
            return
        raise UsageError("not confirmed; nothing was changed")
    raise UsageError(f"{question} Pass --yes to confirm; nothing was changed")


def _table(columns: list[str], rows: list[list[Any]], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns, title=title, show_lines=False)
    for row in rows:
        table.add_row(*[str(cell) for cell in row])
    # off a terminal (cron, CI logs) ids are never cut to fit 80 columns: they are copied from there
    Console(soft_wrap=True, width=None if sys.stdout.isatty() else 1000).print(table)


def _refuse_if_interrupted(config: Any) -> None:
    from aura_ops import engine

    engine.refuse_if_interrupted(config)


def _announce(config: Any, doing: str) -> None:
    """The first line of a command that changes something: the config file and the target."""
    from aura_ops.cli import announce

    click.echo(announce.line(config, doing), err=True)


def _human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


@click.group(epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aura-ops")
@common
def cli() -> None:
    """aura-ops: verified snapshots of PostgreSQL and file trees, and restores you can trust."""


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
    from aura_ops.workflows import snapshots

    config = click.get_current_context().ensure_object(State).load()
    names = list(components) or list(config.components)
    for name in names:
        config.component(name)  # an unknown name is a usage error before anything is announced
    _announce(config, announce.backup(config, names))
    engine.warn_if_interrupted(config)  # an unrelated interrupted run does not block a backup
    snapshot = snapshots.backup(config, list(components) or None, list(tags))

    def human(data: dict[str, Any]) -> None:
        click.echo(
            f"snapshot {data['id']} sealed: {', '.join(data['components'])}, "
            f"{_human_size(data['size'])} in {data['seconds']:.1f}s"
        )

    emit(snapshot.manifest, human)


# ---------------------------------------------------------------- snapshots


@cli.group(epilog=EXIT_CODES_HELP)
@common
def snapshots() -> None:
    """Inspect, verify and delete snapshots."""


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


@snapshots.command("list")
@common
def snapshots_list() -> None:
    """List sealed snapshots, oldest first (partial ones never appear; damaged ones say why)."""
    from aura_ops.workflows import snapshots as engine

    config = click.get_current_context().ensure_object(State).load()
    rows = [_summary(s) for s in engine.listing(config)]

    def human(data: dict[str, Any]) -> None:
        if not data["snapshots"]:
            click.echo("no snapshots yet")
            return
        _table(
            ["id", "created", "components", "size", "tags", "state"],
            [
                [
                    r["id"],
                    r["created"],
                    ", ".join(r["components"]),
                    _human_size(r["size"]),
                    ", ".join(r["tags"]),
                    f"DAMAGED: {r['damaged'].replace(' of snapshot ' + r['id'], '')}" if r["damaged"] else "ok",
                ]
                for r in data["snapshots"]
            ],
        )

    emit({"snapshots": rows}, human)


@snapshots.command("show")
@click.argument("snapshot_id", metavar="ID")
@common
def snapshots_show(snapshot_id: str) -> None:
    """Show a snapshot's manifest (ID may be a unique prefix or 'latest')."""
    from aura_ops.workflows import snapshots as engine

    config = click.get_current_context().ensure_object(State).load()
    manifest = engine.repository(config).get(snapshot_id).manifest

    def human(data: dict[str, Any]) -> None:
        click.echo(
            f"snapshot {data['id']}  created {data['created']} on {data['host']}  "
            f"{_human_size(data.get('size', 0))}  tags: {', '.join(data['tags']) or '-'}"
        )
        for name, entry in data["components"].items():
            if entry["type"] == "release":
                click.echo(f"  {name} (release) {entry['path']}: current {entry['current']}")
            elif entry["type"] == "postgres":
                click.echo(
                    f"  {name} (postgres) {entry['database']} at {entry['where']}, "
                    f"PostgreSQL {entry['server_version']}, {len(entry['row_counts'])} "
                    f"tables, {sum(entry['row_counts'].values())} rows, "
                    f"{_human_size(entry['database_size'])} on the server"
                )
            else:
                click.echo(
                    f"  {name} (files) {entry['source']}: {entry['file_count']} files, "
                    f"{_human_size(entry['bytes'])}; copied {entry['copied_files']}, "
                    f"hard-linked {entry['linked_files']} unchanged"
                )

    emit(manifest, human)


@snapshots.command("verify")
@click.argument("snapshot_id", metavar="ID")
@click.option(
    "--deep", is_flag=True, help="Also restore databases into a scratch database and compare with the manifest."
)
@click.option("--component", "components", multiple=True, metavar="NAME")
@common
def snapshots_verify(snapshot_id: str, deep: bool, components: tuple[str, ...]) -> None:
    """Verify a snapshot's checksums; with --deep, prove it restores. Exit 3 on a mismatch."""
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
        report = engine.verify(config, snapshot_id, deep, list(components) or None)
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


@snapshots.command("delete")
@click.argument("snapshot_id", metavar="ID")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@common
def snapshots_delete(snapshot_id: str, yes: bool) -> None:
    """Delete a sealed snapshot."""
    from aura_ops.workflows import snapshots as engine

    config = click.get_current_context().ensure_object(State).load()
    resolved = engine.repository(config).resolve(snapshot_id)
    _announce(config, f"deleting snapshot {resolved} from repository {config.repository.path}")
    confirm(f"Delete snapshot {resolved}?", yes)
    engine.delete(config, resolved)
    emit({"deleted": resolved}, lambda d: click.echo(f"snapshot {d['deleted']} deleted"))


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
    help="With --globals: also set existing roles and tablespaces to the snapshot's (attributes, passwords, "
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
    from aura_ops.workflows import snapshots as engine

    config = click.get_current_context().ensure_object(State).load()
    snapshot = engine.repository(config).get(snapshot_id)
    names = list(components) or list(snapshot.manifest["components"])
    entries = {n: e for n, e in snapshot.manifest["components"].items() if n in names}
    doing = announce.restore(config, snapshot.id, entries, to_database, to_path)
    _announce(config, ("dry run: " if dry_run else "") + doing)
    if not dry_run:
        _refuse_if_interrupted(config)
    files_replace = None
    if not dry_run:
        files_replace = _confirm_files_restore(engine.files_targets(config, snapshot, names, to_path), snapshot, yes)
    in_place = [
        n
        for n in names
        if n in snapshot.manifest["components"]
        and snapshot.manifest["components"][n]["type"] not in ("files", "postgres")  # asked with their targets
    ]
    known = [n for n in names if n in snapshot.manifest["components"]]
    # every database the restore would replace, however its name was spelled (read-only look)
    replaced = [
        f"{t.describe()} (component {n})"
        for n, t in engine.database_targets(config, snapshot, known, to_database)
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
        snapshot.id,
        list(components) or None,
        to_database,
        to_path.absolute() if to_path else None,
        dry_run,
        with_globals or globals_overwrite,
        replace=bool(replaced),  # consent covers what was named; anything else that appears is refused
        globals_overwrite=globals_overwrite,
        files_replace=files_replace,  # a folder judged empty (no consent asked) must still be empty
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


def _human_age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


# ---------------------------------------------------------------- doctor


@cli.command(epilog=EXIT_CODES_HELP)
@common
def doctor() -> None:
    """Check tools, versions, database reachability, repository and disk before changing anything."""
    from aura_ops.workflows import doctor as checks

    config = click.get_current_context().ensure_object(State).load()
    results, code = checks.run(config)

    def human(data: dict[str, Any]) -> None:
        _table(
            ["check", "ok", "detail"], [[c["check"], "yes" if c["ok"] else "NO", c["detail"]] for c in data["checks"]]
        )

    emit({"ok": code == 0, "exit_code": code, "checks": results}, human)
    if code:
        failed = [c["check"] for c in results if not c["ok"]]
        raise ChecksFailed(f"doctor: {len(failed)} check(s) failed: {', '.join(failed)}", code)


# ---------------------------------------------------------------- playbooks and runs


def _extra_vars(values: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"-e expects key=value, got {item!r}")
        pairs[key] = value
    return pairs


def _show_outcome(data: dict[str, Any]) -> None:
    run = data["run"]
    click.echo(f"run {run['id']} ({run['playbook']}): {run['status']}")
    for step in data["steps"]:
        error = f"  {step['error']}" if step.get("error") else ""
        took = f"{step['seconds']:7.2f}s" if step.get("seconds") is not None else " " * 8
        click.echo(f"  {step['index'] + 1:>2}. {step['name']:<14} {step['action']:<23} {took} {step['status']}{error}")
    click.echo(data["message"])


def _finish(outcome: Any) -> None:
    """Print a run's report; a run that failed then goes on to the edge as its error."""
    emit(outcome.as_dict(), _show_outcome)
    if outcome.error:
        raise outcome.error


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("playbook_ref", metavar="PLAYBOOK")
@click.option("-e", "extra", multiple=True, metavar="KEY=VALUE", help="A playbook parameter (repeatable).")
@click.option("--idempotency-key", metavar="KEY", help="A run with this key that succeeded makes this a no-op.")
@common
def run(playbook_ref: str, extra: tuple[str, ...], idempotency_key: str | None) -> None:
    """Run a playbook as one transaction: it completes, or every applied step is undone."""
    from aura_ops import engine
    from aura_ops.engine import playbook

    config = click.get_current_context().ensure_object(State).load()
    book = playbook.load(playbook_ref, config.source.parent if config.source else None)
    given = _extra_vars(extra)
    shown = "".join(f" {k}={'***' if k in book.secrets else v}" for k, v in given.items())
    _announce(config, f"running playbook {book.name} ({book.source}){shown}, journal {engine.state_dir(config)}")
    _finish(engine.Engine(config).run(book, given, idempotency_key))


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("playbook_ref", metavar="PLAYBOOK")
@click.option("-e", "extra", multiple=True, metavar="KEY=VALUE", help="A playbook parameter (repeatable).")
@common
def plan(playbook_ref: str, extra: tuple[str, ...]) -> None:
    """Show what a run would do, step by step, and what would undo it. Changes nothing."""
    from aura_ops.engine import planner, playbook

    config = click.get_current_context().ensure_object(State).load()
    book = playbook.load(playbook_ref, config.source.parent if config.source else None)
    steps = planner.plan(config, book, _extra_vars(extra))
    emit({"playbook": book.name, "steps": steps}, _show_plan)


@cli.command(epilog=EXIT_CODES_HELP)
@click.option("--version", "version", required=True, metavar="V", help="The release version to deploy.")
@click.option("--source", type=click.Path(path_type=Path), metavar="DIR|TARBALL", help="The release to upload.")
@click.option("--rollback-on-fail", is_flag=True, help="Undo everything (database included) if any step fails.")
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@common
def deploy(version: str, source: Path | None, rollback_on_fail: bool, dry_run: bool) -> None:
    """Deploy a release as one transaction: snapshot, upload, stop, migrate, switch, start, checks."""
    from aura_ops import deploy as deployer
    from aura_ops.cli import announce

    config = click.get_current_context().ensure_object(State).load()
    _announce(config, ("dry run: " if dry_run else "") + announce.deploy(config, version, source))
    if dry_run:
        steps = deployer.plan(config, version, source)
        emit({"playbook": "deploy", "steps": steps}, _show_plan)
        return
    if source is None:
        raise UsageError("--source is required (a release folder or tarball)")
    outcome, report = deployer.deploy(config, version, source.absolute(), rollback_on_fail)
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
@click.option("--to-release", metavar="V", help="The release to go back to (default: the last verified one).")
@click.option("--to-snapshot", metavar="ID", help="The snapshot whose database (and release) to go back to.")
@click.option("--keep-data", is_flag=True, help="Roll back code and services only; leave the database alone.")
@click.option("--yes", is_flag=True, help="Confirm restoring the database without asking.")
@common
def rollback(to_release: str | None, to_snapshot: str | None, keep_data: bool, yes: bool) -> None:
    """Undo a deploy that went live but is bad: release, database and services, then prove it healthy."""
    from aura_ops import deploy as deployer
    from aura_ops.cli import announce

    config = click.get_current_context().ensure_object(State).load()
    target = deployer.rollback_plan(config, to_release, to_snapshot, keep_data)
    _announce(config, announce.rollback(config, target))
    _refuse_if_interrupted(config)
    if target["restore_data"] == "yes":
        confirm(
            f"Roll back to release {target['release']} and restore database {target['database']} from snapshot "
            f"{target['snapshot']}, taken {_human_age(target['snapshot_age_seconds'])} ago? Writes made since "
            "then are discarded (--keep-data rolls back code and services only).",
            yes,
        )
    outcome, report = deployer.rollback(config, target)

    def human(data: dict[str, Any]) -> None:
        _show_outcome(data)
        if "time_to_restore_seconds" in data:
            click.echo(f"rolled back to {target['release']} in {data['time_to_restore_seconds']:.1f}s")

    emit({**outcome.as_dict(), **report}, human)
    if outcome.error:
        raise outcome.error


def _show_plan(data: dict[str, Any]) -> None:
    click.echo(f"plan for {data['playbook']} (changes nothing):")
    for number, step in enumerate(data["steps"], 1):
        click.echo(f"  {number:>2}. {step['name']} [{step['action']}] {step['state']}")
        click.echo(f"      do:   {step['apply']}")
        click.echo(f"      undo: {step['undo']}")


@cli.group(epilog=EXIT_CODES_HELP)
@common
def runs() -> None:
    """The journal: history, and finishing or undoing an interrupted run."""


@runs.command("list")
@click.option("--limit", default=50, show_default=True)
@common
def runs_list(limit: int) -> None:
    """Runs, newest first."""
    from aura_ops import engine

    config = click.get_current_context().ensure_object(State).load()
    records = [r.as_dict() for r in engine.Engine(config).journal.runs(limit)]

    def human(data: dict[str, Any]) -> None:
        if not data["runs"]:
            click.echo("no runs yet")
            return
        _table(
            ["run", "playbook", "status", "key", "created"],
            [
                [r["id"], Path(r["playbook"]).stem, r["status"], r["idempotency_key"] or "", r["created"]]
                for r in data["runs"]
            ],
        )

    emit({"runs": records}, human)


@runs.command("show")
@click.argument("run_id", metavar="RUN")
@common
def runs_show(run_id: str) -> None:
    """A run's steps: status, attempts, outputs, errors, timings."""
    from aura_ops import engine

    config = click.get_current_context().ensure_object(State).load()
    journal = engine.Engine(config).journal
    record = journal.run(run_id)
    data = {
        "run": record.as_dict(),
        "steps": [s.__dict__ for s in journal.steps(record.id)],
        "exit_code": 0,
        "message": record.error or "",
    }
    emit(data, _show_outcome)


@runs.command("resume")
@click.argument("run_id", metavar="RUN")
@click.option("-e", "extra", multiple=True, metavar="KEY=VALUE", help="A secret parameter, given again.")
@common
def runs_resume(run_id: str, extra: tuple[str, ...]) -> None:
    """Continue an interrupted run forward (a compensating run finishes its undo)."""
    from aura_ops import engine

    config = click.get_current_context().ensure_object(State).load()
    runner = engine.Engine(config)
    record = runner.journal.run(run_id)
    _announce(config, f"resuming run {record.id} ({Path(record.playbook).stem}, {record.status}) of {runner.state}")
    _finish(runner.resume(record.id, _extra_vars(extra)))


@runs.command("abort")
@click.argument("run_id", metavar="RUN")
@click.option("-e", "extra", multiple=True, metavar="KEY=VALUE", help="A secret parameter, given again.")
@click.option("--yes", is_flag=True, help="Confirm an undo that puts a database back from a snapshot.")
@common
def runs_abort(run_id: str, extra: tuple[str, ...], yes: bool) -> None:
    """Undo every step an interrupted, failed or rollback_failed run applied, in reverse order.
    Exit 0 when everything was undone, 4 when an undo failed."""
    from aura_ops import engine

    config = click.get_current_context().ensure_object(State).load()
    runner = engine.Engine(config)
    record = runner.journal.run(run_id)
    _announce(config, f"aborting run {record.id} ({Path(record.playbook).stem}, {record.status}) of {runner.state}")
    discarding = runner.undo_discards_data(record.id)
    if discarding:
        age = (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(record.created)).total_seconds()
        confirm(
            f"Undo run {record.id}, started {_human_age(age)} ago? Undoing its step(s) {', '.join(discarding)} "
            "puts the database back as it was before the run: writes made since are discarded.",
            yes,
        )
    _finish(runner.abort(record.id, _extra_vars(extra)))


# ---------------------------------------------------------------- the edge


def _save_traceback() -> str:
    # a new file of our own (mkstemp: O_EXCL, 0600), never one a planted symlink points at
    fd, path = tempfile.mkstemp(prefix=f"aura-ops-crash-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}-", suffix=".txt")
    with os.fdopen(fd, "w") as out:
        out.write(mask(traceback.format_exc()))
    return str(path)


def _fail(message: str, code: int, json_mode: bool, state: State) -> int:
    """The one error line on stderr; with --json, the error document too unless the command
    already printed its own (stdout holds one JSON document)."""
    click.echo(f"aura-ops: error: {mask(message)}", err=True)
    if json_mode and not state.emitted:
        click.echo(json.dumps({"ok": False, "error": mask(message), "exit_code": code}))
    return code


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and map every outcome to a documented exit code."""
    from aura_ops.hosts import remember_user_umask

    remember_user_umask(os.umask(0o077))  # aura's own files owner-only; the user's keep the user's umask
    json_mode = "--json" in (argv if argv is not None else sys.argv[1:])
    logs.configure(None, "info", pretty=False if json_mode else None)
    state = State()
    try:
        cli.main(args=argv, prog_name="aura-ops", standalone_mode=False, obj=state)
        code = EXIT_OK  # a command that fails raises: no command returns an exit code
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = EXIT_USAGE
    except click.exceptions.Abort as exc:
        cause = exc.__cause__  # click turns every KeyboardInterrupt into Abort, an Interrupted of ours too
        if isinstance(cause, Interrupted):
            code = _fail(str(cause), cause.exit_code, json_mode, state)
        else:
            code = _fail("aborted; nothing was changed", EXIT_FAILED, json_mode, state)
    except AuraError as exc:
        code = _fail(str(exc), exc.exit_code, json_mode, state)
    except KeyboardInterrupt:  # outside click's own handling
        code = _fail("interrupted", EXIT_FAILED, json_mode, state)
    except Exception as exc:  # noqa: BLE001 - the edge: one line plus a saved traceback
        path = _save_traceback()
        message = f"unexpected {type(exc).__name__}: {exc} (traceback saved to {path})"
        code = _fail(message, EXIT_FAILED, json_mode, state)
    sys.exit(code)
