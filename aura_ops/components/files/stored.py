"""What a files snapshot stores, and reading and checking it: the repository side.

A snapshot's part for a files component is a plain, browsable folder tree (``tree/``) and its
index (``index.jsonl``), in the component's folder of the snapshot, on the control machine: this
module reads and checks them through the store host (the component's ``store``, the control
machine's host), as the snapshot and restore modules reach a source or a target through its
``Host``.

The index records, one JSON line an entry, parents first, each path's type, mode, owner, mtime,
xattrs, and for files size and SHA-256. A name that is not UTF-8 is stored byte-exact as base64
(``pb``/``lb`` instead of ``p``/``l``).
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import orjson
from pydantic import ValidationError

from aura_ops import checksum
from aura_ops.components.base import ComponentManifest
from aura_ops.errors import VerificationError
from aura_ops.hosts.base import DirEntry, Host, StatResult, compile_excludes, shown
from aura_ops.repository import Snapshot
from aura_ops.repository.verified import VerifiedCache

INDEX = "index.jsonl"
INDEX_VERSION = 2  # 2: xattrs ("x") recorded in the index; names that are not UTF-8 as base64
TREE = "tree"
KINDS = {"f", "d", "l", "h"}


class FilesManifest(ComponentManifest):
    """A files component's section of a snapshot's manifest.

    Fields a snapshot made by an older aura-ops may lack have the defaults that older code
    assumed (``index_version`` 1: no xattrs in the index; ``owners_kept`` False)."""

    type: str = "files"
    source: str  # the configured path
    source_resolved: str | None = None  # the folder read: an in-place restore goes only there
    root: dict[str, Any] | None = None  # the source folder's own m, u, g, mt (and x)
    exclude: list[str] = []
    index_version: int = 1
    owners_kept: bool = False
    file_count: int
    directory_count: int = 0
    symlink_count: int = 0
    bytes: int
    copied_files: int = 0
    copied_bytes: int
    linked_files: int = 0
    skipped_special: list[str] = []
    vanished_during_backup: list[str] = []
    previous: str | None = None  # the snapshot whose unchanged files were hard-linked

    @property
    def xattrs_in_index(self) -> bool:
        return self.index_version >= INDEX_VERSION


def section(snapshot: Snapshot, name: str) -> FilesManifest:
    """The typed manifest section of files component ``name``; VerificationError when it is not
    one this code can read."""
    try:
        return FilesManifest.model_validate(snapshot.manifest["components"][name])
    except (KeyError, ValidationError) as exc:
        first = exc.errors()[0]["loc"] if isinstance(exc, ValidationError) else exc
        raise VerificationError(
            f"{name}: the manifest of snapshot {snapshot.id} has no usable files section ({first})"
        ) from None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def rsync_excludes(patterns: list[str]) -> list[str]:
    """The same excludes as rsync arguments (patterns with a slash are anchored at the root)."""
    args = []
    for glob, anchored, directories_only in compile_excludes(patterns):
        rsync_pattern = ("/" if anchored else "") + glob + ("/" if directories_only else "")
        args.append(f"--exclude={rsync_pattern}")
    return args


# ---------------------------------------------------------------- index


def _safe_relative(path: Any) -> bool:
    """A relative path that stays inside its root (a tampered index cannot name ../../etc)."""
    return isinstance(path, str) and bool(path) and all(part not in ("", ".", "..") for part in path.split("/"))


def decode_entry(entry: Any) -> dict[str, Any]:
    """An index line's entry, names decoded to str (surrogate-escaped when not UTF-8); ValueError
    (or KeyError, TypeError, binascii.Error) when it is not a valid entry."""
    if not isinstance(entry, dict):
        raise ValueError("not an object")
    if "pb" in entry:
        entry["p"] = os.fsdecode(base64.b64decode(entry["pb"], validate=True))
    if "lb" in entry:
        entry["l"] = os.fsdecode(base64.b64decode(entry["lb"], validate=True))
    kind = entry["t"]
    if kind not in KINDS or not _safe_relative(entry["p"]) or not isinstance(entry["m"], int):
        raise ValueError("bad entry")
    if kind == "f" and not (isinstance(entry["s"], int) and isinstance(entry["h"], str)):
        raise ValueError("bad file entry")
    if kind == "l" and not isinstance(entry["l"], str):
        raise ValueError("bad symlink entry")
    if kind == "h" and not _safe_relative(entry["l"]):
        raise ValueError("bad hard link entry")
    return entry


def encode_line(entry: dict[str, Any]) -> bytes:
    """One index line; a name that is not UTF-8 goes in ``pb``/``lb`` as base64 of its bytes."""
    try:
        return orjson.dumps(entry) + b"\n"
    except orjson.JSONEncodeError:
        fixed = dict(entry)
        for key in ("p", "l"):
            value = fixed.get(key)
            if isinstance(value, str) and not _is_utf8(value):
                del fixed[key]
                fixed[key + "b"] = base64.b64encode(os.fsencode(value)).decode("ascii")
        return orjson.dumps(fixed) + b"\n"


@dataclass
class Index:
    """An index as read: entries by path (in file order, parents first), the file's checksum,
    and the lines that could not be read."""

    entries: dict[str, dict[str, Any]]
    lines: dict[str, bytes]
    digest: str
    problems: list[str]


def read_index(store: Host, path: Path | str, algorithm: str = checksum.ALGORITHM) -> Index:
    """Read an index on ``store``, hashing it as it is read (FileNotFoundError when it is missing)."""
    hasher = checksum.new(algorithm)
    entries: dict[str, dict[str, Any]] = {}
    lines: dict[str, bytes] = {}
    problems = []
    with store.open_read(str(path)) as source:
        for number, line in enumerate(source, 1):
            hasher.update(line)
            try:
                entry = decode_entry(orjson.loads(line))
            except (ValueError, KeyError, TypeError, binascii.Error):
                problems.append(f"{INDEX} line {number} is unreadable")
                continue
            misplaced = _misplaced(entry, entries)
            if misplaced:
                problems.append(f"{INDEX} line {number} is damaged: {shown(entry['p'])} {misplaced}")
                continue
            entries[entry["p"]] = entry
            lines[entry["p"]] = line
    return Index(entries, lines, hasher.hexdigest(), problems)


def _misplaced(entry: dict[str, Any], earlier: dict[str, dict[str, Any]]) -> str | None:
    """Why an entry cannot stand where it is in the index (parents first), or None: listed twice,
    below something that is not a folder of the index (a symlink there would lead a restore
    outside its target), or a hard link to a name that is not an earlier file."""
    relative = entry["p"]
    if relative in earlier:
        return "is listed twice"
    if "/" in relative:
        parent = relative.rsplit("/", 1)[0]
        if earlier.get(parent, {}).get("t") != "d":
            return f"is below {shown(parent)}, which the index does not list as a folder before it"
    if entry["t"] == "h" and earlier.get(entry["l"], {}).get("t") != "f":
        return f"is a hard link to {shown(entry['l'])}, which the index does not list as a file before it"
    return None


def checked_index(store: Host, snapshot: Snapshot, name: str) -> Index:
    """The index of a files component (read through ``store``), checked against the manifest:
    VerificationError (exit 3) when it is missing, changed or holds an unreadable line."""
    return _checked(snapshot, name, lambda path, algorithm: read_index(store, path, algorithm))


_Read = TypeVar("_Read", "Index", "Outline")


def _checked(snapshot: Snapshot, name: str, read: Callable[[Path, str], _Read]) -> _Read:
    """What ``read`` makes of the component's index (its path, the snapshot's checksum
    algorithm), checked against the manifest: VerificationError (exit 3) when the index is
    missing, unreadable, changed (its digest) or holds an unreadable line (its problems)."""
    info = snapshot.manifest["components"][name].get("artifacts", {}).get(INDEX, {})
    algorithm = snapshot.manifest.get("checksum_algorithm", checksum.ALGORITHM)
    try:
        read_ = read(snapshot.component_dir(name) / INDEX, algorithm)
    except FileNotFoundError:
        raise VerificationError(f"{name}: {INDEX} of snapshot {snapshot.id} is missing") from None
    except OSError as exc:  # a folder, a FIFO or a device where the index should be
        raise VerificationError(f"{name}: {INDEX} of snapshot {snapshot.id} cannot be read ({exc.strerror})") from None
    if read_.digest != info.get("hash"):
        raise VerificationError(f"{name}: {INDEX} of snapshot {snapshot.id} changed (checksum mismatch)")
    if read_.problems:
        raise VerificationError(f"{name}: {read_.problems[0]} in snapshot {snapshot.id}")
    return read_


def walk_before(first: str, second: str) -> bool:
    """Whether ``first`` comes before ``second`` in a ``Host.walk`` (folders depth first in name
    order, each folder's entries together in name order): the order an index is written in."""
    head, _, name = first.rpartition("/")
    other_head, _, other_name = second.rpartition("/")
    if head == other_head:
        return name < other_name
    return (head.split("/") if head else []) < (other_head.split("/") if other_head else [])


_KIND_OF = {kind: kind for kind in KINDS}  # one str object per kind, shared by every entry


class _Unordered(Exception):
    """The index is not in walk order: it must be read keeping every path's type."""


class _LineReader:
    """Reads an index line by line, hashing it, each entry decoded and checked where it stands
    (``_misplaced``). ``bounded`` (an index in walk order, as aura-ops writes it): only the
    folders' paths are kept, a path listed twice breaks the order (``_Unordered``: read it
    again unbounded, keeping every path's type), and a hard link is checked against ``firsts``
    (the files hard links name, read first: ``hard_link_names``), or, when None, only for
    coming after its file (its reader then checks it is one: ``Outline.firsts``)."""

    def __init__(self, algorithm: str, bounded: bool = False, firsts: set[str] | None = None) -> None:
        self.hasher = checksum.new(algorithm)
        self.kinds: dict[str, str] = {}  # bounded: folders only
        self.problems: list[str] = []
        self.bounded = bounded
        self.firsts = firsts
        self.named: set[str] = set()  # the files hard links name
        self.seen: set[str] = set()  # bounded: files of ``firsts`` read so far
        self.count = 0
        self._last = ""

    def read(self, source: Iterable[bytes]) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """(line, entry) of every valid line; the others are listed in ``problems``."""
        kinds = self.kinds
        bounded = self.bounded
        for number, line in enumerate(source, 1):
            self.hasher.update(line)
            self.count = number
            try:
                entry = decode_entry(orjson.loads(line))
            except (ValueError, KeyError, TypeError, binascii.Error):
                self.problems.append(f"{INDEX} line {number} is unreadable")
                continue
            relative = entry["p"]
            kind = entry["t"]
            if bounded:
                if self._last and not walk_before(self._last, relative):
                    raise _Unordered
                self._last = relative
                misplaced = self._misplaced(entry)
            else:
                misplaced = _misplaced_among(entry, kinds)
            if misplaced:
                self.problems.append(f"{INDEX} line {number} is damaged: {shown(relative)} {misplaced}")
                continue
            if kind == "h":
                self.named.add(entry["l"])
            if not bounded:
                kinds[relative] = _KIND_OF[kind]
            elif kind == "d":
                kinds[relative] = "d"
            elif kind == "f" and self.firsts is not None and relative in self.firsts:
                self.seen.add(relative)
            yield line, entry

    def _misplaced(self, entry: dict[str, Any]) -> str | None:
        """``_misplaced_among`` for an index in walk order (a repeat is out of order)."""
        relative = entry["p"]
        if "/" in relative:
            parent = relative.rsplit("/", 1)[0]
            if parent not in self.kinds:
                return f"is below {shown(parent)}, which the index does not list as a folder before it"
        if entry["t"] == "h":
            target = entry["l"]
            if target not in self.seen if self.firsts is not None else not walk_before(target, relative):
                return f"is a hard link to {shown(target)}, which the index does not list as a file before it"
        return None


def hard_link_names(store: Host, path: str) -> set[str]:
    """The names the hard links of an index (on ``store``) point to: lines written as aura-ops
    writes them (``"t":"h"``) are parsed; a hard link written otherwise is then not found, and
    reported as damaged (never taken for sound)."""
    names: set[str] = set()
    with store.open_read(path) as source:
        for line in source:
            if b'"t":"h"' not in line:
                continue
            try:
                entry = decode_entry(orjson.loads(line))
            except (ValueError, KeyError, TypeError, binascii.Error):
                continue
            if entry["t"] == "h":
                names.add(entry["l"])
    return names


class _Unlisted:
    """What a stored tree holds that its index does not list (top-most only: never below
    something unlisted), found folder by folder as the index is read. ``kinds`` None (an index
    in walk order): the entries of one folder come together, in name order, and are merged with
    the folder's names as stored, sorted (memory: one name per stored entry of that folder, not
    a set of the index's names beside a listing of the folder); else every path's type, and the
    folders are listed at the end."""

    def __init__(self, store: Host, tree: str, kinds: dict[str, str] | None) -> None:
        self.store = store
        self.tree = tree
        self.kinds = kinds
        self.sound: set[str] = {""}  # the index's folders found as folders (their parents too)
        self.pending: set[str] = {""}  # of those, the ones not listed yet
        self.group: str | None = None
        self.stored: list[str] | None = None  # the group's folder's names as stored, sorted
        self.at = 0  # how far the index's names have reached in ``stored``
        self.extra: set[str] = set()  # the group's stored names the index does not list
        self.found: list[tuple[str, DirEntry]] = []

    def entry(self, relative: str) -> None:
        """Each entry the index holds (valid ones), in the index's order."""
        if self.kinds is not None:
            return
        head, _, name = relative.rpartition("/")
        if head != self.group:
            self._close()
            self.group = head
            if head in self.pending:
                self.pending.remove(head)
                self.stored = sorted(self.store.listdir(self._directory(head)))
        stored = self.stored
        if stored is None:
            return
        at = self.at
        while at < len(stored) and stored[at] < name:
            self.extra.add(stored[at])
            at += 1
        if at < len(stored) and stored[at] == name:
            at += 1
        self.at = at

    def parent_sound(self, relative: str) -> bool:
        return relative.rpartition("/")[0] in self.sound

    def folder(self, relative: str) -> None:
        """A folder of the index found as a folder in the tree, below such folders."""
        self.sound.add(relative)
        self.pending.add(relative)

    def _directory(self, relative_dir: str) -> str:
        return f"{self.tree}/{relative_dir}" if relative_dir else self.tree

    def _close(self) -> None:
        if self.group is not None and self.stored is not None:
            self.extra.update(self.stored[self.at :])
            if self.extra:
                self._list(self.group, None, self.extra)
        self.stored, self.at, self.extra = None, 0, set()

    def finish(self) -> list[tuple[str, DirEntry]]:
        """(path, entry) of everything unlisted, in the order found."""
        self._close()
        self.group = None
        for relative_dir in sorted(self.pending, key=lambda path: path.split("/") if path else []):
            self._list(relative_dir, set())
        self.pending = set()
        return self.found

    def _list(self, relative_dir: str, names: set[str] | None, only: set[str] | None = None) -> None:
        """Record the entries of ``relative_dir`` not in the index: those not among ``names``,
        or (``only``) those named there."""
        for item in self.store.scandir(self._directory(relative_dir)):
            relative = f"{relative_dir}/{item.name}" if relative_dir else item.name
            if only is not None:
                unlisted = item.name in only
            elif self.kinds is not None:
                unlisted = relative not in self.kinds
            else:
                unlisted = names is not None and item.name not in names
            if unlisted:
                self.found.append((relative, item))


def _misplaced_among(entry: dict[str, Any], kinds: dict[str, str]) -> str | None:
    """``_misplaced`` against the types of the entries before it."""
    relative = entry["p"]
    if relative in kinds:
        return "is listed twice"
    if "/" in relative:
        parent = relative.rsplit("/", 1)[0]
        if kinds.get(parent) != "d":
            return f"is below {shown(parent)}, which the index does not list as a folder before it"
    if entry["t"] == "h" and kinds.get(entry["l"]) != "f":
        return f"is a hard link to {shown(entry['l'])}, which the index does not list as a file before it"
    return None


@dataclass
class Outline:
    """What a restore keeps of an index in memory: the folders' lines (their metadata is applied
    last), the files hard links name, the file's checksum, the lines that could not be read, and
    what the stored tree holds that the index does not list; the entries themselves are read
    again, in order, by ``entries``. An index in walk order (``ordered``, as aura-ops writes it)
    costs memory by its folders only; another one also by every path's type (``kinds``)."""

    path: str
    algorithm: str
    kinds: dict[str, str]  # ordered: the folders only
    folders: dict[str, bytes]
    firsts: set[str]
    digest: str
    problems: list[str]
    ordered: bool  # in walk order (``walk_before``): a target's walk can be read beside it
    count: int  # lines
    unlisted: list[str] | None = None  # in the stored tree, not in the index (top-most only)
    label: str = INDEX
    # ``sketched``: only hashed, its order and hard links read (``checked_sketch``): ``entries``
    # checks every line and fills ``kinds``, ``folders`` and ``unlisted`` as it reads them;
    # ``damaged`` makes the error a damaged line is then, ``tree`` the stored tree compared
    sketched: bool = False
    damaged: Callable[[str], VerificationError] | None = None
    tree: str | None = None

    def folder(self, relative: str) -> dict[str, Any] | None:
        """The index's entry of folder ``relative`` (None: it lists no such folder)."""
        line = self.folders.get(relative)
        return None if line is None else decode_entry(orjson.loads(line))

    def folders_deepest_first(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(path, entry) of every folder, in the reverse of the index's order (children first)."""
        for relative, line in reversed(self.folders.items()):
            yield relative, decode_entry(orjson.loads(line))

    def entries(self, store: Host) -> Iterator[tuple[str, dict[str, Any]]]:
        """The entries again, in file order, hashed as they are read: VerificationError at the
        first line that is not what was read the first time, or at the end when the file's
        checksum differs (the index changed meanwhile: what was built from it must be dropped).
        A hard link is not checked here to name a file: its reader does (``firsts``)."""
        if self.sketched:
            yield from self._entries_checked(store)
            return
        hasher = checksum.new(self.algorithm)
        kinds = self.kinds
        seen: set[str] = set()  # (only for an index not in walk order: else the order rules out repeats)
        last = ""
        count = 0
        with store.open_read(self.path) as source:
            for line in source:
                hasher.update(line)
                count += 1
                try:
                    entry = decode_entry(orjson.loads(line))
                except (ValueError, KeyError, TypeError, binascii.Error):
                    break
                relative = entry["p"]
                if self.ordered:
                    if (last and not walk_before(last, relative)) or ((entry["t"] == "d") != (relative in kinds)):
                        break
                    last = relative
                elif kinds.get(relative) != entry["t"] or relative in seen:
                    break
                else:
                    seen.add(relative)
                yield relative, entry
            else:
                if count == self.count and hasher.hexdigest() == self.digest:
                    return
        raise VerificationError(f"{self.label} changed while it was read")

    def _entries_checked(self, store: Host) -> Iterator[tuple[str, dict[str, Any]]]:
        """``entries`` of a sketched outline: each line checked as ``read_outline`` checks it
        (a damaged one ends the reading with ``damaged``), the folders and what the stored tree
        holds that the index does not list recorded as they are read."""
        reader = _LineReader(self.algorithm, bounded=True, firsts=self.firsts)
        reader.kinds = self.kinds
        unlisted = _Unlisted(store, self.tree, None) if self.tree is not None else None
        folders = self.folders
        with store.open_read(self.path) as source:
            try:
                for line, entry in reader.read(source):
                    if reader.problems:
                        break
                    relative = entry["p"]
                    if entry["t"] == "d":
                        folders[relative] = line
                    if unlisted is not None:
                        unlisted.entry(relative)
                        if (
                            entry["t"] == "d"
                            and unlisted.parent_sound(relative)
                            and is_stored_folder(store, f"{self.tree}/{relative}")
                        ):
                            unlisted.folder(relative)
                    yield relative, entry
            except _Unordered:
                raise VerificationError(f"{self.label} changed while it was read") from None
        if reader.problems:
            assert self.damaged is not None
            raise self.damaged(reader.problems[0])
        if reader.count != self.count or reader.hasher.hexdigest() != self.digest:
            raise VerificationError(f"{self.label} changed while it was read")
        if unlisted is not None:
            self.unlisted = sorted(relative for relative, _ in unlisted.finish())


def _sketch(store: Host, path: str, algorithm: str) -> Outline:
    """An index hashed, its lines parsed only for their paths (in walk order?) and the files
    hard links name; what ``read_outline`` checks besides is left to ``Outline.entries``."""
    hasher = checksum.new(algorithm)
    problems: list[str] = []
    firsts: set[str] = set()
    ordered = True
    last = ""
    count = 0
    loads = orjson.loads
    with store.open_read(path) as source:
        for count, line in enumerate(source, 1):
            hasher.update(line)
            try:
                entry = loads(line)
                relative = entry["p"] if "pb" not in entry else decode_entry(entry)["p"]
                if entry.get("t") == "h":
                    firsts.add(decode_entry(entry)["l"])
            except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
                problems.append(f"{INDEX} line {count} is unreadable")
                continue
            if ordered and last and not (isinstance(relative, str) and walk_before(last, relative)):
                ordered = False
            last = relative if isinstance(relative, str) else last
    return Outline(path, algorithm, {}, {}, firsts, hasher.hexdigest(), problems, ordered, count, sketched=True)


def checked_sketch(store: Host, snapshot: Snapshot, name: str) -> Outline:
    """``checked_outline`` for a restore, in one full reading instead of two: the index is
    hashed and checked against the manifest first (VerificationError, exit 3, as
    ``checked_outline``), its order and hard links read; every line is then checked as the
    restore reads it (``Outline.entries``: a damaged one is a VerificationError there, before
    the target is touched) and what the stored tree holds that the index does not list is
    found then (``unlisted``). An index not in walk order is outlined as ``checked_outline``
    does (every path's type kept)."""
    outline = _checked(snapshot, name, lambda path, algorithm: _sketch(store, str(path), algorithm))
    if not outline.ordered:
        return checked_outline(store, snapshot, name)
    outline.label = f"{name}: {INDEX} of snapshot {snapshot.id}"
    outline.damaged = lambda problem: VerificationError(f"{name}: {problem} in snapshot {snapshot.id}")
    tree = str(snapshot.component_dir(name) / TREE)
    outline.tree = tree if is_stored_folder(store, tree) else None
    return outline


def read_outline(
    store: Host, path: Path | str, algorithm: str = checksum.ALGORITHM, tree: str | None = None
) -> Outline:
    """An index's ``Outline`` (read through ``store``, hashed as it is read; FileNotFoundError
    when it is missing); with ``tree`` (a stored tree on ``store``), what it holds that the index
    does not list, found as the index is read."""
    try:
        return _read_outline(store, str(path), algorithm, tree, bounded=True)
    except _Unordered:
        return _read_outline(store, str(path), algorithm, tree, bounded=False)


def _read_outline(store: Host, path: str, algorithm: str, tree: str | None, bounded: bool) -> Outline:
    reader = _LineReader(algorithm, bounded=bounded)
    unlisted = _Unlisted(store, tree, None if bounded else reader.kinds) if tree is not None else None
    folders: dict[str, bytes] = {}
    with store.open_read(path) as source:
        for line, entry in reader.read(source):
            relative = entry["p"]
            if entry["t"] == "d":
                folders[relative] = line
            if unlisted is None:
                continue
            unlisted.entry(relative)
            if entry["t"] == "d" and unlisted.parent_sound(relative) and is_stored_folder(store, f"{tree}/{relative}"):
                unlisted.folder(relative)
    return Outline(
        path,
        algorithm,
        reader.kinds,
        folders,
        reader.named,
        reader.hasher.hexdigest(),
        reader.problems,
        bounded,
        reader.count,
        sorted(relative for relative, _ in unlisted.finish()) if unlisted is not None else None,
    )


def checked_outline(store: Host, snapshot: Snapshot, name: str) -> Outline:
    """``checked_index`` as an ``Outline``: VerificationError (exit 3) when the index is missing,
    changed or holds an unreadable line (and, from ``Outline.entries``, when it changes later)."""
    tree = snapshot.component_dir(name) / TREE

    def read(path: Path, algorithm: str) -> Outline:
        stored = str(tree) if is_stored_folder(store, str(tree)) else None
        return read_outline(store, path, algorithm, stored)

    outline = _checked(snapshot, name, read)
    outline.label = f"{name}: {INDEX} of snapshot {snapshot.id}"
    return outline


def index_damage(store: Host, snapshot: Snapshot, name: str, cache: VerifiedCache | None = None) -> str | None:
    """Why this component's index (read through ``store``) cannot be trusted (missing, changed),
    or None."""
    info = snapshot.manifest["components"][name].get("artifacts", {}).get(INDEX, {})
    path = str(snapshot.component_dir(name) / INDEX)
    try:
        st = store.stat(path)
    except OSError:
        st = None
    if st is None:
        return f"{name}: {INDEX} is missing"
    key = VerifiedCache.key_of(st.dev, st.ino, st.size, st.mtime_ns, st.ctime_ns)
    if cache is not None and cache.entries.get(key) == info.get("hash"):
        return None
    try:
        with store.open_read(path) as source:
            digest, _ = stream_digest(source, snapshot.manifest.get("checksum_algorithm", checksum.ALGORITHM))
    except OSError as exc:  # a folder, a FIFO or a device where the index should be
        return f"{name}: {INDEX} cannot be read ({exc.strerror})"
    if digest != info.get("hash"):
        return f"{name}: {INDEX} changed since the snapshot was sealed (checksum mismatch)"
    if cache is not None:
        cache.entries[key] = digest
    return None


_buffers = threading.local()


def stream_digest(source: IO[bytes], algorithm: str) -> tuple[str, int]:
    """(hash, bytes) of what an open stream holds from where it is on (read in checksum.CHUNK
    parts into a buffer reused per thread)."""
    if not hasattr(_buffers, "view"):
        _buffers.view = memoryview(bytearray(checksum.CHUNK))
    view: memoryview = _buffers.view
    hasher = checksum.new(algorithm)
    size = 0
    while count := source.readinto(view):  # type: ignore[attr-defined]
        hasher.update(view[:count])
        size += count
    return str(hasher.hexdigest()), size


# ---------------------------------------------------------------- xattrs and kinds


def encode_xattrs(xattrs: dict[str, bytes]) -> dict[str, str]:
    return {name: base64.b64encode(value).decode("ascii") for name, value in sorted(xattrs.items()) if _is_utf8(name)}


def decode_xattrs(entry: dict[str, Any]) -> dict[str, bytes]:
    return {name: base64.b64decode(value) for name, value in entry.get("x", {}).items()}


def with_xattrs(entry: dict[str, Any], xattrs: dict[str, bytes]) -> dict[str, Any]:
    if xattrs:
        entry["x"] = encode_xattrs(xattrs)
    return entry


def kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "d"
    if stat.S_ISLNK(mode):
        return "l"
    return "f" if stat.S_ISREG(mode) else "special"


KIND_NAMES = {"d": "a folder", "l": "a symlink", "f": "a file", "h": "a file", "special": "a special file"}


# ---------------------------------------------------------------- verify


_ROOT = "(root)"


class _TreeChecker:
    """Compares a stored tree with its index, entry by entry as the index is read (parents
    first), then lists the folders found as the index says for what the index does not hold;
    collects every difference as a problem, in the tree's order (depth first, by name), the
    entries missing from the tree last (in the index's order)."""

    def __init__(self, store: Host, snapshot: Snapshot, name: str, manifest: FilesManifest) -> None:
        self.store = store
        self.tree = str(snapshot.component_dir(name) / TREE)
        self.algorithm = snapshot.manifest.get("checksum_algorithm", checksum.ALGORITHM)
        self.owners = manifest.owners_kept
        self.xattrs = manifest.xattrs_in_index
        self.root = manifest.root
        self.found: list[tuple[list[str], int, str]] = []  # (path's parts, order, problem)
        self.missing: list[str] = []
        self.bad: set[str] = set()  # folders missing or of another type: what is under them is not looked at
        self.hashed = 0

    @property
    def problems(self) -> list[str]:
        return [problem for _, _, problem in sorted(self.found)] + self.missing

    def problem(self, relative: str, what: str) -> None:
        parts = relative.split("/") if relative != _ROOT else []  # (the root first)
        self.found.append((parts, len(self.found), f"{shown(relative)}: {what}"))

    def run(self, entries: Iterator[tuple[bytes, dict[str, Any]]], unlisted: _Unlisted) -> None:
        if not is_stored_folder(self.store, self.tree):
            self.missing.append(f"{TREE}: missing")
            for _ in entries:  # (the index's own problems are still listed)
                pass
            return
        self.check_root()
        for _, entry in entries:
            unlisted.entry(entry["p"])
            if self.visit(entry):
                unlisted.folder(entry["p"])
        for relative, item in unlisted.finish():
            st = item.stat(follow_symlinks=False)
            link = f" (a symlink to {shown(self.store.readlink(item.path))})" if stat.S_ISLNK(st.st_mode) else ""
            self.problem(relative, f"not in the index{link}")

    def check_root(self) -> None:
        if not self.root:
            return
        st = self.store.lstat(self.tree)
        self.check_mode_owner(_ROOT, st, self.root)

    def visit(self, entry: dict[str, Any]) -> bool:
        """Check an entry (unless below something missing or of another type); True for a
        folder found as one (what it holds is looked at)."""
        relative = entry["p"]
        if relative.rpartition("/")[0] in self.bad:
            if entry["t"] == "d":
                self.bad.add(relative)  # (what is under a missing folder is not listed)
            return False
        path = f"{self.tree}/{relative}"
        try:
            st = self.store.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            if entry["t"] == "d":
                self.bad.add(relative)
            self.missing.append(f"{shown(relative)}: missing")
            return False
        return self.check(relative, path, st, entry) and entry["t"] == "d"

    def check(self, relative: str, path: str, st: StatResult, entry: dict[str, Any]) -> bool:
        """Check one entry; False when its type differs (its children are then not looked at)."""
        expected = "f" if entry["t"] == "h" else entry["t"]
        found = kind_of(st.st_mode)
        if found != expected:
            self.problem(relative, f"is {KIND_NAMES[found]}, the index says {KIND_NAMES[expected]}")
            if entry["t"] == "d":
                self.bad.add(relative)
            return False
        if entry["t"] == "l":
            link = self.store.readlink(path)
            if link != entry["l"]:
                self.problem(relative, f"symlink changed (to {shown(link)}; the index says {shown(entry['l'])})")
            if self.owners and (st.st_uid, st.st_gid) != (entry["u"], entry["g"]):
                self.problem(relative, f"owner {st.st_uid}:{st.st_gid}; the index says {entry['u']}:{entry['g']}")
            return True
        if entry["t"] == "h":
            try:
                linked = self.store.lstat(f"{self.tree}/{entry['l']}").st_ino == st.st_ino
            except OSError:
                linked = False
            if not linked:
                self.problem(relative, f"no longer a hard link to {shown(entry['l'])}")
            return True
        if entry["t"] == "f":
            self.check_content(relative, path, st, entry)
        self.check_mode_owner(relative, st, entry)
        if self.xattrs and self.store.read_xattrs(path) != decode_xattrs(entry):
            self.problem(relative, "xattrs or ACLs changed")
        return True

    def check_mode_owner(self, relative: str, st: StatResult, entry: dict[str, Any]) -> None:
        if st.st_mode != entry["m"]:
            self.problem(relative, f"mode {stat.filemode(st.st_mode)}; the index says {stat.filemode(entry['m'])}")
        if self.owners and (st.st_uid, st.st_gid) != (entry["u"], entry["g"]):
            self.problem(relative, f"owner {st.st_uid}:{st.st_gid}; the index says {entry['u']}:{entry['g']}")

    def check_content(self, relative: str, path: str, st: StatResult, entry: dict[str, Any]) -> None:
        if st.st_size != entry["s"]:
            self.problem(relative, f"content changed ({st.st_size} bytes; the index says {entry['s']})")
            return
        digest = self.store.hash_file(path, self.algorithm)  # always: bit rot keeps the metadata
        self.hashed += 1
        if digest != entry["h"]:
            self.problem(relative, "content changed (checksum mismatch)")


def verify_tree(store: Host, snapshot: Snapshot, name: str, manifest: FilesManifest) -> dict[str, Any]:
    """Check the stored tree (on ``store``) against the index: each file's content (every file
    hashed), every entry's type, mode (and owner, when the snapshot kept owners), xattrs, symlink
    targets, hard links, and what is in the tree but not in the index. Every problem found is
    returned in ``problems``. Each entry is checked as the index is read: in memory, only the
    folders' paths and the names hard links point to (every path's type for an index that is not
    in walk order)."""
    path = str(snapshot.component_dir(name) / INDEX)
    try:
        firsts = hard_link_names(store, path)
    except FileNotFoundError:
        return {"problems": [f"{name}: {INDEX} is missing"]}
    except OSError as exc:  # a folder, a FIFO or a device where the index should be
        return {"problems": [f"{name}: {INDEX} cannot be read ({exc.strerror})"]}
    try:
        reader, checker, failed = _check_tree(store, snapshot, name, manifest, path, bounded=True, firsts=firsts)
    except _Unordered:
        reader, checker, failed = _check_tree(store, snapshot, name, manifest, path, bounded=False, firsts=None)
    if failed:
        return {"problems": [f"{name}: {INDEX} cannot be read ({failed[0].strerror})"]}
    problems = [f"{name}: {problem}" for problem in reader.problems + checker.problems]
    return {"files_hashed": checker.hashed, "problems": problems}


def _check_tree(
    store: Host,
    snapshot: Snapshot,
    name: str,
    manifest: FilesManifest,
    path: str,
    bounded: bool,
    firsts: set[str] | None,
) -> tuple[_LineReader, _TreeChecker, list[OSError]]:
    """One reading of the index beside the stored tree (``_Unordered`` when ``bounded`` and the
    index is not in walk order: the tree was only read so far)."""
    reader = _LineReader(snapshot.manifest.get("checksum_algorithm", checksum.ALGORITHM), bounded, firsts)
    checker = _TreeChecker(store, snapshot, name, manifest)
    unlisted = _Unlisted(store, checker.tree, None if bounded else reader.kinds)
    failed: list[OSError] = []
    try:
        source = store.open_read(path)
    except OSError as exc:
        return reader, checker, [exc]
    with source:
        checker.run(reader.read(_guarded(source, failed)), unlisted)
    return reader, checker, failed


def _guarded(source: IO[bytes], failed: list[OSError]) -> Iterator[bytes]:
    """The lines of ``source``; an error while reading ends them and is put in ``failed``."""
    try:
        yield from source
    except OSError as exc:
        failed.append(exc)


def is_stored_folder(store: Host, path: str) -> bool:
    """A real folder at ``path`` on ``store`` (not a symlink to one)."""
    try:
        st = store.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return st is not None and st.is_dir


def not_in_index(store: Host, tree: str, index: Index | Outline) -> list[str]:
    """Entries of the stored tree (on ``store``) that the index does not list (top-most only):
    never restored. (An ``Outline`` read with its tree found them as it was read.)"""
    if isinstance(index, Outline):
        if index.unlisted is None:  # (read without its tree)
            index.unlisted = read_outline(store, index.path, index.algorithm, tree).unlisted or []
        return index.unlisted
    kinds = {p: e["t"] for p, e in index.entries.items()}
    found = []
    stack = [""]
    while stack:
        relative_dir = stack.pop()
        for item in store.scandir(f"{tree}/{relative_dir}" if relative_dir else tree):
            relative = f"{relative_dir}/{item.name}" if relative_dir else item.name
            kind = kinds.get(relative)
            if kind is None:
                found.append(relative)
            elif kind == "d" and item.is_dir(follow_symlinks=False):
                stack.append(relative)
    return sorted(found)


# ---------------------------------------------------------------- streamed beside a walk


FileLines = dict[str, tuple[dict[str, Any], bytes]]


class FolderLines:
    """An index read as a stream beside a walk of the source (an incremental snapshot): the file
    entries of one folder at a time (or of a part of it: the names up to one), in the index's
    order, which is ``Host.walk``'s (a folder's entries in name order, then what is below its
    first subfolder, ...), every byte hashed as it is read, in ``checksum.CHUNK`` blocks.
    Memory: the lines of one part asked for, whatever the folder's size. A line that cannot be
    read is left out; ``finish`` gives the hash of the whole file, to be compared with the
    recorded one before anything taken from it is kept."""

    def __init__(self, source: IO[bytes], algorithm: str) -> None:
        self.source = source
        self.hasher = checksum.new(algorithm)
        self.lines = self._lines()
        self.head: _IndexLine | None = None  # the next line, read (and decoded) and not yet given

    def _lines(self) -> Iterator[bytes]:
        """Every line, newline included (orjson writes none inside a line)."""
        rest = b""
        read, update = self.source.read, self.hasher.update
        while chunk := read(checksum.CHUNK):
            update(chunk)
            lines = (rest + chunk if rest else chunk).splitlines(keepends=True)
            rest = b"" if lines[-1].endswith(b"\n") else lines.pop()
            yield from lines
        if rest:
            yield rest + b"\n"

    def files_in(self, folder: str, names: Sequence[str] | None = None) -> FileLines:
        """The file entries (``"t": "f"``) directly in ``folder`` (``""``: the root) by name,
        each with its line (newline included); with ``names`` (a part of the folder, as the walk
        gives it), only those of these names, the lines read up to the greatest (as str): the
        next call for the same folder goes on after it, and what it holds is at most one entry
        per name asked for, however many names the index lists there that are gone since.
        Empty when the index lists none there. Folders (and parts) must be asked for in walk
        order: the lines before them are passed over, and a folder asked for after one the
        index lists later gets nothing."""
        files: FileLines = {}
        wanted = set(names) if names is not None else None
        through = max(names, default=None) if names is not None else None
        if names is not None and through is None:
            return files  # (nothing asked for: nothing read)
        lines, loads, head = self.lines, orjson.loads, self.head
        self.head = None
        key = None
        reached = False  # a line of ``folder`` was read: the next other folder is past it
        while True:
            if head is not None:
                parent, name, entry, line = head
                head = None
            else:
                line = next(lines, b"")
                if not line:
                    return files
                try:
                    entry = loads(line)
                    path = (
                        entry["p"] if "pb" not in entry else os.fsdecode(base64.b64decode(entry["pb"], validate=True))
                    )
                    parent, _, name = path.rpartition("/")
                except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
                    continue  # (a line that cannot be read is left out)
            if parent == folder:
                if through is not None and name > through:
                    break
                if entry.get("t") == "f" and (wanted is None or name in wanted):
                    files[name] = (entry, line)
                reached = True
                continue
            if reached:
                break
            key = key or _folder_key(folder)
            if _folder_key(parent) > key:
                break  # the index has nothing (more) in ``folder``: it is new
            # (else a line of a folder gone since the index was written: passed over)
        self.head = (parent, name, entry, line)
        return files

    def finish(self) -> str:
        """Read what is left (undecoded); return the hash of the whole index."""
        while chunk := self.source.read(checksum.CHUNK):
            self.hasher.update(chunk)
        return str(self.hasher.hexdigest())


_IndexLine = tuple[str, str, dict[str, Any], bytes]  # (folder, name, entry, line)


def _folder_key(folder: str) -> tuple[str, ...]:
    """Where a folder's lines stand in an index: folders are listed depth first in name order,
    which is the order of their paths as tuples of names."""
    return tuple(folder.split("/")) if folder else ()
