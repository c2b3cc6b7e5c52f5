"""Actions that run a command on the control machine: ``command`` (with its undo) and ``wait``."""

from __future__ import annotations

import shlex
import time
from typing import Any

from pydantic import Field

from aura_ops.engine.actions.base import Action, Context, _Params
from aura_ops.errors import AuraError
from aura_ops.hosts import Command
from aura_ops.secrets import mask


class CommandParams(_Params):
    argv: list[str] = Field(min_length=1)
    undo: list[str] | None = None
    check: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None


class CommandAction(Action):
    """Run argv on the local host; ``undo`` argv compensates; ``check`` argv exit 0 = applied."""

    Params = CommandParams
    honours_timeout = True

    def describe(self, p: CommandParams, ctx: Context) -> tuple[str, str]:
        undo = mask(shlex.join(p.undo)) if p.undo else "nothing (no undo given)"
        return mask(shlex.join(p.argv)), undo

    def _run(self, argv: list[str], p: CommandParams, ctx: Context, check: bool = True) -> Any:
        return ctx.hosts.local().run(Command(tuple(argv), p.env, p.cwd), timeout=ctx.timeout, check=check)

    def check(self, p: CommandParams, ctx: Context) -> bool:
        return bool(p.check) and self._run(p.check or [], p, ctx, check=False).returncode == 0

    def apply(self, p: CommandParams, ctx: Context) -> dict[str, Any]:
        result = self._run(p.argv, p, ctx)
        return {"stdout": mask(result.text)[-4000:].strip(), "returncode": result.returncode}

    def compensate(self, p: CommandParams, ctx: Context, outputs: dict[str, Any]) -> None:
        if p.undo:
            self._run(p.undo, p, ctx)


class WaitParams(_Params):
    argv: list[str] = Field(min_length=1)
    timeout: float = Field(30, gt=0)
    interval: float = Field(1, gt=0)


class WaitAction(Action):
    """Poll a command until it exits 0, within ``timeout`` seconds."""

    Params = WaitParams

    def describe(self, p: WaitParams, ctx: Context) -> tuple[str, str]:
        return f"wait up to {p.timeout:g}s for `{mask(shlex.join(p.argv))}`", "nothing"

    def apply(self, p: WaitParams, ctx: Context) -> dict[str, Any]:
        deadline = time.monotonic() + p.timeout
        attempts = 0
        while True:
            attempts += 1
            result = ctx.hosts.local().run(Command(tuple(p.argv)), check=False, timeout=p.timeout)
            if result.returncode == 0:
                return {"attempts": attempts}
            if time.monotonic() + p.interval > deadline:
                raise AuraError(
                    f"`{mask(shlex.join(p.argv))}` did not succeed within {p.timeout:g}s ({attempts} attempts)"
                )
            time.sleep(p.interval)
