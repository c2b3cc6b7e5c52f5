"""Restoring a files snapshot: nothing unverified is written, and the target ends wholly old or
wholly new. The target is reached only through its ``Host``; the snapshot's stored tree through
the store host (the control machine, where the repository is).

The restored tree is built in a staging folder beside the target (``<target>.aura-staging-<run>``,
on the same file system) from the index alone: every regular file is hashed as it is copied out
of the snapshot and compared with the index, so a missing or changed file in the repository
stops the restore before the target is touched (exit 3, naming the file). A file whose content,
mode, owner, mtime and xattrs already equal the index is hard-linked from the current target
instead of copied (it is read and hashed all the same): a restore needs room only for what
changed. A file in the stored tree that the index does not list is reported, never restored.
Entries of the target that the snapshot's excludes match are moved into the new tree.

Then the staging folder and the target are exchanged in one rename (``renameat2`` with
``RENAME_EXCHANGE``; two renames where the file system cannot) and the old tree is removed.
Every step is recorded first (temporaries kind ``dir_swap``): a killed restore is finished (the
new tree is in place) or undone (the old one is) by the next command that takes the lock.

When the target is a mount point or holds one, or no staging folder can be made beside it, the
tree is staged and verified all the same, then applied in place with rsync (the report says so).

Test hook: ``AURA_FAULT=files-restore:<staged|excluded-moved|swapped|old-partly-removed>`` makes
the process exit abruptly (as SIGKILL would) at that point.
"""

from __future__ import annotations

import concurrent.futures
import errno
import os
import re
import stat
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from aura_ops import checksum, logs
from aura_ops.components.files.snapshot import IN_FLIGHT
from aura_ops.components.files.stored import (
    KIND_NAMES,
    TREE,
    FilesManifest,
    Outline,
    checked_outline,
    checked_sketch,
    decode_xattrs,
    is_stored_folder,
    kind_of,
    not_in_index,
    rsync_excludes,
    stream_digest,
    walk_before,
)
from aura_ops.errors import AuraError, UsageError, VerificationError
from aura_ops.hosts.base import NOT_REGULAR, Command, FileStat, Host, PutFile, StatResult, compile_excludes, shown
from aura_ops.hosts.inventory import LOCAL, Inventory
from aura_ops.repository import Snapshot
from aura_ops.state import temporaries

FAULT_ENV = "AURA_FAULT"
STAGING = ".aura-staging-"
OLD = ".aura-old-"
SHOWN_LIMIT = 1000  # paths kept in a report; the log names every one
LARGE_FILES = 256 << 10  # batches of files this large on average get a copying thread of their own
BATCH_FILES = 128  # a batch: the files of one folder, up to this many ...
BATCH_BYTES = 8 << 20  # ... or this many bytes (a batch is one ``Host.put_files`` call)


def _fault(point: str) -> None:
    if os.environ.get(FAULT_ENV) == f"files-restore:{point}":
        os._exit(137)


def _lstat(host: Host, path: str) -> FileStat:
    """``host.stat`` of ``path`` itself (not followed); FileNotFoundError when nothing is there."""
    st = host.stat(path, follow_symlinks=False)
    if st is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    return st


# ---------------------------------------------------------------- the target as it is


@dataclass
class Current:
    """What the target holds now: entries by relative path (excludes left out), and the top-most
    entries the excludes match (they are carried into the new tree). ``first``: an entry it holds
    (None: it holds none), also when the entries were only counted (``entries`` left empty)."""

    exists: bool
    entries: dict[str, StatResult] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    first: str | None = None
    count: int = 0


def scan(host: Host, target: str, patterns: list[str]) -> Current:
    """Read the target's tree on ``host`` (symlinks are not followed; entries that vanish are
    skipped)."""
    st = host.stat(target, follow_symlinks=False)
    if st is None or not st.is_dir:
        return Current(exists=st is not None)
    current = Current(exists=True)
    entries = current.entries
    for relative, entry in host.walk(target, compile_excludes(patterns), on_excluded=current.excluded.append):
        entries[relative] = entry
    current.first = next(iter(entries), None)
    current.count = len(entries)
    return current


def look(host: Host, target: str, patterns: list[str]) -> Current:
    """``scan`` without keeping the entries: how many there are, the first, the excluded ones
    (memory bounded by what the excludes match, not by the tree)."""
    st = host.stat(target, follow_symlinks=False)
    if st is None or not st.is_dir:
        return Current(exists=st is not None)
    current = Current(exists=True)
    for relative, _ in host.walk(target, compile_excludes(patterns), on_excluded=current.excluded.append):
        if current.first is None:
            current.first = relative
        current.count += 1
    return current


