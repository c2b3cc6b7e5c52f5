"""The first line of every command that changes something: which configuration file it read and
what it is about to change, so that a restore meant for staging cannot silently run against
production. Printed on stderr (``--json`` keeps stdout one document); resolving a target never
connects anywhere and never fails: what cannot be resolved is said as such.

Components are described through their protocol (``describe``, ``describe_restore``), on their
hosts from the command's inventory (``hosts``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from aura_ops.components import build, build_as, for_snapshot
from aura_ops.config import Config
from aura_ops.errors import ConfigError
from aura_ops.hosts.inventory import Inventory
from aura_ops.secrets import mask

if TYPE_CHECKING:
    from aura_ops.components.release import ReleaseComponent


def line(config: Config, doing: str) -> str:
    return mask(f"aura-ops: config {config.source or 'given'}, {doing}")


def component(config: Config, name: str, hosts: Inventory) -> str:
    """What a component names on its host: a database, a folder, a release folder, containers."""
    if name not in config.components:
        return "not in this configuration"
    return build(config, name, hosts).describe()


def backup(config: Config, names: list[str], hosts: Inventory) -> str:
    parts = [f"{n} ({component(config, n, hosts)})" for n in names]
    return f"backing up {', '.join(parts)} into repository {config.repository.path}"


def restore(
    config: Config,
    snapshot_id: str,
    entries: dict[str, Any],
    to_database: str | None,
    to_path: Path | None,
    hosts: Inventory,
) -> str:
    """``entries``: the snapshot manifest's components that will be restored."""
    parts = []
    for name, entry in entries.items():
        restored = for_snapshot(config, name, entry, hosts)
        to = {"database": to_database, "path": to_path}.get(restored.restore_to or "")
        parts.append(f"{name} {restored.describe_restore(entry, None if to is None else str(to))}")
    return f"restoring snapshot {snapshot_id} from repository {config.repository.path}: {', '.join(parts)}"


def _only(config: Config, kind: str, chosen: str | None, what: str) -> str | None:
    """The deploy's component for ``what`` (``Config.only``), or None when there is none or the
    configuration names a wrong one (the deploy itself then says why)."""
    try:
        return config.only(kind, chosen, what)
    except ConfigError:
        return None


def _release(config: Config, hosts: Inventory) -> ReleaseComponent | None:
    from aura_ops.components.release import ReleaseComponent  # only a deploy or rollback needs it

    name = _only(config, "release", config.deploy.release, "release")
    return None if name is None else build_as(config, name, hosts, ReleaseComponent)


def deploy(config: Config, version: str, source: Path | None, hosts: Inventory) -> str:
    release = _release(config, hosts)
    into = release.releases if release is not None else "no release component"
    parts = [f"deploying release {version} from {source or '<source>'} into {into}"]
    database = _only(config, "postgres", config.deploy.database, "database")
    if database:
        parts.append(f"migrating {component(config, database, hosts)}")
    services = _only(config, "docker", config.deploy.services, "services")
    if services:
        parts.append(f"restarting {component(config, services, hosts)}")
    return ", ".join(parts)


def rollback(config: Config, target: dict[str, Any], hosts: Inventory) -> str:
    """``target``: deployer.rollback_plan's answer."""
    release = _release(config, hosts)
    text = f"rolling back {release.path if release is not None else 'the release'} to release {target['release']}"
    if target.get("restore_data") == "yes":
        return f"{text}, restoring {component(config, target['database'], hosts)} from snapshot {target['snapshot']}"
    return f"{text}, database left as it is" if target.get("database") else text
