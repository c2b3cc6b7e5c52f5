"""``Repository``: sealed snapshots over a backend, their manifests checked as they are read.

The repository is storage only: it knows a snapshot's manifest envelope (``id``, ``format``,
``created``, a ``components`` object of one object per component, each with a ``type``) and no
component. What a component's section must hold is checked by the ``validate`` hook its caller
supplies (the workflows pass one that asks each component type's manifest model).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aura_ops import logs
from aura_ops.errors import RepositoryError, UsageError, VerificationError
from aura_ops.repository.backend import PARTIAL, Backend, LocalBackend, json_bytes
from aura_ops.repository.ids import check_prefix, is_snapshot_id

SNAPSHOTS = "snapshots"
MANIFEST = "manifest.json"
MANIFEST_SUM = ".sha256"  # snapshots/<id>.sha256, beside the snapshot's folder
FORMAT = 2  # 2: the manifest's checksum is recorded outside the snapshot (required from then on)
FORMAT_MARKER = "format.json"
PINS = "pins"  # pins/<id>: the snapshot is pinned (never pruned); removed with the snapshot

SectionCheck = Callable[[str, dict[str, Any]], str | None]
"""``validate(name, section)``: what makes a component's manifest section unusable, or None."""


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


def envelope_problem(manifest: Any) -> str | None:
    """What makes ``manifest`` not a manifest at all (None: its envelope is right)."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("components"), dict):
        return "not a manifest"
    if not isinstance(manifest.get("format", 1), int) or not isinstance(manifest.get("created"), str):
        return "bad format or created"
    for name, entry in manifest["components"].items():
        if not isinstance(entry, dict):
            return f"component {name} is not an object"
    return None


class Repository:
    """Sealed snapshots in a backend (a local folder by default; layout in the package docstring).

    ``validate`` checks each component section of a manifest as it is read; a problem marks the
    snapshot damaged. Without it, any section that is an object is accepted."""

    def __init__(self, location: Path | Backend, validate: SectionCheck | None = None) -> None:
        self.backend: Backend = LocalBackend(location) if isinstance(location, Path) else location
        self.validate = validate
        self.path = self.backend.root
        self.snapshots_dir = self.path / SNAPSHOTS  # the local view, for messages and doctor
        self._first_checksummed: tuple[str | None] | None = None  # read once per instance

    def ensure(self) -> None:
        """Make the repository's folders (owner-only); RepositoryError (exit 2) when they cannot
        be made or are not folders (the backend's OSError, translated at this seam)."""
        try:
            self.backend.ensure(SNAPSHOTS)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(self.path) else ""
            raise RepositoryError(f"repository {self.path} cannot be used: {exc.strerror}{where}") from None

    @contextmanager
    def locked(self, run_id: str, command: str) -> Iterator[None]:
        self.ensure()
        with self.backend.locked(run_id, command):
            yield

    def ids(self) -> list[str]:
        """Every sealed snapshot's id, damaged ones included: a folder named like a snapshot id
        (any other name is ignored, see ``stray``)."""
        return sorted(e.name for e in self.backend.list(SNAPSHOTS) if is_snapshot_id(e.name) and e.is_folder)

    def stray(self) -> list[str]:
        """Names in ``snapshots/`` that aura-ops did not make (never listed, used or removed)."""
        return sorted(
            e.name
            for e in self.backend.list(SNAPSHOTS)
            if not is_snapshot_id(e.name.split(".", 1)[0]) and not e.name.startswith(".")
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
        """Where the manifest's checksum file is (the local view)."""
        return self.backend.folder(_sum_key(snapshot_id))

    def load(self, snapshot_id: str) -> Snapshot:
        """Read and check a snapshot's manifest; a problem marks the snapshot damaged (no raise)."""
        path = self.backend.folder(f"{SNAPSHOTS}/{snapshot_id}")
        try:
            with self.backend.get(f"{SNAPSHOTS}/{snapshot_id}/{MANIFEST}") as stream:
                raw = stream.read()
        except FileNotFoundError:
            return Snapshot(snapshot_id, path, {}, f"manifest of snapshot {snapshot_id} is missing")
        except OSError as exc:
            return Snapshot(snapshot_id, path, {}, f"manifest of snapshot {snapshot_id} is unreadable: {exc.strerror}")
        try:
            manifest = json.loads(raw)
        except ValueError as exc:
            return Snapshot(snapshot_id, path, {}, f"manifest of snapshot {snapshot_id} is unreadable: {exc}")
        shape = self.shape_problem(manifest)
        if shape:
            return Snapshot(snapshot_id, path, {}, f"manifest of snapshot {snapshot_id} is unreadable: {shape}")
        return Snapshot(snapshot_id, path, manifest, self._sum_problem(snapshot_id, raw, manifest))

    def shape_problem(self, manifest: Any) -> str | None:
        """What makes ``manifest`` unusable: its envelope, then each section (``validate``)."""
        problem = envelope_problem(manifest)
        if problem or self.validate is None:
            return problem
        for name, section in manifest["components"].items():
            problem = self.validate(name, section)
            if problem:
                return problem
        return None

    def first_checksummed(self) -> str | None:
        """The id of the first snapshot sealed with a checksum file (see the package docstring)."""
        if self._first_checksummed is None:
            found = []
            try:
                with self.backend.get(FORMAT_MARKER) as stream:
                    marker = json.loads(stream.read())
                if isinstance(marker, dict) and is_snapshot_id(str(marker.get("checksummed_from"))):
                    found.append(str(marker["checksummed_from"]))
            except (OSError, ValueError):
                pass
            found += [
                e.name[: -len(MANIFEST_SUM)]
                for e in self.backend.list(SNAPSHOTS)
                if e.name.endswith(MANIFEST_SUM) and is_snapshot_id(e.name[: -len(MANIFEST_SUM)])
            ]
            self._first_checksummed = (min(found) if found else None,)
        return self._first_checksummed[0]

    def _sum_problem(self, snapshot_id: str, raw: bytes, manifest: dict[str, Any]) -> str | None:
        if manifest.get("id", snapshot_id) != snapshot_id:
            return f"manifest of snapshot {snapshot_id} belongs to snapshot {manifest.get('id')}"
        try:
            with self.backend.get(_sum_key(snapshot_id)) as stream:
                recorded = stream.read().decode(errors="replace").split()[0]
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

    def require_sealed(self, snapshot_id: str) -> None:
        """UsageError (exit 2, ``resolve``'s message) when the sealed snapshot ``snapshot_id`` is
        gone: deleted (``snapshots delete``, a prune) since the caller read it. One stat of its
        manifest; with the lock held, no delete can follow it."""
        if self.backend.stat(f"{SNAPSHOTS}/{snapshot_id}/{MANIFEST}") is None:
            raise UsageError(f"unknown snapshot {snapshot_id!r} in {self.path}")

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
        """Remove leftover ``*.partial`` folders (a killed backup or delete) and checksum files of
        snapshots that are not there; call with the lock held. (One listing: whether a checksum
        file's snapshot is there, and which pins are of gone snapshots, are read from it.)"""
        removed = []
        entries = self.backend.list(SNAPSHOTS)
        sealed = {e.name for e in entries if e.is_folder and is_snapshot_id(e.name)}
        for entry in entries:
            stem = entry.name.split(".", 1)[0]
            if not is_snapshot_id(stem):
                continue  # not aura-ops' own: left alone
            if entry.name.endswith(PARTIAL):
                self.backend.discard(f"{SNAPSHOTS}/{entry.name}")
                removed.append(entry.name)
                logs.get().warning("snapshot.partial_removed", path=str(self.snapshots_dir / entry.name))
            elif entry.name.endswith((MANIFEST_SUM, MANIFEST_SUM + ".tmp")) and stem not in sealed:
                self.backend.delete(f"{SNAPSHOTS}/{entry.name}")  # of a snapshot never committed, or deleted
        self._clean_pins(sealed)
        return removed

    def _clean_pins(self, sealed: set[str]) -> None:
        """Remove the pins of snapshots that are gone (a delete killed before it removed them)."""
        for entry in self.backend.list(PINS):
            if entry.is_folder:
                continue
            stem = entry.name.split(".", 1)[0]
            if is_snapshot_id(stem) and (entry.name != stem or stem not in sealed):
                self.backend.delete(f"{PINS}/{entry.name}")  # (``.tmp``: a pin killed while written)

    def begin(self, snapshot_id: str) -> Path:
        """The new, empty local folder the snapshot is written into (one folder a component)."""
        return self.backend.stage(_partial_key(snapshot_id))

    def commit(self, snapshot_id: str, manifest: dict[str, Any]) -> Snapshot:
        """Record the manifest's checksum (and the format marker), then commit the manifest:
        it is written last, everything is made durable, and the snapshot appears at once."""
        raw = json_bytes(manifest)
        self.backend.put(_sum_key(snapshot_id), f"{hashlib.sha256(raw).hexdigest()}  {MANIFEST}\n".encode())
        if self.backend.stat(FORMAT_MARKER) is None:
            first = self.first_checksummed() or snapshot_id  # (ids grow: an earlier one found is older)
            self.backend.put(FORMAT_MARKER, json_bytes({"format": FORMAT, "checksummed_from": first}))
            self._first_checksummed = (first,)
        final = self.backend.commit(_partial_key(snapshot_id), f"{SNAPSHOTS}/{snapshot_id}", MANIFEST, raw)
        return Snapshot(snapshot_id, final, manifest)

    def discard(self, snapshot_id: str) -> None:
        self.backend.discard(_partial_key(snapshot_id))

    def delete(self, snapshot_id: str) -> None:
        """Delete a sealed snapshot (it disappears at once: a crash never leaves half of one),
        then its checksum file."""
        self.backend.delete(f"{SNAPSHOTS}/{snapshot_id}")
        self.backend.delete(_sum_key(snapshot_id))
        self.backend.delete(_pin_key(snapshot_id))

    def pin(self, snapshot_id: str, note: str = "") -> None:
        """Pin a sealed snapshot: no prune deletes it (a small ``pins/<id>`` key; call with the
        lock held). Pinning a pinned snapshot again changes nothing but its record."""
        self.backend.ensure(PINS)
        record = {"id": snapshot_id, "pinned": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "note": note}
        self.backend.put(_pin_key(snapshot_id), json_bytes(record))

    def unpin(self, snapshot_id: str) -> bool:
        """Remove a snapshot's pin; whether it was pinned (call with the lock held)."""
        was = self.backend.stat(_pin_key(snapshot_id)) is not None
        self.backend.delete(_pin_key(snapshot_id))
        return was

    def pinned(self, sealed: Iterable[str] | None = None) -> set[str]:
        """The ids of the pinned snapshots (a pin whose snapshot is gone is not counted);
        ``sealed``: the sealed ids, when the caller has just listed them."""
        found = {e.name for e in self.backend.list(PINS) if not e.is_folder and is_snapshot_id(e.name)}
        if not found:
            return found
        return found & set(self.ids() if sealed is None else sealed)

    def free_bytes(self) -> int:
        return self.backend.free_bytes()

    def check_writable(self) -> None:
        """Make the repository's folders, then write and delete a probe object of a name of
        its own through the backend (``doctor``); the backend's OSError when it cannot."""
        self.backend.ensure(SNAPSHOTS)
        probe = f".doctor-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            self.backend.put(probe, b"")
        finally:
            self.backend.delete(probe)


def _partial_key(snapshot_id: str) -> str:
    return f"{SNAPSHOTS}/{snapshot_id}{PARTIAL}"


def _pin_key(snapshot_id: str) -> str:
    return f"{PINS}/{snapshot_id}"


def _sum_key(snapshot_id: str) -> str:
    return f"{SNAPSHOTS}/{snapshot_id}{MANIFEST_SUM}"
