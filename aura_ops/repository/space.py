"""How much room snapshots take, and whether the next one fits.

Sizes (``usage``): a snapshot's **own** size is what deleting it would free: the bytes of every
stored file whose names (hard links) are all inside this snapshot; its **shared** size is the
rest of what it holds (files hard-linked with another snapshot: a files tree's unchanged files,
linked against the snapshot before). Both are counted per component and for the snapshot's
manifest and checksum file (``MANIFEST_PART``), from ``Backend.links`` (for a local repository,
the blocks each file takes on disk: what deleting it frees). Each snapshot also gets its
**portion**: every file's bytes split evenly over its links, so that the portions of all
snapshots add up to the bytes they take on disk together, each file counted once.

Counting walks the snapshot's files (an lstat each). The result is cached in
``<repo>/cache/space.json``, each entry under a key that changes whenever the answer could:

- a snapshot's files never change once sealed, but their link counts do, when a snapshot
  that shares them is added or deleted. Links are made only by a component's snapshot against
  the newest earlier snapshot holding the same component (``previous``), so the snapshots
  holding one file are consecutive among the snapshots holding that component, and stay so as
  snapshots are deleted. A file of snapshot S shared with any other snapshot is therefore shared
  with S's nearest neighbour holding the component, before or after it: S's sizes depend only on
  which snapshots those neighbours are. The key holds them, for each component of S.
- when a component's snapshots are not consecutive in that sense (a snapshot is damaged, or one
  was made against an older base than the snapshot before it, which skipped a damaged one), the
  key holds every snapshot of that component: any addition or deletion among them recomputes.
- a folder in ``snapshots/`` that is not a sealed snapshot (one being written, one being
  deleted) holds links as the snapshot of its id would: it counts as a neighbour in every
  component's order (so a backup in progress makes only the newest snapshots count again); a
  snapshot whose manifest cannot be read has unknown components: every id goes into every key.
- the snapshot folder's own identity (device, inode) is in its key: a repository copied
  elsewhere (links broken or not) or a snapshot folder put back by hand is counted again.

The free-space guard (``check_room``): before a snapshot is written, the bytes it will take are
estimated from each component's previous snapshot (``estimate``) and the snapshot is refused,
nothing written, when it would leave less than the configured reserve free.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aura_ops.errors import AuraError
from aura_ops.repository.backend import Backend, write_cache
from aura_ops.repository.ids import is_snapshot_id
from aura_ops.repository.store import MANIFEST, MANIFEST_SUM, SNAPSHOTS, Repository, Snapshot

MANIFEST_PART = "manifest"  # a snapshot's manifest.json and its checksum file
CACHE = "space.json"
CACHE_VERSION = 1


# ---------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Part:
    """One component's (or the manifest's) bytes in a snapshot: ``own`` (freed by deleting the
    snapshot), ``shared`` (linked with other snapshots) and ``portion`` (its share of the disk,
    each file's bytes split over its links)."""

    own: int = 0
    shared: int = 0
    portion: int = 0

    def __add__(self, other: Part) -> Part:
        return Part(self.own + other.own, self.shared + other.shared, self.portion + other.portion)


@dataclass(frozen=True)
class Usage:
    """A snapshot's sizes, by component name (and ``MANIFEST_PART``)."""

    id: str
    parts: dict[str, Part] = field(default_factory=dict)

    @property
    def own(self) -> int:
        return sum(part.own for part in self.parts.values())

    @property
    def shared(self) -> int:
        return sum(part.shared for part in self.parts.values())

    @property
    def portion(self) -> int:
        return sum(part.portion for part in self.parts.values())


def measure(backend: Backend, snapshot_id: str) -> Usage:
    """Walk a sealed snapshot's files (``Backend.links``) and count its sizes (the snapshot's
    folder itself, a block, is left out: it is not any component's)."""
    found: dict[Hashable, list[Any]] = {}  # identity: [links here, links in all, size, part]
    keys = [(f"{SNAPSHOTS}/{snapshot_id}{MANIFEST_SUM}", MANIFEST_PART)]
    for entry in backend.list(f"{SNAPSHOTS}/{snapshot_id}"):
        part = MANIFEST_PART if entry.name == MANIFEST else entry.name
        keys.append((f"{SNAPSHOTS}/{snapshot_id}/{entry.name}", part))
    for key, part in keys:
        for identity, links, size in backend.links(key):
            seen = found.get(identity)
            if seen is None:
                found[identity] = [1, links, size, part]
            else:
                seen[0] += 1
    own: dict[str, int] = {}
    shared: dict[str, int] = {}
    portion: dict[str, float] = {}
    for here, links, size, part in found.values():
        whole = here >= links
        own[part] = own.get(part, 0) + (size if whole else 0)
        shared[part] = shared.get(part, 0) + (0 if whole else size)
        portion[part] = portion.get(part, 0.0) + (size if whole else size * here / max(links, 1))
    parts = {name: Part(own.get(name, 0), shared.get(name, 0), round(portion[name])) for name in portion}
    return Usage(snapshot_id, parts)


def freed_by(backend: Backend, snapshot_ids: Iterable[str]) -> int:
    """The bytes deleting all of ``snapshot_ids`` together would free: files whose every link is
    in one of them (more than the sum of their own sizes when they share files among them).
    Walks their files: about what deleting them reads."""
    found: dict[Hashable, list[int]] = {}
    for snapshot_id in snapshot_ids:
        for key in (f"{SNAPSHOTS}/{snapshot_id}", f"{SNAPSHOTS}/{snapshot_id}{MANIFEST_SUM}"):
            for identity, links, size in backend.links(key):
                seen = found.get(identity)
                if seen is None:
                    found[identity] = [1, links, size]
                else:
                    seen[0] += 1
    return sum(size for here, links, size in found.values() if here >= links)


def usage(repo: Repository, snapshots: Sequence[Snapshot]) -> dict[str, Usage]:
    """Every snapshot's sizes by id (``snapshots``: every sealed one, damaged ones included, as
    ``Repository.all_snapshots`` or the listing gives them), from the cache where its key still
    holds, else measured (and the cache updated; a cache that cannot be written is skipped)."""
    keys = cache_keys(repo, snapshots)
    path = repo.path / "cache" / CACHE
    cached = _read_cache(path)
    result: dict[str, Usage] = {}
    fresh: dict[str, Any] = {}
    for snapshot in snapshots:
        entry = cached.get(snapshot.id)
        if isinstance(entry, dict) and entry.get("key") == keys[snapshot.id]:
            try:
                result[snapshot.id] = Usage(snapshot.id, {n: Part(*v) for n, v in entry["parts"].items()})
                fresh[snapshot.id] = entry
                continue
            except (TypeError, ValueError, AttributeError, KeyError):
                pass  # a malformed entry is measured again
        measured = measure(repo.backend, snapshot.id)
        result[snapshot.id] = measured
        parts = {name: [p.own, p.shared, p.portion] for name, p in measured.parts.items()}
        fresh[snapshot.id] = {"key": keys[snapshot.id], "parts": parts}
    if fresh != cached:
        with contextlib.suppress(OSError):  # a read-only repository is still listed, measured each time
            write_cache(path, {"version": CACHE_VERSION, "snapshots": fresh})  # (no lock: a name of its own)
    return result


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    if (
        not isinstance(data, dict)
        or data.get("version") != CACHE_VERSION
        or not isinstance(data.get("snapshots"), dict)
    ):
        return {}
    found: dict[str, Any] = data["snapshots"]
    return found


def cache_keys(repo: Repository, snapshots: Sequence[Snapshot]) -> dict[str, str]:
    """Each snapshot's cache key (see the module docstring): it changes whenever the snapshot's
    own or shared size could have."""
    ids = [s.id for s in sorted(snapshots, key=lambda s: s.id)]
    # a folder being written or deleted (<id>.partial, <id>.deleting.partial) holds links as
    # the snapshot <id> would: a member of every chain, at its id's place (ids are fixed-length)
    unsealed = [
        e.name
        for e in repo.backend.list(SNAPSHOTS)
        if e.is_folder and not is_snapshot_id(e.name) and is_snapshot_id(e.name.split(".", 1)[0])
    ]
    everywhere: list[Any] = []
    if any(s.damaged and not s.manifest.get("components") for s in snapshots):
        everywhere.append(ids)  # components unknown: any snapshot may share its files
    chains = {key: (sorted(chain + unsealed), regular) for key, (chain, regular) in _chains(snapshots).items()}
    places = {chain_key: {i: n for n, i in enumerate(chain)} for chain_key, (chain, _) in chains.items()}
    identities = _identities(repo)
    keys = {}
    for snapshot in snapshots:
        parts: list[Any] = [snapshot.id, identities.get(snapshot.id), everywhere]
        for chain_key in sorted(_components(snapshot)):
            chain, regular = chains[chain_key]
            if regular:
                index = places[chain_key][snapshot.id]
                neighbours = [chain[index - 1] if index else None, chain[index + 1] if index + 1 < len(chain) else None]
                parts.append([*chain_key, neighbours])
            else:
                parts.append([*chain_key, chain])
        keys[snapshot.id] = hashlib.sha256(json.dumps(parts).encode()).hexdigest()
    return keys


def _components(snapshot: Snapshot) -> list[tuple[str, str]]:
    components = snapshot.manifest.get("components") or {}
    return [(name, str(entry.get("type"))) for name, entry in components.items() if isinstance(entry, dict)]


def _chains(snapshots: Sequence[Snapshot]) -> dict[tuple[str, str], tuple[list[str], bool]]:
    """For each (component, type): the ids holding it, oldest first, and whether they are
    consecutive (no damaged one, none made against a base older than the one before it)."""
    chains: dict[tuple[str, str], list[str]] = {}
    irregular: set[tuple[str, str]] = set()
    for snapshot in sorted(snapshots, key=lambda s: s.id):
        for chain_key in _components(snapshot):
            chain = chains.setdefault(chain_key, [])
            previous = snapshot.manifest["components"][chain_key[0]].get("previous")
            if snapshot.damaged or (isinstance(previous, str) and chain and previous < chain[-1]):
                irregular.add(chain_key)
            chain.append(snapshot.id)
    return {chain_key: (chain, chain_key not in irregular) for chain_key, chain in chains.items()}


def _identities(repo: Repository) -> dict[str, list[int]]:
    """Each local snapshot folder's device and inode by name (one scandir: inodes come free)."""
    try:
        device = os.stat(repo.snapshots_dir).st_dev
        with os.scandir(repo.snapshots_dir) as entries:
            return {entry.name: [device, entry.inode()] for entry in entries}
    except OSError:
        return {}  # not a local folder (a remote backend's cache): no identity to add


# ---------------------------------------------------------------- the free-space guard

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGTP]i?B|[KMGTP]|B)?", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4, "p": 1000**5}
_BINARY = {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4, "pib": 1024**5}


