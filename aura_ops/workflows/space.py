"""The repository's space as the commands show it: each snapshot's own and shared size
(``snapshots list``), the totals (``snapshots stats``), and the free-space guard a snapshot is
taken under (its reserve from the configuration, and what a prune would free when it refuses).

The counting is ``repository.space``; what a prune would delete is the retention plan
(``workflows.retention.plan``): this module joins the two with the configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aura_ops.components import snapshotting
from aura_ops.config import Config
from aura_ops.errors import first_line
from aura_ops.repository import Repository, Snapshot, space

if TYPE_CHECKING:
    from aura_ops.state.journal import Journal

NO_RETENTION = (
    "no retention configured: set `retention:` in the config or delete snapshots (`aura-ops snapshots delete ID`)"
)


def sizes(repo: Repository, snapshots: Sequence[Snapshot]) -> dict[str, space.Usage]:
    """Each snapshot's own and shared size by id (cached: see ``repository.space``)."""
    return space.usage(repo, snapshots)


def prune_would_free(
    config: Config, repo: Repository, journal: Journal | None = None, loaded: list[Snapshot] | None = None
) -> dict[str, Any]:
    """What ``snapshots prune`` would delete now and the bytes that frees: ``configured``,
    ``snapshots`` (ids) and ``bytes``; ``error`` when the plan cannot be made (a release host
    unreachable, ...). ``loaded``: ``repo.all_snapshots()``, when the caller has just read it."""
    if not config.retention.retention().configured:
        return {"configured": False, "snapshots": [], "bytes": 0}
    from aura_ops.workflows import retention  # (the engine and the journal: only when a policy is set)

    opened = None
    try:
        if journal is None:
            journal = opened = retention.open_journal_if_any(config)
        doomed = retention.plan(config, repo, journal, loaded=loaded).deleted
        return {"configured": True, "snapshots": doomed, "bytes": space.freed_by(repo.backend, doomed)}
    except Exception as exc:  # noqa: BLE001 - advice only: never hides the refusal or the stats it goes with
        return {"configured": True, "snapshots": [], "bytes": 0, "error": first_line(exc)}
    finally:
        if opened is not None:
            opened.close()


def making_room(config: Config, repo: Repository, journal: Journal | None = None) -> str:
    """The guard's advice: what ``snapshots prune`` would free, or why it would not help."""
    prune = prune_would_free(config, repo, journal)
    if not prune["configured"]:
        return NO_RETENTION
    if prune.get("error"):
        return f"what `aura-ops snapshots prune` would free is unknown ({prune['error']})"
    if not prune["snapshots"]:
        return "`aura-ops snapshots prune` would delete nothing (the retention policy keeps every snapshot)"
    count = len(prune["snapshots"])
    return (
        f"`aura-ops snapshots prune` would free {space.human(prune['bytes'])} "
        f"({count} snapshot{'s' if count > 1 else ''})"
    )


def guard(config: Config, repo: Repository, journal: Journal | None = None) -> space.Guard:
    """The free-space guard a snapshot is taken under: the configured reserve, and the advice."""
    return space.Guard(config.repository.reserve_setting(), lambda: making_room(config, repo, journal))


def stats(
    config: Config,
    snapshots: Sequence[Snapshot],
    repo: Repository | None = None,
    loaded: list[Snapshot] | None = None,
) -> dict[str, Any]:
    """Totals per component (snapshots, own bytes, bytes on disk), the snapshots' total on disk
    (each file once), what a prune would free, the disk's free space and the reserve.
    ``snapshots``: the listing of ``repo`` (the configured repository by default); ``loaded``: its
    ``all_snapshots()`` that listing was made from (the prune's plan then reads nothing again)."""
    repo = repo or snapshotting.repository(config)
    usage = sizes(repo, snapshots)
    components: dict[str, dict[str, Any]] = {}
    for snapshot in snapshots:
        sections = snapshot.manifest.get("components") or {}
        for name, part in usage[snapshot.id].parts.items():
            kind = "manifest" if name == space.MANIFEST_PART else str((sections.get(name) or {}).get("type", "?"))
            row = components.setdefault(name, {"type": kind, "snapshots": 0, "own": 0, "shared": 0, "on_disk": 0})
            row["snapshots"] += 1
            row["own"] += part.own
            row["shared"] += part.shared
            row["on_disk"] += part.portion
    capacity = repo.backend.capacity()
    reserve = config.repository.reserve_setting()
    return {
        "repository": str(repo.path),
        "snapshots": len(snapshots),
        "components": components,
        "on_disk": sum(u.portion for u in usage.values()),
        "prune": prune_would_free(config, repo, loaded=loaded),
        "free": repo.free_bytes(),
        "capacity": capacity,
        "reserve": {"setting": str(config.repository.reserve), "bytes": reserve.of(capacity)},
    }
