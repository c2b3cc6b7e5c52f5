"""The deploy's ``services_stop`` and ``services_start`` actions, on its docker component."""

from __future__ import annotations

from typing import Any

from aura_ops.components.containers import DockerComponent
from aura_ops.config import DockerConfig
from aura_ops.engine.actions.base import Action, Context, NoParams
from aura_ops.hosts.inventory import Inventory


def _services(ctx: Context) -> Any:
    name = ctx.config.only("docker", ctx.config.deploy.services, "services")
    if name is None:
        return None
    cfg = ctx.config.component(name)
    assert isinstance(cfg, DockerConfig)
    return DockerComponent(name, cfg, Inventory(ctx.config).for_component(name))


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