@dataclass(frozen=True)
class Reserve:
    """Free space a snapshot must leave on the repository's disk: ``bytes``, or ``percent`` of
    the disk's size (on a storage without a size, a percentage reserves nothing)."""

    bytes: int = 0
    percent: float | None = None

    def of(self, capacity: int | None) -> int:
        if self.percent is None:
            return self.bytes
        return 0 if capacity is None else int(capacity * self.percent / 100)

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else human(self.bytes)


def parse_reserve(value: str | int) -> Reserve:
    """``1GiB``, ``500MB``, ``1.5G``, ``1048576`` (bytes), ``5%`` or ``0`` (no reserve) as a
    Reserve; ValueError naming the forms accepted. kB/MB/GB/TB (and K/M/G/T) are powers of
    1000, KiB/MiB/GiB/TiB powers of 1024."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError("expected a size such as 1GiB or 500MB, or a percentage of the disk such as 5%")
    text = str(value).strip()
    if text.endswith("%"):
        try:
            percent = float(text[:-1].strip())
        except ValueError:
            percent = -1.0
        if not 0 <= percent < 100:
            raise ValueError(f"{text!r}: a percentage of the disk must be from 0% to below 100%")
        return Reserve(percent=percent)
    match = _SIZE.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r}: expected a size such as 1GiB or 500MB, or a percentage of the disk such as 5%")
    unit = (match.group(2) or "").lower()
    factor = _BINARY.get(unit) or _UNITS[unit.rstrip("b") if unit != "b" else "b"]
    return Reserve(bytes=int(float(match.group(1)) * factor))


def human(size: float) -> str:
    """Bytes in binary units, as a reserve is usually written: ``1.2 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def estimate(repo: Repository, components: Iterable[tuple[str, str]]) -> dict[str, int | None]:
    """The bytes the next snapshot of each (component, type) will likely store, from its newest
    intact snapshot: what that one stored (its artifacts, a postgres dump, a files index, plus
    ``copied_bytes``: the files a files tree copied rather than linked; a first full copy counts
    whole, so the estimate errs on the safe side). None for a component never snapshotted."""
    found: dict[str, int | None] = {}
    for name, kind in components:
        previous = repo.latest_with(name, kind)
        if previous is None:
            found[name] = None
            continue
        section = previous.manifest["components"][name]
        stored = sum(int(info.get("size", 0)) for info in section.get("artifacts", {}).values())
        found[name] = stored + int(section.get("copied_bytes", 0))
    return found


