"""Backup, verify, restore and delete: the snapshot engine across components.

A backup holds the repository lock, removes partial snapshots a killed run left behind, builds
the new snapshot in ``<id>.partial/`` (one folder a component), checks that every recorded
artifact is there with its size, and commits by rename. Anything that fails on the way discards
the partial folder; a killed process leaves it for the next run to clean, never listed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aura_ops import __version__, checksum, logs
from aura_ops import components as registry
from aura_ops.components import files
from aura_ops.components.base import Component, RestoreRequest, SnapshotTarget
from aura_ops.config import Config
from aura_ops.errors import AuraError, Interrupted, UsageError, VerificationError
from aura_ops.hosts import local_hostname
from aura_ops.hosts.inventory import Inventory
from aura_ops.repository import FORMAT, MANIFEST, Repository, Snapshot, new_snapshot_id
from aura_ops.state import temporaries
from aura_ops.workflows import manifests, targets


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
    return Repository(config.repository.path, validate=manifests.section_problem)


def _selected(config: Config, components: list[str] | None) -> list[str]:
    names = components or list(config.components)
    for name in names:
        config.component(name)
    if not names:
        raise UsageError("no components configured: add some under 'components' in the config")
    return names


def _check_artifacts(folder: Path, name: str, entry: dict[str, Any]) -> None:
    """Before commit: every recorded artifact exists with its recorded size."""
    for artifact, info in entry.get("artifacts", {}).items():
        path = folder / artifact
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise VerificationError(f"{name}: artifact {artifact} is missing") from None
        if size != info["size"]:
            raise VerificationError(f"{name}: artifact {artifact} has {size} bytes, recorded {info['size']}")


def backup(
    config: Config,
    components: list[str] | None = None,
    tags: list[str] | None = None,
    run_id: str | None = None,
    hosts: Inventory | None = None,
) -> Snapshot:
    """Snapshot the selected components (on their hosts from ``hosts``, by default the
    configuration's inventory) into a new sealed snapshot; return it."""
    names = _selected(config, components)
    hosts = hosts or Inventory(config)
    repo = repository(config)
    run_id = run_id or new_snapshot_id()
    log = logs.get()
    with (
        logs.bind(run_id=run_id, host=local_hostname()),
        interruptible(),
        repo.locked(run_id, "backup"),
        temporaries.bound(config),
    ):
        temporaries.sweep(config)
        repo.clean_partials()
        ids = repo.ids()
        snapshot_id = new_snapshot_id(after=ids[-1] if ids else None)
        partial = repo.begin(snapshot_id)
        started = time.monotonic()
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "id": snapshot_id,
            "host": local_hostname(),
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "aura_version": __version__,
            "tags": tags or [],
            "parent": ids[-1] if ids else None,
            "checksum_algorithm": checksum.ALGORITHM,
            "components": {},
        }
        log.info("backup.started", snapshot=snapshot_id, components=names)
        try:
            for name in names:
                manifest["components"][name] = _snapshot_component(registry.build(config, name, hosts), repo, partial)
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


def _snapshot_component(component: Component, repo: Repository, partial: Path) -> Any:
    name = component.name
    with logs.bind(component=name, host=component.host.name):
        folder = partial / name
        folder.mkdir(mode=0o700)
        started = time.monotonic()
        previous = repo.latest_with(name, component.type, _usable_previous(name, component.type))
        entry = component.snapshot(SnapshotTarget(partial.stem, folder, previous)).section()
        entry["seconds"] = round(time.monotonic() - started, 3)
        _check_artifacts(folder, name, entry)
        logs.get().info("component.snapshotted", seconds=entry["seconds"])
        return entry


def _usable_previous(name: str, kind: str) -> Any:
    """A previous files snapshot whose index is damaged is skipped (its lines are reused)."""
    if kind != "files":
        return None

    def usable(snapshot: Snapshot) -> bool:
        damage = files.index_damage(snapshot, name)
        if damage:
            logs.get().warning("snapshot.damaged_skipped", snapshot=snapshot.id, reason=damage)
        return damage is None

    return usable


def listing(config: Config) -> list[Snapshot]:
    """Every sealed snapshot, each marked ``damaged`` (with the reason) when its manifest or a
    files index cannot be trusted; one damaged snapshot does not stop the others."""
    repo = repository(config)
    cache = files.VerifiedCache(repo.path / "cache" / "verified-files.json")  # read, never saved here
    found = []
    for snapshot in repo.all_snapshots():
        damage = snapshot.damaged
        for name, entry in snapshot.manifest.get("components", {}).items():
            if damage is None and entry.get("type") == "files":
                damage = files.index_damage(snapshot, name, cache)
        found.append(dataclasses.replace(snapshot, damaged=damage))
    return found


