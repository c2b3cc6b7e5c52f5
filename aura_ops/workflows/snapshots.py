"""Backup, verify, restore and delete: the snapshot commands across components.

A backup or a restore is ``components.snapshotting`` (build the snapshot in ``<id>.partial/``,
check it, commit by rename; or put components back) run under the repository lock, with SIGTERM
turned into an exception (so a partial snapshot is discarded) and what killed processes left
swept first. Anything that fails on the way discards the partial folder; a killed process leaves
it for the next run to clean, never listed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aura_ops import checksum, logs
from aura_ops import components as registry
from aura_ops.components import snapshotting
from aura_ops.components.base import Component
from aura_ops.config import Config
from aura_ops.errors import Interrupted, UsageError, VerificationError
from aura_ops.hosts import local_hostname
from aura_ops.hosts.inventory import Inventory
from aura_ops.repository import MANIFEST, Repository, Snapshot, new_snapshot_id
from aura_ops.repository.space import Guard
from aura_ops.repository.verified import VerifiedCache
from aura_ops.state import temporaries


@contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGTERM into an exception so cleanup (discard partial, release lock) always runs.

    Only where nobody handles SIGTERM yet: inside a run, the engine's own handler stays in
    charge (its interruption goes through unchanged, so the run is compensated, never retried
    or continued past as if the step had merely failed)."""
    if (
        signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        raise Interrupted(f"interrupted by {signal.Signals(signum).name}; nothing was committed")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except Interrupted:  # SIGTERM, from the handler above
        raise
    except KeyboardInterrupt:
        raise Interrupted("interrupted by SIGINT; nothing was committed") from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def repository(config: Config) -> Repository:
    """The configured repository (``snapshotting.repository``)."""
    return snapshotting.repository(config)


def backup(
    config: Config,
    components: list[str] | None = None,
    tags: list[str] | None = None,
    run_id: str | None = None,
    hosts: Inventory | None = None,
    guard: Guard | None = None,
) -> Snapshot:
    """Snapshot the selected components (on their hosts from ``hosts``, by default the
    configuration's inventory) into a new sealed snapshot; return it (``snapshotting.take``,
    under the repository lock, with SIGTERM turned into a discard). ``guard``: the free-space
    guard (``workflows.space.guard``: the configured reserve); None checks nothing."""
    chosen = snapshotting.build(config, components, hosts or Inventory(config))
    repo = repository(config)
    run_id = run_id or new_snapshot_id()
    with (
        logs.bind(run_id=run_id, host=local_hostname()),
        interruptible(),
        repo.locked(run_id, "backup"),
        temporaries.bound(config),
    ):
        temporaries.sweep(config, registry.temporary_name_folders(config))
        return snapshotting.take(repo, chosen, tags, guard=guard)


def _verified_cache(repo: Repository) -> VerifiedCache:
    return VerifiedCache(repo.path / "cache" / "verified-files.json")


def listing(
    config: Config,
    hosts: Inventory | None = None,
    repo: Repository | None = None,
    loaded: Sequence[Snapshot] | None = None,
    remember: bool = False,
) -> list[Snapshot]:
    """Every sealed snapshot (of ``repo``, else the configured repository; ``loaded``: its
    ``all_snapshots()`` already read), each marked ``damaged`` (with the reason) when its
    manifest or a component's stored part (``Component.damage``, components on their hosts from
    ``hosts``) cannot be trusted; one damaged snapshot does not stop the others. The repository
    is listed once and each manifest read once. ``remember`` (``snapshots list`` and ``stats``,
    which keep their sizes cache in the repository too): what a damage check hashed and found
    sealed is saved in the verified cache, and the entries of deleted snapshots dropped, so that
    a stored file is hashed again only when it changed; otherwise nothing is written (a prune's
    plan, a dry run, change nothing in the repository)."""
    repo = repo or repository(config)
    hosts = hosts or Inventory(config)
    cache = _verified_cache(repo)
    known = len(cache.entries)
    built: dict[str, Component] = {}  # one configured component a name, not one a snapshot
    found = []
    for snapshot in repo.all_snapshots() if loaded is None else loaded:
        damage = snapshot.damaged
        for name, entry in snapshot.manifest.get("components", {}).items():
            if damage is None:
                damage = _judge(config, name, entry, hosts, built).damage(snapshot, cache)
        found.append(snapshot if damage == snapshot.damaged else dataclasses.replace(snapshot, damaged=damage))
    if not remember:
        return found
    trimmed = cache.keep_only_used()  # (every sealed snapshot was looked at: the rest are gone)
    if trimmed or len(cache.entries) != known:
        with contextlib.suppress(OSError):  # a read-only repository is still listed, only hashed each time
            cache.save()
    return found


def _judge(
    config: Config, name: str, entry: dict[str, Any], hosts: Inventory, built: dict[str, Component]
) -> Component:
    """``registry.for_snapshot``, built once a name while the configuration has it with the
    section's type (then the section plays no part in it)."""
    configured = config.components.get(name)
    if configured is None or configured.type != entry.get("type"):
        return registry.for_snapshot(config, name, entry, hosts)
    if name not in built:
        built[name] = registry.for_snapshot(config, name, entry, hosts)
    return built[name]


class VerifyFailed(VerificationError):
    """Verification found problems; ``report`` lists every one (``report["problems"]``)."""

    def __init__(self, report: dict[str, Any]) -> None:
        self.report = report
        problems = report["problems"]
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        super().__init__(f"snapshot {report['snapshot']}: {count}: {shown}")


def verify(
    config: Config,
    reference: str,
    deep: bool = False,
    components: list[str] | None = None,
    hosts: Inventory | None = None,
) -> dict[str, Any]:
    """Verify artifact checksums (and more, per component). Every problem found is collected;
    VerifyFailed (exit 3) carries the report listing them all. A damaged manifest is
    VerificationError at once. A component's own ``verify`` runs when its artifacts pass (or
    always, ``verify_when_artifacts_fail``); its ``damage`` check then records what it found
    sealed in the repository's verified cache, for ``listing``."""
    repo = repository(config)
    snapshot = repo.get(reference)
    hosts = hosts or Inventory(config)
    report: dict[str, Any] = {"snapshot": snapshot.id, "deep": deep, "components": {}, "problems": []}
    cache = _verified_cache(repo)
    with logs.bind(snapshot=snapshot.id), temporaries.bound(config):
        for name, entry in snapshot.manifest["components"].items():
            if components and name not in components:
                continue
            with logs.bind(component=name):
                kind = registry.component_class(entry["type"])
                problems = _artifact_problems(snapshot, name, entry)
                result: dict[str, Any] = {}
                if not problems or kind.verify_when_artifacts_fail:
                    try:
                        component = registry.for_snapshot(config, name, entry, hosts)
                        result = {"artifacts_verified": len(entry.get("artifacts", {}))}
                        result |= component.verify(snapshot, deep)
                        damage = None if problems else component.damage(snapshot, cache)
                    except VerificationError as exc:
                        problems.append(str(exc))
                    else:
                        problems.extend([damage] if damage else [])
                problems.extend(result.pop("problems", []))
                problems.extend(_extra_in_component(snapshot, name, entry, kind.stored_entries))
                report["components"][name] = result
                report["problems"].extend(problems)
        if not components:
            report["problems"].extend(_extra_in_snapshot(snapshot))
    cache.save()
    if report["problems"]:
        logs.get().error("snapshot.verify_failed", snapshot=snapshot.id, problems=len(report["problems"]))
        raise VerifyFailed(report)
    logs.get().info("snapshot.verified", snapshot=snapshot.id, deep=deep)
    return report


def _extra_in_snapshot(snapshot: Snapshot) -> list[str]:
    """Names in the snapshot's folder that are neither its manifest nor one of its components."""
    expected = {MANIFEST, *snapshot.manifest["components"]}
    return [
        f"{name}: in the snapshot folder but not in the manifest"
        for name in sorted(entry.name for entry in snapshot.path.iterdir())
        if name not in expected
    ]


def _extra_in_component(snapshot: Snapshot, name: str, entry: dict[str, Any], stored: frozenset[str]) -> list[str]:
    """Names in a component's folder that the manifest does not record (top level: its artifacts'
    and ``stored``, its type's ``stored_entries``, which its own verify checks)."""
    folder = snapshot.component_dir(name)
    if not folder.is_dir():
        return []
    expected = {artifact.split("/", 1)[0] for artifact in entry.get("artifacts", {})} | stored
    return [
        f"{name}: {extra}: in the component folder but not in the manifest"
        for extra in sorted(item.name for item in folder.iterdir())
        if extra not in expected
    ]


def _artifact_problems(snapshot: Snapshot, name: str, entry: dict[str, Any]) -> list[str]:
    """Each artifact the manifest records for component ``name`` that is missing or whose
    checksum differs (every one hashed)."""
    algorithm = snapshot.manifest.get("checksum_algorithm", checksum.ALGORITHM)
    problems = []
    for artifact, info in entry.get("artifacts", {}).items():
        path = snapshot.component_dir(name) / artifact
        if not path.is_file():
            problems.append(f"{name}: {artifact}: missing")
            continue
        if checksum.file_digest(path, algorithm)[0] != info["hash"]:
            problems.append(f"{name}: {artifact}: checksum mismatch")
    return problems


def restore(
    config: Config,
    reference: str | Snapshot,
    components: list[str] | None = None,
    to_database: str | None = None,
    to_path: Path | None = None,
    dry_run: bool = False,
    with_globals: bool = False,
    run_id: str | None = None,
    replace: bool = True,
    globals_overwrite: bool = False,
    files_replace: list[str] | None = None,
    hosts: Inventory | None = None,
) -> dict[str, Any]:
    """Put a snapshot back, in place or to a new database / path. ``replace`` False: a database
    restore that would replace data (the live database, a non-empty one) is refused, exit 2
    (the caller did not get consent for it). ``files_replace``: the components restored to a
    folder (``restore_to == "path"``) whose folder may hold something when it is replaced (None:
    all); any other must still be empty just before the swap, else exit 2 with nothing changed.
    What is restored where is ``snapshotting.plan_restore`` (refusals before the lock is taken).
    ``reference``: an id, a prefix or ``latest``, or the snapshot the caller has already read."""
    repo = repository(config)
    snapshot = reference if isinstance(reference, Snapshot) else repo.get(reference)
    if snapshot.damaged:  # (a Snapshot read by ``load``, which does not raise): refused as ``get`` does
        raise VerificationError(snapshot.damaged)
    # a snapshot read before a prompt may have been deleted while it waited: refused as unknown,
    # as a second read found it before, not half-restored as a missing artifact (exit 3)
    repo.require_sealed(snapshot.id)
    run_id = run_id or new_snapshot_id()
    requests = snapshotting.plan_restore(
        config,
        snapshot,
        hosts or Inventory(config),
        components,
        to_database,
        to_path,
        dry_run=dry_run,
        run_id=run_id,
        replace=replace,
        with_globals=with_globals,
        globals_overwrite=globals_overwrite,
        files_replace=files_replace,
    )
    report: dict[str, Any] = {"snapshot": snapshot.id, "dry_run": dry_run, "components": {}}
    with (
        logs.bind(run_id=run_id, snapshot=snapshot.id),
        interruptible(),
        repo.locked(run_id, "restore"),
        temporaries.bound(config),
    ):
        repo.require_sealed(snapshot.id)  # (and not deleted since: under the lock, no delete follows)
        temporaries.sweep(config, registry.temporary_name_folders(config))
        if not dry_run and len(requests) > 1:
            _check_before_restoring(snapshot, requests[1:])
        report["components"] = snapshotting.restore(snapshot, requests)
    return report


def _check_before_restoring(snapshot: Snapshot, requests: list[tuple[Component, Any]]) -> None:
    """Several components are put in place one after the other, each checking its artifacts as
    it uses them: a bad artifact of a later one was found once an earlier one had replaced its
    target (the database restored, the files not). So every component after the first is checked
    in full first, before any target is touched: its artifacts hashed, then a dry run of its
    restore (which checks each stored file it would use). VerificationError (exit 3) names what
    is missing or changed. (The only case where a snapshot's files are read twice.)"""
    for component, request in requests:
        with logs.bind(component=component.name):
            entry = snapshot.manifest["components"][component.name]
            problems = _artifact_problems(snapshot, component.name, entry)
            if problems:
                raise VerificationError(f"{'; '.join(problems)} in snapshot {snapshot.id}: nothing was restored")
            component.restore(snapshot, dataclasses.replace(request, dry_run=True))


def refuse_if_pinned(repo: Repository, snapshot_id: str) -> None:
    """UsageError (exit 2) when the snapshot is pinned: a pin is the user's "never delete this",
    so a delete (even with ``--yes``, from a script) asks for the unpin first."""
    if snapshot_id in repo.pinned():
        raise UsageError(
            f"snapshot {snapshot_id} is pinned; nothing was deleted (`aura-ops snapshots unpin {snapshot_id}` first)"
        )


def delete(config: Config, reference: str, run_id: str | None = None) -> str:
    """Delete a sealed snapshot under the repository lock; UsageError when it is pinned."""
    repo = repository(config)
    snapshot_id = repo.resolve(reference)
    run_id = run_id or new_snapshot_id()
    with logs.bind(run_id=run_id), repo.locked(run_id, "delete"), temporaries.bound(config):
        temporaries.sweep(config, registry.temporary_name_folders(config))
        refuse_if_pinned(repo, snapshot_id)  # (pins change under this lock only)
        repo.delete(snapshot_id)
    logs.get().info("snapshot.deleted", snapshot=snapshot_id)
    return snapshot_id


def age_seconds(snapshot: Snapshot) -> float:
    created = dt.datetime.fromisoformat(snapshot.manifest["created"])
    return (dt.datetime.now(dt.UTC) - created).total_seconds()
