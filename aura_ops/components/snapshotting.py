"""Taking a snapshot of components into a repository, and putting one back: the core that the
``backup``/``restore`` workflows and the engine's ``snapshot``/``restore`` actions share.

It sits below both (it knows only the ``Component`` protocol and the ``Repository``), so that an
action never calls a workflow. What each caller adds around it:

- a workflow (``workflows.snapshots``): SIGTERM turned into an exception, the repository lock,
  the temporaries registry and its sweep, then this core;
- an action (``engine.actions.snapshot``, ``engine.actions.database``): the repository lock, then
  this core; the engine already holds its run lock, its signal handling and the temporaries.

Every function here expects the repository locked by its caller (``Repository.locked``).
"""

from __future__ import annotations

import datetime as dt
import errno
import time
from pathlib import Path
from typing import Any

from aura_ops import __version__, checksum, components, logs
from aura_ops.components.base import Component, RestoreRequest, SnapshotTarget
from aura_ops.components.manifests import section_problem
from aura_ops.config import Config
from aura_ops.errors import (
    EXIT_FAILED,
    AuraError,
    Interrupted,
    PartlyRestored,
    UsageError,
    VerificationError,
    first_line,
)
from aura_ops.hosts import local_hostname
from aura_ops.hosts.inventory import Inventory
from aura_ops.repository import FORMAT, Repository, Snapshot, new_snapshot_id, space


def repository(config: Config) -> Repository:
    """The configured repository, each snapshot's component sections checked by their models."""
    return Repository(config.repository.path, validate=section_problem)


def build(config: Config, names: list[str] | None, hosts: Inventory) -> list[Component]:
    """The configured components ``names`` (None: all) to snapshot; ConfigError for a name not
    configured, UsageError when there is none."""
    chosen = [components.build(config, name, hosts) for name in names or list(config.components)]
    if not chosen:
        raise UsageError("no components configured: add some under 'components' in the config")
    return chosen


