"""The command group, the options every command takes, the output helpers the commands share, and
the edge: errors become one masked line and a documented exit code here, and only here."""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import click

from aura_ops import __version__, logs
from aura_ops.errors import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    AuraError,
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
    """--config / --json / -v on a command (also accepted before the command name)."""
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


def _table(columns: list[str], rows: list[list[Any]]) -> None:
    from aura_ops.cli import tables

    cells = [[str(cell) for cell in row] for row in rows]
    terminal = sys.stdout.isatty()
    # rich draws ASCII boxes on a stream that is not UTF-8, and styles the header of a terminal
    # forced by the environment: then it draws (as it would, whatever the table)
    utf8 = (getattr(sys.stdout, "encoding", None) or "utf-8").lower().startswith("utf")
    forced = os.environ.get("TTY_COMPATIBLE") == "1" or bool(os.environ.get("FORCE_COLOR"))
    if not terminal and utf8 and not forced and (drawn := tables.render(columns, cells, 1000)) is not None:
        sys.stdout.write(drawn)  # what rich would print, without its per-cell layout (tables.py)
        return
    from rich.console import Console
    from rich.table import Table

    # off a terminal (cron, CI logs) ids are never cut to fit 80 columns: they are copied from there
    console = Console(soft_wrap=True, width=None if terminal else 1000)
    if terminal and utf8 and (drawn := tables.render(columns, cells, console.width, console.color_system is not None)):
        console.file.write(drawn)
        return
    table = Table(*columns, show_lines=False)
    for row in cells:
        table.add_row(*row)
    console.print(table)


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


class _Interruption(Exception):  # noqa: N818 - a carrier, not an error of its own
    """Carries a KeyboardInterrupt (SIGINT, or the ``Interrupted`` the signal handlers raise)
    past click's ``main``, which would print a blank line and turn it into ``Abort``."""

    def __init__(self, interrupt: KeyboardInterrupt) -> None:
        super().__init__(str(interrupt))
        self.interrupt = interrupt


_user_umask: int | None = None  # the user's, when ``main`` tightened the process's umask


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        if _user_umask is not None:  # a command is about to run: the hosts learn the user's umask
            # (here, not in ``main``: ``--help`` and ``--version`` exit while parsing, without
            # the cost of importing the hosts)
            from aura_ops.hosts import remember_user_umask

            remember_user_umask(_user_umask)
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as interrupt:
            raise _Interruption(interrupt) from None


@click.group(cls=_Group, epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aura-ops")
@common
def cli() -> None:
    """aura-ops: verified snapshots of PostgreSQL and file trees, and restores you can trust."""


def _human_age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _show_outcome(data: dict[str, Any]) -> None:
    run = data["run"]
    click.echo(f"run {run['id']} ({run['playbook']}): {run['status']}")
    for step in data["steps"]:
        error = f"  {step['error']}" if step.get("error") else ""
        took = f"{step['seconds']:7.2f}s" if step.get("seconds") is not None else " " * 8
        click.echo(f"  {step['index'] + 1:>2}. {step['name']:<14} {step['action']:<23} {took} {step['status']}{error}")
    if not data.get("exit_code"):  # a failed run's message is the error line the edge prints
        click.echo(data["message"])


def _show_plan(data: dict[str, Any]) -> None:
    click.echo(f"plan for {data['playbook']} (changes nothing):")
    for number, step in enumerate(data["steps"], 1):
        click.echo(f"  {number:>2}. {step['name']} [{step['action']}] {step['state']}")
        click.echo(f"      do:   {step['apply']}")
        click.echo(f"      undo: {step['undo']}")


# ---------------------------------------------------------------- the edge


def _save_traceback() -> str:
    import datetime as dt
    import tempfile
    import traceback

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


def _interrupted(interrupt: KeyboardInterrupt, json_mode: bool, state: State) -> int:
    """An interrupted command: its one-line reason (a new line first only to close a terminal's
    ``^C`` echo, as click would)."""
    is_sigint = not isinstance(interrupt, Interrupted) or "SIGINT" in str(interrupt)
    if is_sigint and sys.stderr.isatty():
        click.echo(err=True)
    if isinstance(interrupt, Interrupted):
        return _fail(str(interrupt), interrupt.exit_code, json_mode, state)
    return _fail("aborted; nothing was changed", EXIT_FAILED, json_mode, state)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and map every outcome to a documented exit code."""
    global _user_umask
    _user_umask = os.umask(0o077)  # aura's own files owner-only; the user's keep the user's umask
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
    except _Interruption as carried:
        code = _interrupted(carried.interrupt, json_mode, state)
    except click.exceptions.Abort as exc:
        cause = exc.__cause__  # click turns a KeyboardInterrupt it meets into Abort (while parsing)
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


def run() -> None:
    """The console script and ``python -m aura_ops``: :func:`main`, then leave at once with its
    exit code, skipping the interpreter's teardown (collecting every imported module: 0.04-0.1 s
    with psycopg and pydantic loaded, more under load; a scheduled backup or a restore of a
    small database pays it on every run). Only when nothing is left to finish: no thread but
    daemons running (else the normal exit, which waits for them), the ``atexit`` functions run,
    stdout and stderr flushed (the log file is flushed line by line)."""
    try:
        main()
        code: str | int | None = EXIT_OK
    except SystemExit as exc:
        code = exc.code
    main_thread = threading.main_thread()
    waiting = any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not main_thread)
    if waiting or not isinstance(code, int):
        sys.exit(code)
    atexit._run_exitfuncs()  # what libraries registered (flushing, finalizers) still runs, once
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # noqa: BLE001 - e.g. a closed pipe: Python's own exit reports it
        sys.exit(code)
    os._exit(code)
