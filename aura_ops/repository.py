"""The snapshot repository: a local folder of sealed snapshots.

Layout::

    <repo>/lock                      the repository lock (lock.py)
    <repo>/snapshots/<id>.partial/   a snapshot being written: never listed, restored or counted
    <repo>/snapshots/<id>/           a sealed snapshot: manifest.json plus one folder a component

A snapshot is built in ``<id>.partial/``, checked, synced to disk, then renamed: the rename is
the commit. Folders are 0700 and files 0600.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aura_ops import lock, logs
from aura_ops.checksum import fsync_dir
from aura_ops.errors import AuraError, UsageError

PARTIAL = ".partial"
MANIFEST = "manifest.json"
FORMAT = 1


MIN_PREFIX = 4
WILDCARDS = frozenset("%_*?[]")


def check_prefix(reference: str, what: str) -> None:
    """UsageError unless ``reference`` can name one id by prefix: at least MIN_PREFIX
    characters and no wildcard (an empty or ``%`` reference must never match every id)."""
    if len(reference) < MIN_PREFIX or WILDCARDS & set(reference) or reference != reference.strip():
        raise UsageError(
            f"{what} {reference!r}: give the full id or a unique prefix of at least {MIN_PREFIX} characters"
            " without wildcards" + (" (or latest)" if what.startswith("snapshot") else "")
        )


def _format_id(moment: dt.datetime) -> str:
    return moment.strftime("%Y%m%d-%H%M%S-") + f"{moment.microsecond // 1000:03d}"


def new_snapshot_id(after: str | None = None) -> str:
    """A snapshot id that sorts by time (UTC, milliseconds) and comes after ``after``."""
    now = dt.datetime.now(dt.UTC)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)
    if after:
        try:
            last = dt.datetime.strptime(after[:15], "%Y%m%d-%H%M%S").replace(
                tzinfo=dt.UTC, microsecond=int(after[16:19]) * 1000
            )
        except ValueError:
            last = None
        if last is not None and now <= last:
            now = last + dt.timedelta(milliseconds=1)
    return _format_id(now)


def _syncfs(path: Path) -> None:
    """Flush every dirty page of the filesystem holding ``path`` (one call, not one per file)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file, fsync, rename), mode 0600."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2, sort_keys=True)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


@dataclass(frozen=True)
class Snapshot:
    """A sealed snapshot: its folder and its manifest."""

    id: str
    path: Path
    manifest: dict[str, Any]

    def component_dir(self, name: str) -> Path:
        return self.path / name


class Repository:
    """A local folder of snapshots (see module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.snapshots_dir = path / "snapshots"

    def ensure(self) -> None:
        for folder in (self.path, self.snapshots_dir):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(folder, 0o700)

    @contextlib.contextmanager
    def locked(self, run_id: str, command: str) -> Iterator[None]:
        self.ensure()
        with lock.hold(self.path / "lock", run_id, command):
            yield

    def ids(self) -> list[str]:
        if not self.snapshots_dir.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.snapshots_dir.iterdir()
            if not entry.name.endswith(PARTIAL) and (entry / MANIFEST).is_file()
        )

    def snapshots(self) -> list[Snapshot]:
        return [self.get(snapshot_id) for snapshot_id in self.ids()]

    def resolve(self, reference: str) -> str:
        """Turn ``latest``, a full id or a unique id prefix of at least MIN_PREFIX characters into
        a full id; UsageError when unknown, ambiguous, empty, too short or holding a wildcard."""
        ids = self.ids()
        if reference == "latest":
            if not ids:
                raise UsageError(f"no snapshots in {self.path}")
            return ids[-1]
        if reference in ids:
            return reference
        check_prefix(reference, "snapshot id")
        matches = [i for i in ids if i.startswith(reference)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise UsageError(f"snapshot id {reference!r} is ambiguous: {', '.join(matches)}")
        raise UsageError(f"unknown snapshot {reference!r} in {self.path}")

    def get(self, reference: str) -> Snapshot:
        snapshot_id = self.resolve(reference)
        path = self.snapshots_dir / snapshot_id
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise AuraError(f"snapshot {snapshot_id}: unreadable manifest: {exc}") from None
        return Snapshot(snapshot_id, path, manifest)

    def latest_with(self, component: str, kind: str) -> Snapshot | None:
        """The newest sealed snapshot holding ``component`` of type ``kind``."""
        for snapshot_id in reversed(self.ids()):
            snapshot = self.get(snapshot_id)
            entry = snapshot.manifest.get("components", {}).get(component)
            if entry and entry.get("type") == kind:
                return snapshot
        return None

    def clean_partials(self) -> list[str]:
        """Remove leftover ``*.partial`` folders (a killed backup); call with the lock held."""
        removed = []
        if self.snapshots_dir.is_dir():
            for entry in self.snapshots_dir.iterdir():
                if entry.name.endswith(PARTIAL):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry.name)
                    logs.get().warning("snapshot.partial_removed", path=str(entry))
        return removed

    def begin(self, snapshot_id: str) -> Path:
        partial = self.snapshots_dir / (snapshot_id + PARTIAL)
        partial.mkdir(mode=0o700)
        return partial

    def commit(self, snapshot_id: str, manifest: dict[str, Any]) -> Snapshot:
        """Write the manifest, sync everything to disk, and rename: the rename is the commit."""
        partial = self.snapshots_dir / (snapshot_id + PARTIAL)
        write_json(partial / MANIFEST, manifest)
        _syncfs(partial)
        final = self.snapshots_dir / snapshot_id
        os.rename(partial, final)
        fsync_dir(self.snapshots_dir)
        return Snapshot(snapshot_id, final, manifest)

    def discard(self, snapshot_id: str) -> None:
        shutil.rmtree(self.snapshots_dir / (snapshot_id + PARTIAL), ignore_errors=True)

    def delete(self, snapshot_id: str) -> None:
        """Delete a sealed snapshot: renamed to partial first so a crash never leaves half of one."""
        final = self.snapshots_dir / snapshot_id
        doomed = self.snapshots_dir / (snapshot_id + ".deleting" + PARTIAL)
        os.rename(final, doomed)
        fsync_dir(self.snapshots_dir)
        shutil.rmtree(doomed)

    def free_bytes(self) -> int:
        target = self.path if self.path.exists() else self.path.parent
        while not target.exists():
            target = target.parent
        return shutil.disk_usage(target).free