def take(
    repo: Repository, components: list[Component], tags: list[str] | None = None, guard: space.Guard | None = None
) -> Snapshot:
    """Remove the partial snapshots a killed run left, write a new snapshot of ``components``
    into ``<id>.partial/`` (one folder a component), check that every recorded artifact is there
    with its size, and commit it by rename; return it. Anything that fails on the way (an
    interruption too) discards the partial folder and is raised again (a full disk as AuraError).
    ``guard``: first refuse (space.NoRoom, exit 1, nothing written) a snapshot that would leave
    less than the reserve free (``space.check_room``)."""
    log = logs.get()
    repo.clean_partials()
    if guard is not None:
        space.check_room(repo, [(c.name, c.type) for c in components], guard)
    ids = repo.ids()
    snapshot_id = new_snapshot_id(after=ids[-1] if ids else None)
    partial = repo.begin(snapshot_id)
    started = time.monotonic()
    manifest = _header(snapshot_id, ids[-1] if ids else None, tags or [])
    log.info("backup.started", snapshot=snapshot_id, components=[c.name for c in components])
    try:
        for component in components:
            manifest["components"][component.name] = _snapshot_component(component, repo, partial)
        manifest["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        manifest["seconds"] = round(time.monotonic() - started, 3)
        manifest["size"] = _size_of(manifest)
        snapshot = repo.commit(snapshot_id, manifest)
    except BaseException as exc:
        repo.discard(snapshot_id)
        log.error("backup.discarded", snapshot=snapshot_id)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise AuraError(
                f"no space left on the device of {exc.filename or repo.path}; snapshot {snapshot_id} discarded"
            ) from None
        raise
    log.info("backup.sealed", snapshot=snapshot_id, seconds=manifest["seconds"], bytes=manifest["size"])
    return snapshot


def restore(snapshot: Snapshot, requests: list[tuple[Component, RestoreRequest]]) -> dict[str, Any]:
    """Restore each component of ``snapshot`` as its request says, in order; return each one's
    report by component name (with the ``seconds`` it took)."""
    report: dict[str, Any] = {}
    for index, (component, request) in enumerate(requests):
        with logs.bind(component=component.name, host=component.host.name):
            started = time.monotonic()
            try:
                result = component.restore(snapshot, request)
            except Interrupted as interrupt:  # (SIGTERM/SIGINT: its own class, its own exit)
                if report and not request.dry_run:  # not "nothing was committed": some were
                    left = [c.name for c, _ in requests[index:]]
                    signal_part = first_line(interrupt).split(";")[0]
                    raise Interrupted(_partly_text(snapshot, list(report), left, signal_part)) from None
                raise
            except Exception as error:
                reason: Exception = _os_error(component.name, error) if isinstance(error, OSError) else error
                if report and not request.dry_run:
                    left = [c.name for c, _ in requests[index:]]
                    raise _partly_restored(snapshot, list(report), left, reason) from error
                if reason is error:
                    raise
                raise reason from error
            result["seconds"] = round(time.monotonic() - started, 3)
            logs.get().info("component.restored", seconds=result["seconds"], dry_run=request.dry_run)
            report[component.name] = result
    return report


def _os_error(name: str, error: OSError) -> AuraError:
    """An OSError a component's restore let through (a rename the file system refused, a full
    disk) as one line naming the component and the paths, exit 1 (not an unexpected error)."""
    paths = " -> ".join(str(p) for p in (error.filename, error.filename2) if p is not None)
    return AuraError(f"{name}: {error.strerror or error}{': ' + paths if paths else ''}")


def _partly_restored(snapshot: Snapshot, done: list[str], left: list[str], error: Exception) -> PartlyRestored:
    """What a user reads when component ``left[0]`` failed after ``done`` were restored."""
    return PartlyRestored(
        _partly_text(snapshot, done, left, first_line(error)), getattr(error, "exit_code", EXIT_FAILED)
    )


def _partly_text(snapshot: Snapshot, done: list[str], left: list[str], why: str) -> str:
    options = " ".join(f"--component {name}" for name in left)
    return (
        f"{left[0]} was not restored: {why}; {', '.join(done)} already "
        f"{'was' if len(done) == 1 else 'were'} restored from snapshot {snapshot.id} and "
        f"{', '.join(left)} {'is' if len(left) == 1 else 'are'} as before (each whole, but from different times): "
        f"once the cause is fixed, finish with `aura-ops restore {snapshot.id} {options}` and the same options"
    )


def plan_restore(
    config: Config,
    snapshot: Snapshot,
    hosts: Inventory,
    names: list[str] | None = None,
    to_database: str | None = None,
    to_path: Path | None = None,
    *,
    dry_run: bool = False,
    run_id: str = "",
    replace: bool = True,
    with_globals: bool = False,
    globals_overwrite: bool = False,
    files_replace: list[str] | None = None,
) -> list[tuple[Component, RestoreRequest]]:
    """Each component of ``snapshot`` to restore (``names``, else all) with its request (read-only):
    ``to_database``/``to_path`` go to the one component taking that option (``restore_to``), a
    folder target resolved and checked (``components.targets``); ``replace`` is the consent for a
    database target, ``files_replace`` the folder targets consented to (None: all). UsageError
    (exit 2) for a component the snapshot lacks, a misused option or a refused folder."""
    available = list(snapshot.manifest["components"])
    names = names or available
    for name in names:
        if name not in available:
            raise UsageError(f"snapshot {snapshot.id} has no component {name!r} (it has: {', '.join(available)})")
    _check_targets(snapshot, names, to_database, to_path)
    paths = {t["component"]: t["target"] for t in files_targets(config, snapshot, names, to_path, False, hosts)}
    requests = []
    for name in names:
        component = components.for_snapshot(config, name, snapshot.manifest["components"][name], hosts)
        to = {"path": paths.get(name), "database": to_database}.get(component.restore_to or "")
        consent = files_replace is None or name in files_replace if component.restore_to == "path" else replace
        request = RestoreRequest(
            to=None if to is None else str(to),
            dry_run=dry_run,
            replace=consent,
            run_id=run_id,
            with_globals=with_globals,
            globals_overwrite=globals_overwrite,
        )
        requests.append((component, request))
    return requests


def _takes(snapshot: Snapshot, name: str, option: str) -> bool:
    """Whether the snapshot's component ``name`` is restored elsewhere by ``--to-<option>``."""
    return components.component_class(snapshot.manifest["components"][name]["type"]).restore_to == option


def files_targets(
    config: Config,
    snapshot: Snapshot,
    names: list[str],
    to_path: Path | None,
    count: bool = True,
    hosts: Inventory | None = None,
) -> list[dict[str, Any]]:
    """For each component to restore into a folder (``restore_to == "path"``): its resolved
    target, whether it is in place, and (``count``) how many entries it holds now, which a restore
    replaces. UsageError (exit 2) when a target is refused (see ``components.targets``)."""
    hosts = hosts or Inventory(config)
    found = []
    for name in names:
        entry = snapshot.manifest["components"].get(name)
        if entry is None or not _takes(snapshot, name, "path"):
            continue
        from aura_ops.components import targets  # (the files component's: not for a database's restore)

        component = components.for_snapshot(config, name, entry, hosts)
        if to_path is None:
            target = targets.check_in_place(component.host, entry, config, local=hosts.local())
        else:
            target = targets.check(component.host, to_path, config, to_path=True, local=hosts.local())
        entries = 0
        if count:
            found_target = component.restore_target(snapshot, RestoreRequest(to=str(target)))
            entries = found_target.details["entries"] if found_target else 0
        found.append({"component": name, "target": target, "in_place": to_path is None, "entries": entries})
    return found


def database_targets(
    config: Config, snapshot: Snapshot, names: list[str], to_database: str | None, hosts: Inventory | None = None
) -> list[tuple[str, Any]]:
    """(component, ``RestoreTarget``) for each component a restore of ``names`` would write into
    a database (``restore_to == "database"``): what is there now and whether it would be replaced
    (read-only). UsageError for a target that must not be used (``pgdatabase.inspect_target``)
    or a component no longer configured."""
    _check_targets(snapshot, names, to_database, None)
    hosts = hosts or Inventory(config)
    found = []
    for name in names:
        if not _takes(snapshot, name, "database"):
            continue
        component = components.for_snapshot(config, name, snapshot.manifest["components"][name], hosts)
        found.append((name, component.restore_target(snapshot, RestoreRequest(to=to_database))))
    return found


def _check_targets(snapshot: Snapshot, names: list[str], to_database: str | None, to_path: Path | None) -> None:
    if to_database is not None and not to_database.strip():
        raise UsageError("--to-database needs a database name; it was empty")
    if to_database and sum(_takes(snapshot, n, "database") for n in names) != 1:
        raise UsageError("--to-database needs exactly one postgres component (use --component)")
    if to_path and sum(_takes(snapshot, n, "path") for n in names) != 1:
        raise UsageError("--to-path needs exactly one files component (use --component)")


def _header(snapshot_id: str, parent: str | None, tags: list[str]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "id": snapshot_id,
        "host": local_hostname(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "aura_version": __version__,
        "tags": tags,
        "parent": parent,
        "checksum_algorithm": checksum.ALGORITHM,
        "components": {},
    }


def _snapshot_component(component: Component, repo: Repository, partial: Path) -> dict[str, Any]:
    name = component.name
    with logs.bind(component=name, host=component.host.name):
        folder = partial / name
        component.store.mkdir(str(folder), mode=0o700)
        started = time.monotonic()
        previous = repo.latest_with(name, component.type, lambda snapshot: _usable(component, snapshot))
        entry = component.snapshot(SnapshotTarget(partial.stem, folder, previous)).section()
        entry["seconds"] = round(time.monotonic() - started, 3)
        _check_artifacts(component, folder, entry)
        logs.get().info("component.snapshotted", seconds=entry["seconds"])
        return entry


def _usable(component: Component, snapshot: Snapshot) -> bool:
    """A previous snapshot whose part of this component is damaged is skipped as its base."""
    damage = component.damage(snapshot)
    if damage:
        logs.get().warning("snapshot.damaged_skipped", snapshot=snapshot.id, reason=damage)
    return damage is None


def _check_artifacts(component: Component, folder: Path, entry: dict[str, Any]) -> None:
    """Before commit: every recorded artifact exists (on the store) with its recorded size."""
    name = component.name
    for artifact, info in entry.get("artifacts", {}).items():
        found = component.store.stat(str(folder / artifact), follow_symlinks=False)
        if found is None:
            raise VerificationError(f"{name}: artifact {artifact} is missing")
        size = found.size
        if size != info["size"]:
            raise VerificationError(f"{name}: artifact {artifact} has {size} bytes, recorded {info['size']}")


def _size_of(manifest: dict[str, Any]) -> int:
    """Bytes the snapshot stored: its artifacts, and what a section copied beside them
    (``copied_bytes``: a files tree's new files; hard-linked ones are counted where first stored)."""
    total = 0
    for entry in manifest["components"].values():
        total += sum(info["size"] for info in entry.get("artifacts", {}).values())
        total += entry.get("copied_bytes", 0)
    return total
