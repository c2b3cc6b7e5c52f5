"""The ``checks`` (health or smoke) and ``preflight`` (doctor's checks) actions."""

from __future__ import annotations

from typing import Any

from aura_ops.components import doctor
from aura_ops.engine import checks
from aura_ops.engine.actions.base import Action, Context, NoParams, _Params
from aura_ops.errors import AuraError


class ChecksParams(_Params):
    kind: str = "health"


class ChecksAction(Action):
    """Run the configured health (``checks``) or smoke (``smoke_checks``) checks."""

    Params = ChecksParams

    def describe(self, p: ChecksParams, ctx: Context) -> tuple[str, str]:
        found = ctx.config.checks if p.kind == "health" else ctx.config.smoke_checks
        return f"{len(found)} {p.kind} check(s)", "nothing"

    def apply(self, p: ChecksParams, ctx: Context) -> dict[str, Any]:
        found = ctx.config.checks if p.kind == "health" else ctx.config.smoke_checks
        return {"results": checks.run_all(found, ctx.config, ctx.hosts)}


class PreflightAction(Action):
    """Run ``doctor``'s checks (tools, versions, reachability, disk space) before anything changes."""

    Params = NoParams

    def describe(self, p: NoParams, ctx: Context) -> tuple[str, str]:
        return "preflight: tools, reachability, disk space (aura-ops doctor)", "nothing"

    def apply(self, p: NoParams, ctx: Context) -> dict[str, Any]:
        results, code = doctor.run(ctx.config, ctx.hosts)
        failed = [f"{c['check']}: {c['detail']}" for c in results if not c["ok"]]
        if code:
            raise AuraError("preflight failed: " + "; ".join(failed))
        return {"checks": len(results)}
