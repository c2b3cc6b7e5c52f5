"""The snapshot repository: a local folder of sealed snapshots.

Layout::

    <repo>/lock                      the repository lock (lock.py)
    <repo>/snapshots/<id>.partial/   a snapshot being written: never listed, restored or counted
    <repo>/snapshots/<id>/           a sealed snapshot: manifest.json plus one folder a component
    <repo>/snapshots/<id>.sha256     the manifest's SHA-256, kept outside the snapshot's folder
    <repo>/format.json               the first snapshot sealed with a checksum file (see below)

A snapshot is built in ``<id>.partial/``, checked, synced to disk, then renamed: the rename is
the commit. Folders are 0700 and files 0600. The manifest's checksum is written (and synced)
before the commit and checked whenever a manifest is read: a snapshot whose manifest is missing,
unreadable or changed is *damaged*; it is listed as such and never verified as good or restored,
and the other snapshots are not affected. So is a manifest whose shape is wrong (a component entry
that is not an object, an unknown type, a required key missing or of the wrong type).

A snapshot made before checksum files existed (manifest ``format`` 1) has none. So that deleting
a checksum file (and writing ``"format": 1`` into the manifest) cannot turn the check off, a
snapshot whose id is not older than the first snapshot sealed with a checksum file must have
one: that first id is recorded in ``format.json`` at the first commit that finds it missing, and
the oldest ``<id>.sha256`` present counts too (the earlier of the two), so removing either alone
changes nothing. Ids are sealed in order, so every snapshot from that one on was sealed with a
checksum file.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aura_ops import logs
from aura_ops.checksum import fsync_dir
from aura_ops.errors import UsageError, VerificationError
from aura_ops.state import lock

PARTIAL = ".partial"
MANIFEST = "manifest.json"
MANIFEST_SUM = ".sha256"  # <repo>/snapshots/<id>.sha256, beside the snapshot's folder
FORMAT = 2  # 2: the manifest's checksum is recorded outside the snapshot (required from then on)
FORMAT_MARKER = "format.json"
# What each component type's entry must hold (the keys the code reads without a default).
_ARTIFACTS = ("artifacts", dict)
REQUIRED: dict[str, tuple[tuple[str, type], ...]] = {
    "files": (_ARTIFACTS, ("source", str), ("file_count", int), ("bytes", int), ("copied_bytes", int)),
    "postgres": (_ARTIFACTS, ("database", str)),
    "release": (_ARTIFACTS, ("path", str)),
    "docker": (_ARTIFACTS, ("containers", list)),
}


MIN_PREFIX = 4
ID_SHAPE = re.compile(r"\d{8}-\d{6}-\d{3}")  # YYYYMMDD-HHMMSS-mmm: any other name is not a snapshot


def is_snapshot_id(name: str) -> bool:
    return ID_SHAPE.fullmatch(name) is not None


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


def syncfs(path: Path) -> None:
    """Flush every dirty page of the filesystem holding ``path`` (one call, not one per file)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def write_bytes(path: Path, data: bytes) -> None:
    """Write a file atomically (temp file, fsync, rename), mode 0600."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file, fsync, rename), mode 0600."""
    write_bytes(path, json_bytes(data))


