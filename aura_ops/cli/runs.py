"""run and plan a playbook; runs list/show/resume/abort (the journal)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import click

from aura_ops.cli.base import (
    State,
    _announce,
    _human_age,
    _show_outcome,
    _show_plan,
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

# ---------------------------------------------------------------- playbooks and runs


def _extra_vars(values: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"-e expects key=value, got {item!r}")
        pairs[key] = value
    return pairs


def _finish(outcome: Any) -> None:
    """Print a run's report; a run that failed then goes on to the edge as its error."""
    emit(outcome.as_dict(), _show_outcome)
    if outcome.error:
        raise outcome.error


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("playbook_ref", metavar="PLAYBOOK")
@click.option("-e", "extra", multiple=True, metavar="KEY=VALUE", help="A playbook parameter (repeatable).")
@click.option(
    "--idempotency-key",
    metavar="KEY",
    help="A run with this key that succeeded makes this a no-op; an unfinished one, exit 5.",
)
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


@cli.group(epilog=EXIT_CODES_HELP)
@common
def runs() -> None:
    """The journal: history, and finishing or undoing an interrupted run."""


@runs.command("list", epilog=EXIT_CODES_HELP)
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True, metavar="N", help="Show at most N runs."
)
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


@runs.command("show", epilog=EXIT_CODES_HELP)
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


@runs.command("resume", epilog=EXIT_CODES_HELP)
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


@runs.command("abort", epilog=EXIT_CODES_HELP)
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