class _Beside:
    """The target's entries read beside an index in walk order (both in ``walk_before`` order):
    ``take`` gives the target's entry at the index's next path, or None; nothing is kept but the
    walk's own state. ``passed`` gets every entry of the target the index does not hold."""

    def __init__(self, host: Host, target: str, patterns: list[str], exists: bool) -> None:
        self.walk: Iterator[tuple[str, StatResult]] = (
            host.walk(target, compile_excludes(patterns)) if exists else iter(())
        )
        self.next: tuple[str, StatResult] | None = next(self.walk, None)
        self.passed: list[str] | None = None  # (collected only when asked: a dry run)

    def take(self, relative: str) -> StatResult | None:
        found = self.next
        while found is not None and found[0] != relative and walk_before(found[0], relative):
            if self.passed is not None:
                self.passed.append(found[0])
            found = next(self.walk, None)
        if found is not None and found[0] == relative:
            self.next = next(self.walk, None)
            return found[1]
        self.next = found
        return None

    def rest(self) -> list[str]:
        """What is left of the target's entries after the index's last."""
        rest = [] if self.next is None else [self.next[0]]
        rest += [relative for relative, _ in self.walk]
        self.next = None
        return rest


class _Listed:
    """The target's entries as ``scan`` read them (for an index not in walk order)."""

    def __init__(self, current: Current) -> None:
        self.current = current

    def take(self, relative: str) -> StatResult | None:
        return self.current.entries.get(relative)


def count(host: Host, target: str, patterns: list[str]) -> int:
    """How many entries (excludes left out) ``target`` on ``host`` holds (none kept in memory)."""
    return look(host, target, patterns).count


def _unescape_mount(field_: bytes) -> str:
    """A mount point as /proc/self/mountinfo writes it (space, tab, newline, backslash as \\ooo)."""
    return os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), field_))


def mounts_at_or_under(host: Host, target: str) -> list[str]:
    """Mount points at ``target`` or below it on ``host`` (from its /proc/self/mountinfo)."""
    try:
        info = host.read_bytes("/proc/self/mountinfo")
    except OSError:
        return []
    points = [_unescape_mount(line.split()[4]) for line in info.splitlines() if len(line.split()) > 4]
    prefix = target.rstrip("/") + "/"
    return sorted(p for p in points if p == target or p.startswith(prefix))


# ---------------------------------------------------------------- renames


def _unsupported(exc: OSError) -> bool:
    return exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


def _inode(host: Host, path: str | None) -> int | None:
    """The inode of a real folder at ``path`` (None when there is none)."""
    if not path:
        return None
    try:
        st = host.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return st.ino if st is not None and st.is_dir else None


def _remove_tree(host: Host, path: str, fault: bool = False) -> None:
    """Remove a folder and everything in it (symlinks are removed, never followed)."""
    if not _lstat(host, path).is_dir:
        host.remove(path)  # a symlink (or file) put at the target meanwhile: never followed
        return
    for number, name in enumerate(host.listdir(path)):
        host.remove_tree(f"{path}/{name}")
        if fault and number == 0:
            _fault("old-partly-removed")
    host.rmdir(path)


# ---------------------------------------------------------------- staging


@dataclass
class _Batch:
    """Files of one folder of the index, copied together (one ``Host.put_files``): each as
    (name, relative path, index entry, the target's entry there or None)."""

    folder: str
    items: list[tuple[str, str, dict[str, Any], StatResult | None]] = field(default_factory=list)
    size: int = 0
    future: concurrent.futures.Future[_Done] | None = None

    def add(self, name: str, relative: str, entry: dict[str, Any], current: StatResult | None) -> None:
        self.items.append((name, relative, entry, current))
        self.size += entry["s"]

    def full(self) -> bool:
        return len(self.items) >= BATCH_FILES or self.size >= BATCH_BYTES


@dataclass
class _Done:
    """What a batch did: files copied (and their bytes), files linked from the target."""

    copied: int = 0
    copied_bytes: int = 0
    linked: int = 0