@dataclass(frozen=True)
class Guard:
    """What the free-space guard needs beside the repository: the reserve, and a sentence on
    what would make room (asked only when refusing: it may have to read the whole repository)."""

    reserve: Reserve
    making_room: Callable[[], str]


class NoRoom(AuraError):
    """The snapshot would leave less than the reserve free: refused before anything is written."""


def check_room(repo: Repository, components: Iterable[tuple[str, str]], guard: Guard) -> None:
    """NoRoom (exit 1) when a new snapshot of ``components`` (name, type), estimated from their
    previous snapshots, would leave less than ``guard.reserve`` free on the repository's disk."""
    estimates = estimate(repo, components)
    need = sum(size for size in estimates.values() if size is not None)
    free = repo.free_bytes()
    reserve = guard.reserve.of(repo.backend.capacity())
    if free - need >= reserve:
        return
    unknown = [name for name, size in estimates.items() if size is None]
    estimated = f"about {human(need)}" + (
        f" (no estimate for {', '.join(unknown)}: never snapshotted)" if unknown else ""
    )
    reserve_text = human(reserve) + (f" ({guard.reserve})" if guard.reserve.percent is not None else "")
    raise NoRoom(
        f"not enough free space on the repository's disk ({repo.path}): the snapshot needs {estimated}, "
        f"{human(free)} is free, and repository.reserve keeps {reserve_text} free; {guard.making_room()}; "
        "nothing was written"
    )