def _size_of(manifest: dict[str, Any]) -> int:
    total = 0
    for entry in manifest["components"].values():
        total += sum(info["size"] for info in entry.get("artifacts", {}).values())
        if entry["type"] == "files":
            total += entry["copied_bytes"]
    return total


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
    VerificationError at once."""
    repo = repository(config)
    snapshot = repo.get(reference)
    hosts = hosts or Inventory(config)
    report: dict[str, Any] = {"snapshot": snapshot.id, "deep": deep, "components": {}, "problems": []}
    cache = files.VerifiedCache(repo.path / "cache" / "verified-files.json")
    with logs.bind(snapshot=snapshot.id), temporaries.bound(config):
        for name, entry in snapshot.manifest["components"].items():
            if components and name not in components:
                continue
            with logs.bind(component=name):
                problems = _artifact_problems(snapshot, name, entry, cache)
                result: dict[str, Any] = {}
                if not problems or entry["type"] == "files":  # files: report the tree's problems too
                    try:
                        component = registry.for_snapshot(config, name, entry, hosts)
                        result = {"artifacts_verified": len(entry.get("artifacts", {}))}
                        result |= component.verify(snapshot, deep)
                    except VerificationError as exc:
                        problems.append(str(exc))
                problems.extend(result.pop("problems", []))
                problems.extend(_extra_in_component(snapshot, name, entry))
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


def _extra_in_component(snapshot: Snapshot, name: str, entry: dict[str, Any]) -> list[str]:
    """Names in a component's folder that the manifest does not record (top level; a files
    component's tree is compared with its index by files.verify)."""
    folder = snapshot.component_dir(name)
    if not folder.is_dir():
        return []
    expected = {artifact.split("/", 1)[0] for artifact in entry.get("artifacts", {})}
    if entry["type"] == "files":
        expected.add(files.TREE)
    return [
        f"{name}: {extra}: in the component folder but not in the manifest"
        for extra in sorted(item.name for item in folder.iterdir())
        if extra not in expected
    ]


def _artifact_problems(snapshot: Snapshot, name: str, entry: dict[str, Any], cache: files.VerifiedCache) -> list[str]:
    algorithm = snapshot.manifest.get("checksum_algorithm", checksum.ALGORITHM)
    problems = []
    for artifact, info in entry.get("artifacts", {}).items():
        path = snapshot.component_dir(name) / artifact
        if not path.is_file():
            problems.append(f"{name}: {artifact}: missing")
            continue
        st = path.stat()
        digest = checksum.file_digest(path, algorithm)[0]
        if digest != info["hash"]:
            problems.append(f"{name}: {artifact}: checksum mismatch")
        elif artifact == files.INDEX:
            cache.entries[files.VerifiedCache.key(st)] = digest  # lets `snapshots list` skip it
    return problems


def restore(
    config: Config,
    reference: str,
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
    all); any other must still be empty just before the swap, else exit 2 with nothing changed."""
    repo = repository(config)
    snapshot = repo.get(reference)
    hosts = hosts or Inventory(config)
    available = list(snapshot.manifest["components"])
    names = components or available
    for name in names:
        if name not in available:
            raise UsageError(f"snapshot {snapshot.id} has no component {name!r} (it has: {', '.join(available)})")
    _check_targets(snapshot, names, to_database, to_path)
    paths = {t["component"]: t["target"] for t in files_targets(config, snapshot, names, to_path, False, hosts)}
    run_id = run_id or new_snapshot_id()
    report: dict[str, Any] = {"snapshot": snapshot.id, "dry_run": dry_run, "components": {}}
    with (
        logs.bind(run_id=run_id, snapshot=snapshot.id),
        interruptible(),
        repo.locked(run_id, "restore"),
        temporaries.bound(config),
    ):
        temporaries.sweep(config)
        for name in names:
            component = registry.for_snapshot(config, name, snapshot.manifest["components"][name], hosts)
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
            report["components"][name] = _restore_component(component, snapshot, request)
    return report


def _takes(snapshot: Snapshot, name: str, option: str) -> bool:
    """Whether the snapshot's component ``name`` is restored elsewhere by ``--to-<option>``."""
    return registry.component_class(snapshot.manifest["components"][name]["type"]).restore_to == option


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
    replaces. UsageError (exit 2) when a target is refused (see targets.py)."""
    hosts = hosts or Inventory(config)
    found = []
    for name in names:
        entry = snapshot.manifest["components"].get(name)
        if entry is None or not _takes(snapshot, name, "path"):
            continue
        component = registry.for_snapshot(config, name, entry, hosts)
        if to_path is None:
            target = targets.check_in_place(component.host, entry, config)
        else:
            target = targets.check(component.host, to_path, config, to_path=True)
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
        component = registry.for_snapshot(config, name, snapshot.manifest["components"][name], hosts)
        found.append((name, component.restore_target(snapshot, RestoreRequest(to=to_database))))
    return found


def _check_targets(snapshot: Snapshot, names: list[str], to_database: str | None, to_path: Path | None) -> None:
    if to_database is not None and not to_database.strip():
        raise UsageError("--to-database needs a database name; it was empty")
    if to_database and sum(_takes(snapshot, n, "database") for n in names) != 1:
        raise UsageError("--to-database needs exactly one postgres component (use --component)")
    if to_path and sum(_takes(snapshot, n, "path") for n in names) != 1:
        raise UsageError("--to-path needs exactly one files component (use --component)")


def _restore_component(component: Component, snapshot: Snapshot, request: RestoreRequest) -> dict[str, Any]:
    with logs.bind(component=component.name, host=component.host.name):
        started = time.monotonic()
        result = component.restore(snapshot, request)
        result["seconds"] = round(time.monotonic() - started, 3)
        logs.get().info("component.restored", seconds=result["seconds"], dry_run=request.dry_run)
        return result


def delete(config: Config, reference: str, run_id: str | None = None) -> str:
    repo = repository(config)
    snapshot_id = repo.resolve(reference)
    run_id = run_id or new_snapshot_id()
    with logs.bind(run_id=run_id), repo.locked(run_id, "delete"), temporaries.bound(config):
        temporaries.sweep(config)
        repo.delete(snapshot_id)
    logs.get().info("snapshot.deleted", snapshot=snapshot_id)
    return snapshot_id


def age_seconds(snapshot: Snapshot) -> float:
    created = dt.datetime.fromisoformat(snapshot.manifest["created"])
    return (dt.datetime.now(dt.UTC) - created).total_seconds()
