"""doctor: check everything a command needs before anything is changed."""

from __future__ import annotations

from typing import Any

import click

from aura_ops.cli.base import State, _table, cli, common, emit
from aura_ops.errors import (
    EXIT_CODES_HELP,
    ChecksFailed,
)


@cli.command(epilog=EXIT_CODES_HELP)
@common
def doctor() -> None:
    """Check tools, versions, database reachability, repository and disk before changing anything."""
    from aura_ops.components import doctor as checks
    from aura_ops.hosts.inventory import Inventory

    config = click.get_current_context().ensure_object(State).load()
    results, code = checks.run(config, Inventory(config))

    def human(data: dict[str, Any]) -> None:
        _table(
            ["check", "ok", "detail"], [[c["check"], "yes" if c["ok"] else "NO", c["detail"]] for c in data["checks"]]
        )

    emit({"ok": code == 0, "exit_code": code, "checks": results}, human)
    if code:
        failed = [c["check"] for c in results if not c["ok"]]
        raise ChecksFailed(f"doctor: {len(failed)} check(s) failed: {', '.join(failed)}", code)
