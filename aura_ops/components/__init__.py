"""Components: things aura-ops can snapshot, verify and restore (``base.Component``).

``REGISTRY`` is the one literal map from a config ``type:`` to the class that implements it,
named by where it lives, so that a command imports only the components it uses (the postgres
component pulls in psycopg, the docker one the Docker SDK).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aura_ops.errors import ConfigError

if TYPE_CHECKING:
    from aura_ops.components.base import Component, ComponentManifest
    from aura_ops.config import Config
    from aura_ops.hosts.inventory import Inventory

C = TypeVar("C")

REGISTRY: dict[str, str] = {
    "postgres": "aura_ops.components.postgres:PostgresComponent",
    "files": "aura_ops.components.files:FilesComponent",
    "release": "aura_ops.components.release:ReleaseComponent",
    "docker": "aura_ops.components.containers:DockerComponent",
}


def component_class(type_name: str) -> type[Component]:
    """The class implementing config ``type: type_name`` (imported on first use)."""
    try:
        module_name, _, class_name = REGISTRY[type_name].partition(":")
    except KeyError:
        raise ConfigError(f"unknown component type {type_name!r} (known: {', '.join(sorted(REGISTRY))})") from None
    cls: type[Component] = getattr(importlib.import_module(module_name), class_name)
    return cls


def manifest_model(type_name: str) -> type[ComponentManifest]:
    return component_class(type_name).manifest_model


def build(config: Config, name: str, hosts: Inventory) -> Component:
    """The configured component ``name``, on its host from the inventory (its snapshot folders
    on the inventory's local host, the control machine)."""
    section: Any = config.component(name)
    cls: Any = component_class(section.type)
    component: Component = cls(name, section, hosts.for_component(name), store=hosts.local())
    return component


def build_as(config: Config, name: str, hosts: Inventory, cls: type[C]) -> C:
    """``build``, for a caller that needs one component class (the deploy's release, services,
    database): ConfigError (exit 2) when ``name`` is configured with another type."""
    component = build(config, name, hosts)
    if not isinstance(component, cls):
        wanted = getattr(cls, "type", cls.__name__)
        raise ConfigError(f"component {name} has type {config.component(name).type}; a {wanted} component is needed")
    return component


def for_snapshot(config: Config, name: str, section: dict[str, Any], hosts: Inventory) -> Component:
    """Component ``name`` of a snapshot whose manifest ``section`` records it: as configured when
    the configuration names it with the same type (``build``); otherwise (no longer configured)
    its class's ``unconfigured`` from the section, on the local host."""
    configured = config.components.get(name)
    if configured is not None and configured.type == section["type"]:
        return build(config, name, hosts)
    return component_class(section["type"]).unconfigured(name, section, hosts.local())


def temporary_name_folders(config: Config) -> list[Path]:
    """The folders on this machine where the configured components write files under
    per-process temporary names (``Component.temporary_name_folders``, under each one's
    ``path``): what ``state.temporaries.sweep`` is given to clean after a kill. Components on
    other hosts are left out (whether a pid there is alive is not judged from here)."""
    folders = []
    for section in config.components.values():
        where: Any = section
        # such folders are under the component's ``path``: a type without one (a database,
        # containers) names none, and its module (psycopg's users, the Docker SDK's) stays unimported
        if section.host != "local" or getattr(where, "path", None) is None:
            continue
        folders += [Path(where.path) / sub for sub in component_class(section.type).temporary_name_folders]
    return folders
