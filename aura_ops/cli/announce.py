"""The first line of every command that changes something: which configuration file it read and
what it is about to change, so that a restore meant for staging cannot silently run against
production. Printed on stderr (``--json`` keeps stdout one document); resolving a target never
connects anywhere and never fails: what cannot be resolved is said as such.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aura_ops.components import build
from aura_ops.config import Config, DockerConfig, FilesConfig, PostgresConfig, ReleaseConfig
from aura_ops.hosts.inventory import Inventory
from aura_ops.secrets import mask


def line(config: Config, doing: str) -> str:
    return mask(f"aura-ops: config {config.source or 'given'}, {doing}")


def database(config: Config, name: str, dbname: str | None = None) -> str:
    """``database shop on 127.0.0.1:5432`` for a postgres component (``dbname`` instead of its own)."""
    from aura_ops.components.postgres import PostgresComponent

    cfg = config.components.get(name)
    if not isinstance(cfg, PostgresConfig):
        return f"database {dbname or name}"
    return PostgresComponent(name, cfg, Inventory(config).for_component(name)).describe(dbname)


def component(config: Config, name: str) -> str:
    """What a component names on its host: a database, a folder, a release folder, containers."""
    cfg = config.components.get(name)
    if isinstance(cfg, PostgresConfig | DockerConfig):
        return str(build(config, name, Inventory(config)).describe())
    if isinstance(cfg, FilesConfig):
        return f"files {cfg.path}"
    if isinstance(cfg, ReleaseConfig):
        return f"releases in {cfg.path}"
    return "not in this configuration"


def backup(config: Config, names: list[str]) -> str:
    parts = [f"{n} ({component(config, n)})" for n in names]
    return f"backing up {', '.join(parts)} into repository {config.repository.path}"


def restore(
    config: Config, snapshot_id: str, entries: dict[str, Any], to_database: str | None, to_path: Path | None
) -> str:
    """``entries``: the snapshot manifest's components that will be restored."""
    parts = []
    for name, entry in entries.items():
        kind = entry.get("type")
        if kind == "postgres":
            parts.append(f"{name} into {database(config, name, to_database)}")
        elif kind == "files":
            parts.append(f"{name} into {to_path or entry.get('source')}")
        elif kind == "release":
            parts.append(f"{name} into {entry.get('path')} (current -> {entry.get('current')})")
        else:
            parts.append(f"{name} (recorded only, not restored)")
    return f"restoring snapshot {snapshot_id} from repository {config.repository.path}: {', '.join(parts)}"


def _only(config: Config, kind: str, chosen: str | None) -> str | None:
    names = [chosen] if chosen else [n for n, c in config.components.items() if c.type == kind]
    return names[0] if len(names) == 1 and names[0] in config.components else None


def deploy(config: Config, version: str, source: Path | None) -> str:
    release_name = _only(config, "release", config.deploy.release)
    cfg = config.components.get(release_name or "")
    into = f"{cfg.path}/releases" if isinstance(cfg, ReleaseConfig) else "no release component"
    parts = [f"deploying release {version} from {source or '<source>'} into {into}"]
    database_name = _only(config, "postgres", config.deploy.database)
    if database_name:
        parts.append(f"migrating {database(config, database_name)}")
    services = _only(config, "docker", config.deploy.services)
    if services:
        parts.append(f"restarting {component(config, services)}")
    return ", ".join(parts)


def rollback(config: Config, target: dict[str, Any]) -> str:
    """``target``: deployer.rollback_plan's answer."""
    release_name = _only(config, "release", config.deploy.release)
    cfg = config.components.get(release_name or "")
    where = cfg.path if isinstance(cfg, ReleaseConfig) else "the release"
    text = f"rolling back {where} to release {target['release']}"
    if target.get("restore_data") == "yes":
        return f"{text}, restoring {database(config, target['database'])} from snapshot {target['snapshot']}"
    return f"{text}, database left as it is" if target.get("database") else text
