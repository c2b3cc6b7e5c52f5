"""The ``sql`` action: SQL in one transaction on a configured postgres component."""

from __future__ import annotations

from typing import Any

from aura_ops import components
from aura_ops.components.postgres import PostgresComponent
from aura_ops.engine.actions.base import Action, Context, _Params
from aura_ops.secrets import mask


class SqlParams(_Params):
    component: str
    sql: str
    undo: str | None = None
    check: str | None = None


class SqlAction(Action):
    """Run SQL in one transaction on a configured postgres component; ``undo`` SQL compensates;
    ``check`` is a query whose first value is true when the change is already there."""

    Params = SqlParams
    honours_timeout = True  # the server cancels the statement (statement_timeout)

    def describe(self, p: SqlParams, ctx: Context) -> tuple[str, str]:
        return f"[{p.component}] {mask(p.sql)}", f"[{p.component}] {mask(p.undo)}" if p.undo else (
            "nothing (no undo given)"
        )

    def _database(self, p: SqlParams, ctx: Context) -> PostgresComponent:
        return components.build_as(ctx.config, p.component, ctx.hosts, PostgresComponent)

    def _execute(self, p: SqlParams, ctx: Context, statement: str) -> list[Any]:
        """The statement's rows, committed; a failure is the component's one-line AuraError (the
        step's timeout too: the server cancels the statement, nothing is committed)."""
        return self._database(p, ctx).execute(statement, timeout=ctx.timeout)

    def check(self, p: SqlParams, ctx: Context) -> bool:
        if not p.check:
            return False
        rows = self._execute(p, ctx, p.check)
        return bool(rows and rows[0] and rows[0][0])

    def apply(self, p: SqlParams, ctx: Context) -> dict[str, Any]:
        return {"rows": self._execute(p, ctx, p.sql)[:100]}

    def compensate(self, p: SqlParams, ctx: Context, outputs: dict[str, Any]) -> None:
        if p.undo:
            self._execute(p, ctx, p.undo)