class _Stager:
    """Writes the index's tree into ``staging`` on ``host`` (or, for a dry run, only checks and
    compares). The snapshot's stored tree is read through ``store`` (the control machine)."""

    def __init__(
        self,
        host: Host,
        store: Host,
        name: str,
        snapshot: Snapshot,
        manifest: FilesManifest,
        index: Outline,
        destination: str,
        current: Current,
        staging: str | None,
    ) -> None:
        self.host = host
        self.store = store
        self.name = name
        self.snapshot = snapshot
        self.manifest = manifest
        self.tree = str(snapshot.component_dir(name) / TREE)
        self.index = index
        self.destination = destination
        self.current = current
        self.staging = staging
        self.algorithm = snapshot.manifest.get("checksum_algorithm", checksum.ALGORITHM)
        self.xattrs_in_index = manifest.xattrs_in_index
        self.owners = host.is_root()  # owners are given back only where the host's user may
        self.firsts = index.firsts
        self.first_batches: dict[str, _Batch] = {}  # the batch of each file hard links name
        self.queued = 0  # files sent to the workers and not yet accounted for
        self.linked = self.copied = self.copied_bytes = 0
        self.patterns = manifest.exclude
        self.now = time.time_ns()
        self.device = _lstat(host, staging).dev if staging else -1
        self.parents_checked: set[str] = set()

    def fail(self, relative: str, what: str) -> VerificationError:
        return VerificationError(f"{self.name}: {shown(relative)} {what} in snapshot {self.snapshot.id}")

    # -- checks of the stored tree (on the store: the repository)

    def stored_directory(self, relative: str) -> None:
        try:
            st = self.store.lstat(f"{self.tree}/{relative}")
        except FileNotFoundError:
            raise self.fail(relative, "is missing") from None
        if not stat.S_ISDIR(st.st_mode):
            raise self.fail(relative, f"is {KIND_NAMES[kind_of(st.st_mode)]}, the index says a folder")

    def stored_symlink(self, relative: str, entry: dict[str, Any]) -> None:
        try:
            link = self.store.readlink(f"{self.tree}/{relative}")
        except FileNotFoundError:
            raise self.fail(relative, "is missing") from None
        except OSError:
            raise self.fail(relative, "is not a symlink, the index says one") from None
        if link != entry["l"]:
            raise self.fail(relative, "is a changed symlink")

    def stored_file_present(self, relative: str, entry: dict[str, Any]) -> None:
        try:
            st = self.store.lstat(f"{self.tree}/{relative}")
        except FileNotFoundError:
            raise self.fail(relative, "is missing") from None
        if not stat.S_ISREG(st.st_mode) or st.st_size != entry["s"]:
            raise self.fail(relative, "does not match the index (changed in the repository)")

    def open_stored(self, relative: str) -> IO[bytes]:
        """The stored file opened on the store (never a symlink, never blocking on a FIFO)."""
        try:
            reader = self.store.open_regular(f"{self.tree}/{relative}")
        except FileNotFoundError:
            raise self.fail(relative, "is missing") from None
        except OSError as exc:
            raise self.fail(relative, f"cannot be read as a file ({exc.strerror})") from None
        if reader is None:
            raise self.fail(relative, "is not a regular file, the index says one")
        return reader

    def xattrs_of(self, entry: dict[str, Any], stored: str) -> dict[str, bytes]:
        """The xattrs to restore: from the (checked) index; from the stored tree (on the store)
        for snapshots made before the index recorded them."""
        return decode_xattrs(entry) if self.xattrs_in_index else self.store.read_xattrs(stored)

    # -- building (on the host)

    def build(self) -> None:
        """Write every entry of the index into the staging folder; VerificationError on the first
        artifact that does not match (the staging folder is then the caller's to remove). The
        files of one folder go to the host in batches (``put_files``: one call a batch), copied
        by a thread while this one reads the index and makes the folders; batches of large files
        by a second one (their copies and hashes run without the GIL: small files on two threads
        cost more in GIL hand-offs than they gain, measured at 200,000 files)."""
        small = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        large = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        pending: deque[tuple[concurrent.futures.Future[_Done], _Batch]] = deque()  # batches sent, in order
        self.queued = 0
        batch = _Batch("")
        listing = self.listing()

        def done(sent: tuple[concurrent.futures.Future[_Done], _Batch]) -> None:
            future, batch = sent
            self.account(future.result())
            self.queued -= len(batch.items)
            batch.items = []  # its entries dropped: it stays in ``first_batches`` only for its future

        def send(batch: _Batch) -> None:
            if batch.items and batch.future is None:
                pool = large if batch.size >= LARGE_FILES * len(batch.items) else small
                batch.future = pool.submit(self.files, batch)
                pending.append((batch.future, batch))
                self.queued += len(batch.items)
            while pending and (pending[0][0].done() or self.queued > IN_FLIGHT):
                done(pending.popleft())

        try:
            for relative, entry in self.index.entries(self.store):
                current = listing.take(relative)
                self.check_parent(relative)
                kind = entry["t"]
                if kind == "f":
                    folder, _, name = relative.rpartition("/")
                    if folder != batch.folder or batch.full() or batch.future is not None:
                        send(batch)
                        batch = _Batch(folder)
                    batch.add(name, relative, entry, current)
                    if relative in self.firsts:
                        self.first_batches[relative] = batch
                elif kind == "d":
                    self.stored_directory(relative)
                    self.host.mkdir(f"{self.staging}/{relative}", mode=0o700)
                elif kind == "l":
                    self.symlink(relative, entry)
                else:
                    self.hardlink(relative, entry, send)
            send(batch)
            while pending:
                done(pending.popleft())
        finally:
            small.shutdown(wait=True, cancel_futures=True)
            large.shutdown(wait=True, cancel_futures=True)

    def listing(self) -> _Beside | _Listed:
        """The target's entries, looked up in the index's order: read beside it when it is in
        walk order, else as ``scan`` read them (all in memory)."""
        if not self.index.ordered:
            return _Listed(self.current if self.current.entries else scan(self.host, self.destination, self.patterns))
        st = self.host.stat(self.destination, follow_symlinks=False)  # (as scan: never through a symlink there)
        return _Beside(self.host, self.destination, self.patterns, st is not None and st.is_dir)

    def check_parent(self, relative: str) -> None:
        """Every name is made below a folder this stager made itself (never through a symlink:
        read_index refuses such an index, and this holds whatever built the index)."""
        if "/" in relative:
            parent = relative.rsplit("/", 1)[0]
            if self.index.kinds.get(parent) != "d":
                raise self.fail(relative, f"is below {shown(parent)}, which the index does not hold as a folder")
            if parent not in self.parents_checked:
                if not _lstat(self.host, f"{self.staging}/{parent}").is_dir:
                    raise self.fail(relative, "would be written through a symlink")
                self.parents_checked.add(parent)

    def account(self, done: _Done) -> None:
        self.copied += done.copied
        self.copied_bytes += done.copied_bytes
        self.linked += done.linked

    def apply(self, path: str, entry: dict[str, Any], xattrs: dict[str, bytes], symlink: bool = False) -> None:
        self.host.set_metadata(
            path,
            owner=(entry["u"], entry["g"]) if self.owners else None,
            mode=None if symlink else stat.S_IMODE(entry["m"]),
            xattrs=xattrs,
            times_ns=(self.now, entry["mt"]),
        )

    def symlink(self, relative: str, entry: dict[str, Any]) -> None:
        self.stored_symlink(relative, entry)
        path = f"{self.staging}/{relative}"
        self.host.symlink(entry["l"], path)
        self.apply(path, entry, self.xattrs_of(entry, f"{self.tree}/{relative}"), symlink=True)

    def hardlink(self, relative: str, entry: dict[str, Any], send: Callable[[_Batch], None]) -> None:
        """A hard link to a file of the index, made once that file is in the staging tree (its
        batch sent now if it was still being gathered)."""
        batch = self.first_batches.get(entry["l"])
        if batch is None:  # (every file hard links name, as it is read)
            raise self.fail(relative, f"is a hard link to {shown(entry['l'])}, which the index does not hold")
        send(batch)
        assert batch.future is not None
        batch.future.result()
        self.host.link(f"{self.staging}/{entry['l']}", f"{self.staging}/{relative}")

    def files(self, batch: _Batch) -> _Done:
        """The batch's files into the staging tree: each linked from the target when it already
        holds exactly this file (``current``: the target's entry there), the others copied from
        the snapshot in one ``put_files`` and checked against the index."""
        done = _Done()
        puts: list[PutFile] = []
        copied: list[tuple[str, dict[str, Any]]] = []
        for name, relative, entry, current in batch.items:
            if self.link_current(relative, entry, f"{self.staging}/{relative}", current):
                self.stored_file_present(relative, entry)  # unused, but a snapshot missing it is damaged
                done.linked += 1
                continue
            owner = (entry["u"], entry["g"]) if self.owners else None
            xattrs = self.xattrs_of(entry, f"{self.tree}/{relative}")
            puts.append(PutFile(name, stat.S_IMODE(entry["m"]), owner, xattrs, (self.now, entry["mt"])))
            copied.append((relative, entry))
        if not puts:
            return done
        folder = f"/{batch.folder}" if batch.folder else ""
        results = self.host.put_files(f"{self.tree}{folder}", f"{self.staging}{folder}", puts, self.algorithm)
        for (relative, entry), put in zip(copied, results, strict=True):
            if put.error:
                raise self.unreadable(relative, put.error)
            if put.size != entry["s"] or put.digest != entry["h"]:
                raise self.fail(relative, "does not match the index (changed in the repository)")
            done.copied += 1
            done.copied_bytes += put.size
        return done

    def unreadable(self, relative: str, error: int) -> VerificationError:
        """Why a stored file was not copied (``PutResult.error``), as ``open_stored`` says it."""
        if error == errno.ENOENT:
            return self.fail(relative, "is missing")
        if error == NOT_REGULAR:
            return self.fail(relative, "is not a regular file, the index says one")
        return self.fail(relative, f"cannot be read as a file ({os.strerror(error)})")

    def reusable(self, current: StatResult, entry: dict[str, Any]) -> bool:
        return bool(
            stat.S_ISREG(current.st_mode)
            and current.st_nlink == 1
            and current.st_dev == self.device
            and current.st_size == entry["s"]
            and current.st_mode == entry["m"]
            and current.st_mtime_ns == entry["mt"]
            and (current.st_uid, current.st_gid) == (entry["u"], entry["g"])
        )

    def link_current(self, relative: str, entry: dict[str, Any], target: str, current: StatResult | None) -> bool:
        """Hard-link the target's own file when its walk listed it as this file (``reusable``),
        its content hashes to the index's and its xattrs match; False (nothing done) otherwise."""
        if current is None or not self.reusable(current, entry):
            return False
        return self.host.link_if_unchanged(
            f"{self.destination}/{relative}",
            target,
            listed=current,
            digest=entry["h"],
            xattrs=self.xattrs_of(entry, f"{self.tree}/{relative}"),
            algorithm=self.algorithm,
        )

    def finish(self) -> None:
        """Folder metadata last, deepest first (adding entries changes a folder's mtime), then the
        root's."""
        for relative, entry in self.index.folders_deepest_first():
            path = f"{self.staging}/{relative}"
            self.apply(path, entry, self.xattrs_of(entry, f"{self.tree}/{relative}"))
        self.apply_root()

    def root_entry(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        root = self.manifest.root or {}
        stored = self.store.lstat(self.tree)
        entry = {
            "m": root.get("m", stored.st_mode),
            "u": root.get("u", stored.st_uid),
            "g": root.get("g", stored.st_gid),
            "mt": root.get("mt", stored.st_mtime_ns),
        }
        xattrs = decode_xattrs(root) if self.xattrs_in_index else self.store.read_xattrs(self.tree)
        return entry, xattrs

    def apply_root(self) -> None:
        entry, xattrs = self.root_entry()
        self.apply(str(self.staging), entry, xattrs)

    # -- dry run

    def changes(self) -> list[str]:
        """What a restore would change, each artifact it would use checked; writes nothing."""
        lines = []
        files: set[str] = set()  # the files hard links name, as they are read
        listing = self.listing()
        if isinstance(listing, _Beside):
            listing.passed = []
        for relative, entry in self.index.entries(self.store):
            if entry["t"] == "f" and relative in self.firsts:
                files.add(relative)
            elif entry["t"] == "h" and entry["l"] not in files:
                raise self.fail(relative, f"is a hard link to {shown(entry['l'])}, which the index does not hold")
            line = self.change(relative, entry, listing.take(relative))
            if line:
                lines.append(line)
        if isinstance(listing, _Beside):
            deleted = [*(listing.passed or []), *listing.rest()]
        else:
            deleted = [relative for relative in listing.current.entries if relative not in self.index.kinds]
        lines += [f"deleting {shown(relative)}" for relative in deleted]
        return lines

    def change(self, relative: str, entry: dict[str, Any], current: StatResult | None) -> str | None:
        kind = entry["t"]
        expected = "f" if kind == "h" else kind
        if current is None or kind_of(current.st_mode) != expected:
            self.check_stored(relative, entry)
            if current is None:
                return f"creating {shown(relative)}"
            was = KIND_NAMES[kind_of(current.st_mode)]
            return f"replacing {shown(relative)} ({was} by {KIND_NAMES[expected]})"
        if kind == "h":
            return None
        differences = self.differences(relative, current, entry)
        if "content" in differences or "target" in differences:
            self.check_stored(relative, entry)
        return f"updating {shown(relative)} ({', '.join(differences)})" if differences else None

    def check_stored(self, relative: str, entry: dict[str, Any]) -> None:
        if entry["t"] == "d":
            self.stored_directory(relative)
        elif entry["t"] == "l":
            self.stored_symlink(relative, entry)
        elif entry["t"] == "f":
            with self.open_stored(relative) as reader:
                digest, size = stream_digest(reader, self.algorithm)
            if size != entry["s"] or digest != entry["h"]:
                raise self.fail(relative, "does not match the index (changed in the repository)")

    def differences(self, relative: str, current: StatResult, entry: dict[str, Any]) -> list[str]:
        path = f"{self.destination}/{relative}"
        host = self.host
        found = []
        if entry["t"] == "f" and (current.st_size != entry["s"] or host.hash_file(path, self.algorithm) != entry["h"]):
            found.append("content")
        if entry["t"] == "l" and host.readlink(path) != entry["l"]:
            found.append("target")
        if entry["t"] != "l" and current.st_mode != entry["m"]:
            found.append("mode")
        if self.owners and (current.st_uid, current.st_gid) != (entry["u"], entry["g"]):
            found.append("owner")
        if entry["t"] != "d" and current.st_mtime_ns != entry["mt"]:
            found.append("mtime")
        if entry["t"] != "l" and host.read_xattrs(path) != self.xattrs_of(entry, f"{self.tree}/{relative}"):
            found.append("xattrs")
        return found


# ---------------------------------------------------------------- excluded entries


def _excluded_moves(stager: _Stager, staging: str, destination: str) -> list[str]:
    """The target's excluded entries, checked to fit into the new tree (their missing parent
    folders are made there, as in the target); AuraError, before anything moved, when the
    snapshot holds something else at such a path."""
    host = stager.host
    moves = []
    for relative in sorted(stager.current.excluded):
        parts = relative.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            at = host.stat(f"{staging}/{parent}", follow_symlinks=False)
            if at is not None and not at.is_dir:
                raise AuraError(
                    f"{stager.name}: cannot keep the excluded {shown(relative)}: the snapshot has a "
                    f"{KIND_NAMES[kind_of(at.mode)][2:]} at {shown(parent)}; "
                    "nothing was changed"
                )
        if host.exists(f"{staging}/{relative}"):
            raise AuraError(
                f"{stager.name}: cannot keep the excluded {shown(relative)}: the snapshot holds "
                f"{shown(relative)} too; nothing was changed"
            )
        moves.append(relative)
    for relative in moves:
        _make_parents_like(host, relative, staging, destination)
    return moves


def _make_parents_like(host: Host, relative: str, staging: str, destination: str) -> None:
    parts = relative.split("/")
    for depth in range(1, len(parts)):
        parent = "/".join(parts[:depth])
        made = f"{staging}/{parent}"
        if host.is_dir(made):
            continue
        original = _lstat(host, f"{destination}/{parent}")
        host.mkdir(made, mode=0o700)
        host.set_metadata(
            made,
            owner=(original.uid, original.gid) if host.is_root() else None,
            mode=stat.S_IMODE(original.mode),
            xattrs=host.read_xattrs(f"{destination}/{parent}"),
        )


def _reset_mtimes(stager: _Stager, staging: str, moves: list[str]) -> None:
    """Moving entries in changed their folders' mtimes: put back the snapshot's (or the target's)."""
    parents = {relative.rsplit("/", 1)[0] if "/" in relative else "" for relative in moves}
    for parent in sorted(parents, key=len, reverse=True):
        entry = stager.index.folder(parent) if parent else stager.root_entry()[0]
        mtime = entry["mt"] if entry is not None else _lstat(stager.host, f"{stager.destination}/{parent}").mtime_ns
        stager.host.set_metadata(f"{staging}/{parent}" if parent else staging, times_ns=(stager.now, mtime))


# ---------------------------------------------------------------- restore


def make_rsync_restore(tree: str, target: str, excludes: list[str], dry_run: bool = False) -> Command:
    """rsync that makes ``target`` exactly ``tree`` (deletions included); used only to apply an
    already verified staging tree in place (a mount point, or no room for a swap). Both paths
    are on the host that runs it.

    ``--checksum``: rsync's quick check trusts size and mtime (to the second), so a same-size
    edit whose mtime matches (same second, or reset by a tool) would be skipped."""
    argv = ["rsync", "-aHAX", "--numeric-ids", "--delete", "--checksum"]
    if dry_run:
        argv += ["--dry-run", "--itemize-changes"]
    argv += rsync_excludes(excludes)
    argv += ["--", f"{tree}/", f"{target}/"]
    return Command(tuple(argv))


def _method(host: Host, destination: str) -> tuple[str, str]:
    """``swap`` (stage beside the target, exchange by rename) or ``in_place`` with the reason."""
    mounts = mounts_at_or_under(host, destination)
    if mounts:
        return "in_place", (
            f"{destination} is a mount point or holds one ({shown(mounts[0])}): the verified tree was "
            "applied in place with rsync (not atomically)"
        )
    if not host.access(os.path.dirname(destination), os.W_OK | os.X_OK):
        return "in_place", (
            f"no staging folder can be made beside {destination} (its parent is not writable): the tree was "
            "verified in the repository and applied in place with rsync (not atomically)"
        )
    return "swap", ""


def _staging_path(host: Host, snapshot: Snapshot, destination: str, run_id: str) -> str:
    parent = os.path.dirname(destination)
    if host.access(parent, os.W_OK | os.X_OK):
        return f"{parent}/{os.path.basename(destination)}{STAGING}{run_id}"
    # the repository's tmp folder: on this machine, so only for a host that is this machine
    return str(snapshot.path.parent.parent / "tmp" / f"restore-{run_id}")


def restore(
    host: Host,
    store: Host,
    name: str,
    snapshot: Snapshot,
    manifest: FilesManifest,
    target: str | None,
    dry_run: bool = False,
    run_id: str = "",
    replace: bool = True,
) -> dict[str, Any]:
    """Make ``target`` on ``host`` (default: the original path, resolved) exactly the snapshot's
    tree (read through ``store``, the control machine), every artifact checked against the index
    first; VerificationError (exit 3) before the target is touched when one does not match.
    ``replace`` False (nobody consented to replacing what the target holds, it was empty):
    UsageError (exit 2), nothing changed, when it holds something just before the swap."""
    destination = target if target is not None else host.realpath(manifest.source)
    if host.exists(destination) and not host.is_dir(destination):
        raise UsageError(f"{destination} is not a folder")
    # a restore reads the index once whole (its lines checked as it builds), a dry run twice
    index = checked_outline(store, snapshot, name) if dry_run else checked_sketch(store, snapshot, name)
    tree = str(snapshot.component_dir(name) / TREE)
    if not is_stored_folder(store, tree):
        raise VerificationError(f"{name}: the stored tree ({TREE}) of snapshot {snapshot.id} is missing")
    st = host.stat(destination, follow_symlinks=False)
    current = Current(exists=st is not None)  # (its entries are read beside the index's, as it is built)
    report: dict[str, Any] = {"target": destination, "dry_run": dry_run, "not_in_index": []}
    if dry_run:
        _report_unlisted(report, store, tree, index, snapshot)
        stager = _Stager(host, store, name, snapshot, manifest, index, destination, current, None)
        report["changes"] = stager.changes()
        return report
    run_id = run_id or str(os.getpid())
    parent = os.path.dirname(destination)
    if not host.is_dir(parent):
        try:
            host.make_user_dirs(parent)  # the folders that hold a new target get the user's umask
        except OSError as exc:  # (translated here, at the component's seam)
            error = UsageError if exc.errno in (errno.EEXIST, errno.ENOTDIR) else AuraError
            why = f"cannot make the folder {parent} for {destination}: {exc.strerror}"
            raise error(f"{why}; nothing was restored") from None
    method, note = _method(host, destination)
    staging = _staging_path(host, snapshot, destination, run_id)
    with temporaries.track(
        "dir_swap", destination, staging=staging, stage="building", method=method, host=host.name
    ) as temp:
        host.mkdir(os.path.dirname(staging), mode=0o700, parents=True, exist_ok=True)
        host.mkdir(staging, mode=0o700)
        temp.update(staging_ino=_inode(host, staging), target_ino=_inode(host, destination))
        stager = _Stager(host, store, name, snapshot, manifest, index, destination, current, staging)
        _stage(stager, staging)
        _report_unlisted(report, store, tree, index, snapshot)  # (found as the index was read)
        _fault("staged")
        stager.current = _look_again(host, name, destination, manifest.exclude, replace)
        if method == "swap":
            try:
                kept = _swap(temp, stager, staging, destination, run_id, replace)
                if kept:
                    report["kept"] = shown(kept)
                    note = (
                        f"something was written into {destination} during the swap: it was not removed but kept "
                        f"in {shown(kept)}"
                    )
            except _SwapRefused as refused:
                method = "in_place"
                note = (
                    f"renaming {destination} was refused ({refused.reason}): the verified tree was applied "
                    "in place with rsync (not atomically)"
                )
        if method == "in_place":
            temp.update(stage="applying")
            host.run(make_rsync_restore(staging, destination, manifest.exclude))
    report.update(
        method=method,
        files=manifest.file_count,
        bytes=manifest.bytes,
        copied_files=stager.copied,
        copied_bytes=stager.copied_bytes,
        linked_files=stager.linked,
    )
    if note:
        report["note"] = note
    return report


def _report_unlisted(report: dict[str, Any], store: Host, tree: str, index: Outline, snapshot: Snapshot) -> None:
    """What the stored tree holds that the index does not list: never restored, reported."""
    unlisted = not_in_index(store, tree, index)
    for relative in unlisted:
        logs.get().warning("files.not_in_index", path=shown(relative), snapshot=snapshot.id)
    report["not_in_index"] = [shown(r) for r in unlisted[:SHOWN_LIMIT]]


def _stage(stager: _Stager, staging: str) -> None:
    """Build and finish the staging tree, then flush it to disk; a full disk is one clear error."""
    try:
        stager.build()
        stager.finish()
        stager.host.syncfs(staging)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise AuraError(
            f"{stager.name}: no space left on the device of {os.path.dirname(staging)} for the restored tree (it "
            "needs room for every file that differs from the target's); nothing was changed"
        ) from None


def _look_again(host: Host, name: str, destination: str, patterns: list[str], replace: bool) -> Current:
    """What the target holds just before it is replaced (the lock is held): its excluded entries,
    those made during the restore included, are carried over. UsageError when nobody consented
    to replacing what it holds (it was empty) and it now holds something."""
    now = look(host, destination, patterns)
    st = host.stat(destination, follow_symlinks=False)
    if now.exists and (st is None or not st.is_dir):
        raise UsageError(f"{name}: {destination} is no longer a folder; it was not replaced; nothing was changed")
    if not replace and now.first is not None:
        raise UsageError(
            f"{name}: {destination} was empty when the restore began and now holds something "
            f"({shown(now.first)}, ...); it was not replaced without consent. Restore again "
            "(confirm, or pass --yes, to replace it); nothing was changed"
        )
    return now


class _SwapRefused(Exception):
    """The file system refused a rename (EXDEV, EBUSY); what was moved has been moved back."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _move_back(host: Host, moves: list[str], staging: str, destination: str) -> None:
    for relative in moves:
        if host.exists(f"{staging}/{relative}") and not host.exists(f"{destination}/{relative}"):
            host.rename(f"{staging}/{relative}", f"{destination}/{relative}")


def _swap(
    temp: temporaries.Temporary, stager: _Stager, staging: str, destination: str, run_id: str, replace: bool = True
) -> str | None:
    """Carry the excluded entries over, exchange staging and target, remove the old tree; each
    step recorded before it is made. _SwapRefused when a rename is refused (nothing changed).
    ``replace`` False: the old tree is removed only when empty, else kept (its path returned)."""
    host = stager.host
    moves = _excluded_moves(stager, staging, destination)
    temp.update(stage="moving_excluded", moves=moves)
    try:
        for relative in moves:
            host.rename(f"{destination}/{relative}", f"{staging}/{relative}")
        _reset_mtimes(stager, staging, moves)
        _fault("excluded-moved")
        temp.update(stage="swapping")
        old = _exchange(host, temp, staging, destination, stager.current.exists, run_id)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EBUSY):
            raise
        _move_back(host, moves, staging, destination)
        temp.update(stage="building", moves=[])
        raise _SwapRefused(exc.strerror or str(exc)) from None
    if old is None:
        temp.release()
        return None
    if not replace:
        return _remove_empty_old(host, temp, old)
    _remove_old(host, temp, old)
    return None


def _remove_empty_old(host: Host, temp: temporaries.Temporary, old: str) -> str | None:
    """The old tree of a target that held nothing (excluded entries moved): removed when still
    empty; else something was written in the instant between the last look and the exchange,
    and it is kept where it is (returned), never removed without consent."""
    _fault("swapped")
    try:
        host.rmdir(old)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise
        temp.release()
        logs.get().warning("files.unexpected_kept", path=shown(old))
        return old
    temp.release()
    return None


def _exchange(
    host: Host, temp: temporaries.Temporary, staging: str, destination: str, exists: bool, run_id: str
) -> str | None:
    """Put the staging tree at ``destination``; return where the old tree now is (None: there
    was none)."""
    if not exists:
        try:
            host.rename_noreplace(staging, destination)
        except OSError as exc:
            if not _unsupported(exc):
                raise
            host.rename(staging, destination)
        host.fsync_dir(os.path.dirname(destination))
        return None
    old = staging
    try:
        host.exchange(staging, destination)
    except OSError as exc:
        if not _unsupported(exc):
            raise
        old = f"{destination}{OLD}{run_id}"
        temp.update(old=old)
        host.rename(destination, old)
        host.rename(staging, destination)
    host.fsync_dir(os.path.dirname(destination))
    return old


def _remove_old(host: Host, temp: temporaries.Temporary, old: str) -> None:
    _fault("swapped")
    temp.update(stage="removing_old")
    try:
        _remove_tree(host, old, fault=True)
    except OSError as exc:
        logs.get().warning("files.old_tree_left", path=shown(old), reason=exc.strerror)
        return  # the record stays: the next command that takes the lock removes it, doctor lists it
    temp.release()


def finish_or_undo(config: Any, record: temporaries.Temporary, host: Host | None = None) -> str:
    """The ``dir_swap`` handler: a restore that was stopped anywhere is finished when the restored
    tree is already in place (the old one is removed), else undone (the old tree is put back with
    its excluded entries, the staging folder removed). Idempotent. ``host``: where the target
    is (default: the host the record names, from the configuration's inventory)."""
    target = record.name
    details = record.details
    if host is None:
        host = Inventory(config).get(details.get("host", LOCAL))
    staging, old = details.get("staging"), details.get("old")
    new_inode, old_inode = details.get("staging_ino"), details.get("target_ino")
    at_target = _inode(host, target)
    if new_inode is not None and at_target == new_inode:
        for leftover in (staging, old):
            if _inode(host, leftover) is not None and _inode(host, leftover) != new_inode:
                host.remove_tree(str(leftover))
        return "finished: the restored tree is in place, the old one removed"
    if at_target is None and old and old_inode is not None and _inode(host, old) == old_inode:
        host.rename(old, target)
    if staging and _inode(host, target) is not None:
        _move_back(host, details.get("moves", []), staging, target)
    if _inode(host, staging) is not None and (old_inode is None or _inode(host, staging) != old_inode):
        host.remove_tree(str(staging))
    if details.get("stage") == "applying":
        return f"undone: staging removed; {target} was being restored in place and may be partly restored"
    return "undone: the old tree is in place, the staging folder removed"