def shape_problem(manifest: Any) -> str | None:
    """What makes ``manifest`` not a manifest this code can use (None: its shape is right)."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("components"), dict):
        return "not a manifest"
    if not isinstance(manifest.get("format", 1), int) or not isinstance(manifest.get("created"), str):
        return "bad format or created"
    for name, entry in manifest["components"].items():
        if not isinstance(entry, dict):
            return f"component {name} is not an object"
        kind = entry.get("type")
        if kind not in REQUIRED:
            return f"component {name} has an unknown type {kind!r}"
        for key, expected in REQUIRED[kind]:
            if not isinstance(entry.get(key), expected) or isinstance(entry.get(key), bool):
                return f"component {name} lacks {key} (or it is not a {expected.__name__})"
        for artifact, info in entry["artifacts"].items():
            if not (isinstance(info, dict) and isinstance(info.get("size"), int) and isinstance(info.get("hash"), str)):
                return f"component {name}: artifact {artifact} has no size or hash"
    return None


@dataclass(frozen=True)
class Snapshot:
    """A sealed snapshot: its folder and its manifest (``damaged``: why it cannot be trusted;
    a damaged snapshot's manifest may be empty)."""

    id: str
    path: Path
    manifest: dict[str, Any]
    damaged: str | None = None

    def component_dir(self, name: str) -> Path:
        return self.path / name


class Repository:
    """A local folder of snapshots (see module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.snapshots_dir = path / "snapshots"
        self._first_checksummed: tuple[str | None] | None = None  # read once per instance

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
        """Every sealed snapshot's id, damaged ones included: a folder named like a snapshot id
        (any other name is ignored, see ``stray``)."""
        if not self.snapshots_dir.is_dir():
            return []
        return sorted(
            entry.name for entry in self.snapshots_dir.iterdir() if is_snapshot_id(entry.name) and entry.is_dir()
        )

    def stray(self) -> list[str]:
        """Names in ``snapshots/`` that aura-ops did not make (never listed, used or removed)."""
        if not self.snapshots_dir.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.snapshots_dir.iterdir()
            if not is_snapshot_id(entry.name.split(".", 1)[0]) and not entry.name.startswith(".")
        )

    def all_snapshots(self) -> list[Snapshot]:
        """Every sealed snapshot, damaged ones included (see ``Snapshot.damaged``)."""
        return [self.load(snapshot_id) for snapshot_id in self.ids()]

    def snapshots(self) -> list[Snapshot]:
        """The sealed snapshots whose manifest is intact."""
        return [s for s in self.all_snapshots() if s.damaged is None]

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

    def sum_path(self, snapshot_id: str) -> Path:
        return self.snapshots_dir / (snapshot_id + MANIFEST_SUM)

    def load(self, snapshot_id: str) -> Snapshot:
        """Read and check a snapshot's manifest; a problem marks the snapshot damaged (no raise)."""
        path = self.snapshots_dir / snapshot_id
        try:
            raw = (path / MANIFEST).read_bytes()
        except FileNotFoundError:
            return Snapshot(snapshot_id, path, {}, f"manifest of snapshot {snapshot_id} is missing")
        except OSError as exc:
            return Snapshot(snapshot_id, path, {}, f"manifest of snapshot {snapshot_id} is unreadable: {exc.strerror}")
        try:
            manifest = json.loads(raw)
        except ValueError as exc:
            return Snapshot(snapshot_id, path, {}, f"manifest of snapshot {snapshot_id} is unreadable: {exc}")
        shape = shape_problem(manifest)
        if shape:
            return Snapshot(snapshot_id, path, {}, f"manifest of snapshot {snapshot_id} is unreadable: {shape}")
        return Snapshot(snapshot_id, path, manifest, self._sum_problem(snapshot_id, raw, manifest))

    def first_checksummed(self) -> str | None:
        """The id of the first snapshot sealed with a checksum file (see module docstring)."""
        if self._first_checksummed is None:
            found = []
            try:
                marker = json.loads((self.path / FORMAT_MARKER).read_bytes())
                if isinstance(marker, dict) and is_snapshot_id(str(marker.get("checksummed_from"))):
                    found.append(str(marker["checksummed_from"]))
            except (OSError, ValueError):
                pass
            if self.snapshots_dir.is_dir():
                found += [
                    entry.name[: -len(MANIFEST_SUM)]
                    for entry in self.snapshots_dir.iterdir()
                    if entry.name.endswith(MANIFEST_SUM) and is_snapshot_id(entry.name[: -len(MANIFEST_SUM)])
                ]
            self._first_checksummed = (min(found) if found else None,)
        return self._first_checksummed[0]

    def _sum_problem(self, snapshot_id: str, raw: bytes, manifest: dict[str, Any]) -> str | None:
        if manifest.get("id", snapshot_id) != snapshot_id:
            return f"manifest of snapshot {snapshot_id} belongs to snapshot {manifest.get('id')}"
        try:
            recorded = self.sum_path(snapshot_id).read_text().split()[0]
        except (OSError, IndexError):
            first = self.first_checksummed()
            if manifest.get("format", 1) == 1 and (first is None or snapshot_id < first):
                return None  # sealed before checksums were recorded outside the snapshot
            return f"manifest of snapshot {snapshot_id} cannot be checked: its checksum file is missing"
        if hashlib.sha256(raw).hexdigest() != recorded:
            return f"manifest of snapshot {snapshot_id} changed since it was sealed (checksum mismatch)"
        return None

    def get(self, reference: str) -> Snapshot:
        """The snapshot ``reference`` names, its manifest checked; VerificationError (exit 3) when
        it is damaged."""
        snapshot = self.load(self.resolve(reference))
        if snapshot.damaged:
            raise VerificationError(snapshot.damaged)
        return snapshot

    def latest_with(
        self, component: str, kind: str, usable: Callable[[Snapshot], bool] | None = None
    ) -> Snapshot | None:
        """The newest intact snapshot holding ``component`` of type ``kind`` (and ``usable``)."""
        for snapshot_id in reversed(self.ids()):
            snapshot = self.load(snapshot_id)
            if snapshot.damaged:
                logs.get().warning("snapshot.damaged_skipped", snapshot=snapshot_id, reason=snapshot.damaged)
                continue
            entry = snapshot.manifest.get("components", {}).get(component)
            if entry and entry.get("type") == kind:
                if usable is not None and not usable(snapshot):
                    continue
                return snapshot
        return None

    def clean_partials(self) -> list[str]:
        """Remove leftover ``*.partial`` folders (a killed backup); call with the lock held."""
        removed = []
        if self.snapshots_dir.is_dir():
            for entry in self.snapshots_dir.iterdir():
                if not is_snapshot_id(entry.name.split(".", 1)[0]):
                    continue  # not aura-ops' own: left alone
                if entry.name.endswith(PARTIAL):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry.name)
                    logs.get().warning("snapshot.partial_removed", path=str(entry))
                elif (
                    entry.name.endswith((MANIFEST_SUM, MANIFEST_SUM + ".tmp"))
                    and not (self.snapshots_dir / entry.name.split(".", 1)[0]).is_dir()
                ):
                    entry.unlink()  # the checksum of a snapshot never committed, or deleted
        return removed

    def begin(self, snapshot_id: str) -> Path:
        partial = self.snapshots_dir / (snapshot_id + PARTIAL)
        partial.mkdir(mode=0o700)
        return partial

    def commit(self, snapshot_id: str, manifest: dict[str, Any]) -> Snapshot:
        """Write the manifest, sync everything to disk, and rename: the rename is the commit."""
        partial = self.snapshots_dir / (snapshot_id + PARTIAL)
        raw = json_bytes(manifest)
        write_bytes(partial / MANIFEST, raw)
        write_bytes(self.sum_path(snapshot_id), f"{hashlib.sha256(raw).hexdigest()}  {MANIFEST}\n".encode())
        if not (self.path / FORMAT_MARKER).exists():
            first = self.first_checksummed() or snapshot_id  # (ids grow: an earlier one found is older)
            write_json(self.path / FORMAT_MARKER, {"format": FORMAT, "checksummed_from": first})
            self._first_checksummed = (first,)
        syncfs(partial)
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
        self.sum_path(snapshot_id).unlink(missing_ok=True)

    def free_bytes(self) -> int:
        target = self.path if self.path.exists() else self.path.parent
        while not target.exists():
            target = target.parent
        return shutil.disk_usage(target).free
