"""The deploy's ``services_stop`` and ``services_start`` actions, on its docker component."""

from __future__ import annotations

from typing import Any

from aura_ops.components import build_as
from aura_ops.components.containers import DockerComponent
from aura_ops.engine.actions.base import Action, Context, NoParams


def _services(ctx: Context) -> DockerComponent | None:
    """The deploy's docker component on its host (from the run's inventory), or None."""
    name = ctx.config.only("docker", ctx.config.deploy.services, "services")
    if name is None:
        return None
    return build_as(ctx.config, name, ctx.hosts, DockerComponent)


class ServicesStopAction(Action):
    """Stop the deploy's containers (reverse order); compensation starts what it stopped."""

    identifiers = frozenset({"stopped"})

    Params = NoParams

    def describe(self, p: NoParams, ctx: Context) -> tuple[str, str]:
        return "stop services", "start the services it stopped"

    def apply(self, p: NoParams, ctx: Context) -> dict[str, Any]:
        services = _services(ctx)
        return {"stopped": services.stop() if services else []}

    def compensate(self, p: NoParams, ctx: Context, outputs: dict[str, Any]) -> None:
        services = _services(ctx)
        if services:
            services.start(outputs.get("stopped"))


class ServicesStartAction(Action):
    """Start the deploy's containers in order; compensation stops them again."""

    identifiers = frozenset({"started"})

    Params = NoParams

    def describe(self, p: NoParams, ctx: Context) -> tuple[str, str]:
        return "start services", "stop them again"

    def apply(self, p: NoParams, ctx: Context) -> dict[str, Any]:
        services = _services(ctx)
        return {"started": services.start() if services else []}

    def compensate(self, p: NoParams, ctx: Context, outputs: dict[str, Any]) -> None:
        services = _services(ctx)
        if services:
            services.stop()
