"""Taking a files snapshot: a source tree on a host into a stored tree on the control machine.

An incremental snapshot hard-links every file that is unchanged since the previous snapshot of
the same component (same size, mtime, ctime, inode, mode and owner, read from that snapshot's
index, so unchanged files are never re-read), and copies the rest, hashing each as it is
written. Permissions, ownership, symlinks, hard links, xattrs and ACLs are kept; fifos, sockets
and devices are skipped with a warning. A source that changes while it is read (files or folders
that vanish, or are replaced) gives warnings, not a failed backup.

The source is read only through its ``Host`` (one walk; then one ``fetch_files`` a folder for its
small files, copied by the walking thread, one a large file, copied by a pool, one call a folder
or a symlink); the stored tree and the index are written through the store host (the control
machine, where the snapshot being written is).
"""

from __future__ import annotations

import concurrent.futures
import errno
import os
import stat
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aura_ops import checksum, logs
from aura_ops.components.base import Artifact
from aura_ops.components.files.stored import (
    INDEX,
    INDEX_VERSION,
    TREE,
    FileLines,
    FilesManifest,
    FolderLines,
    encode_line,
    with_xattrs,
)
from aura_ops.config import FilesConfig
from aura_ops.errors import AuraError, UsageError
from aura_ops.hosts.base import FOLDER_BATCH, CopiedFile, Excludes, Host, StatResult, compile_excludes, shown
from aura_ops.repository import Snapshot

# The most entries of one folder handled at once (``Host.walk_folders``' parts): a folder of
# 100,000 files costs the memory of 2,048 (about 2.5 KB each: status, previous line, new entry).
BATCH = FOLDER_BATCH
COPY_WORKERS = 3  # hashing and file I/O release the GIL: copies overlap on 2+ cores
IN_FLIGHT = 512  # copies queued ahead of the index writer (bounds memory)
# A file smaller than this is copied by the walking thread with the rest of its folder (one
# ``fetch_files``); a larger one by the pool. Small copies are a dozen short system calls each:
# handed to threads, they cost more in GIL hand-offs and futures than the copy itself.
INLINE_BELOW = checksum.CHUNK
# The hot path works on str paths: pathlib objects cost more than the system calls here.


@dataclass
class _Stats:
    files: int = 0
    directories: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    bytes: int = 0
    copied: int = 0
    copied_bytes: int = 0
    linked: int = 0
    skipped: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)

    def vanish(self, path: str, what: str = "vanished") -> None:
        """A source entry that disappeared (or was replaced) while the backup read it: a warning."""
        self.vanished.append(shown(path))
        logs.get().warning(f"files.{what}", path=shown(path))


def _store_metadata(
    store: Host, owners: bool, target: str, st: StatResult, xattrs: dict[str, bytes], symlink: bool = False
) -> None:
    """Give an entry of the stored tree the source entry's owner (when ``owners``: aura-ops runs
    as root on the store), mode, xattrs and times."""
    store.set_metadata(
        target,
        owner=(st.st_uid, st.st_gid) if owners else None,
        mode=None if symlink else stat.S_IMODE(st.st_mode),
        xattrs=xattrs,
        times_ns=(st.st_atime_ns, st.st_mtime_ns),
    )


def _base(relative: str, st: StatResult) -> dict[str, Any]:
    return {"p": relative, "m": st.st_mode, "u": st.st_uid, "g": st.st_gid, "mt": st.st_mtime_ns}


@dataclass(frozen=True)
class _Previous:
    """The previous snapshot an incremental one links against: its stored tree, its index and
    the index's recorded hash."""

    snapshot: Snapshot
    tree: str
    index: str
    digest: str
    algorithm: str
    lines_whole: bool  # its lines can be reused verbatim (an index from before xattrs cannot)


class _PreviousChanged(Exception):
    """The previous index did not hash to its recorded hash: nothing read from it can be kept."""


# what stands in the queue of index lines: a line, an entry, a copy under way
Entry = dict[str, Any] | bytes | concurrent.futures.Future[dict[str, Any] | None]


class _Builder:
    """Builds one stored tree on ``store`` from a source tree on ``host``, a folder at a time,
    beside the previous snapshot's index (streamed: a merge of two walks in the same order)."""

    def __init__(self, host: Host, store: Host, source: str, tree: str, ignore_ctime: bool = False) -> None:
        self.host = host
        self.store = store
        self.owners = store.is_root()  # the stored trees keep owners only when aura-ops runs as root there
        self.link = store.link  # (bound once: the hot path of an incremental snapshot)
        self.source = source
        self.tree = tree
        self.ignore_ctime = ignore_ctime
        self.previous: _Previous | None = None
        self.previous_lines: FolderLines | None = None
        self.previous_folders: set[str] = set()  # of the previous tree: found as real folders
        self.stats = _Stats()
        self.seen_inodes: dict[tuple[int, int], str] = {}
        self.directories: list[tuple[str, StatResult, dict[str, bytes]]] = []
        # each folder's (st_dev, st_ino) as listed: a copy opens it by path, and a folder above it
        # replaced by a symlink since would have it read from elsewhere ("" the root, when known)
        self.folder_ids: dict[str, tuple[int, int]] = {}
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=COPY_WORKERS)
        self.copies: dict[str, concurrent.futures.Future[dict[str, Any] | None]] = {}
        self.unwritten: list[bytes] = []  # index lines ready, written (and hashed) in blocks
        self.unwritten_size = 0

    def against(self, previous: _Previous) -> None:
        """Link unchanged files against ``previous`` (its index opened here, read as the walk goes)."""
        self.previous_lines = FolderLines(self.store.open_read(previous.index), previous.algorithm)
        self.previous = previous

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.previous_lines is not None:
            self.previous_lines.source.close()

    def check_previous(self) -> None:
        """_PreviousChanged when the previous index read is not the one its snapshot recorded."""
        if (
            self.previous is not None
            and self.previous_lines is not None
            and self.previous_lines.finish() != self.previous.digest
        ):
            raise _PreviousChanged(f"{INDEX} of snapshot {self.previous.snapshot.id} changed (checksum mismatch)")

    def build(self, index: checksum.HashingWriter, excludes: Excludes) -> None:
        """Walk the source a folder at a time; write the index lines in walk order."""
        pending: deque[Entry] = deque()
        parts = self.host.walk_folders(self.source, excludes, on_vanished=self.stats.vanish, batch=BATCH)
        for relative_dir, entries in parts:  # (a large folder in parts: memory bounded by BATCH)
            pending.extend(self.folder(relative_dir, entries))
            _write_ready(self, index, pending, wait=False)
            while len(pending) > IN_FLIGHT:  # copies behind the walk: wait for them, memory stays bounded
                _write_ready(self, index, pending, wait=True)
        while pending:
            _write_ready(self, index, pending, wait=True)
        index.write(b"".join(self.unwritten))

    def folder(self, relative_dir: str, entries: Sequence[tuple[str, StatResult]]) -> list[Entry]:
        """The entries of one folder (or of one part of it, in name order after the previous
        part); its unchanged files hard-linked in one ``link_names``, its small files copied in
        one ``fetch_files``."""
        prefix = f"{relative_dir}/" if relative_dir else ""
        source_dir = f"{self.source}/{relative_dir}" if relative_dir else self.source
        target_dir = f"{self.tree}/{relative_dir}" if relative_dir else self.tree
        known: FileLines = {}
        if self.previous_lines is not None and entries:
            known = self.previous_lines.files_in(relative_dir, [name for name, _ in entries])  # (this part's)
        if known and not self.previous_reached(relative_dir):
            known = {}  # (its previous copies are not linked: copied)
        out: list[Entry | None] = []
        linking: list[tuple[str, int, StatResult]] = []  # (name, where in ``out``, lstat)
        copying: list[tuple[str, StatResult]] = []  # small files, copied here in one call
        copied_at: list[int] = []  # (where each goes in ``out``)
        verbatim = self.previous is not None and self.previous.lines_whole and not self.ignore_ctime
        unchanged = self.unchanged
        for name, st in entries:
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                self.stats.files += 1
                previous = known.get(name)
                reused: bytes | dict[str, Any] | None = None
                if previous is None:
                    pass
                elif verbatim:  # the common case, kept short: the previous line as it is
                    reused = previous[1] if unchanged(previous[0], st) else None
                    if reused is not None:
                        self.stats.linked += 1
                        self.stats.bytes += st.st_size
                else:
                    reused = self.reuse(prefix + name, f"{source_dir}/{name}", st, previous)
                if reused is not None:
                    linking.append((name, len(out), st))
                    out.append(reused)
                    continue
                if st.st_size < INLINE_BELOW:
                    copying.append((name, st))
                    copied_at.append(len(out))
                    out.append(None)
                    continue
                out.append(
                    self.pool.submit(self.copy, prefix + name, f"{source_dir}/{name}", f"{target_dir}/{name}", st)
                )
                continue
            entry = self.entry(prefix + name, f"{source_dir}/{name}", f"{target_dir}/{name}", st, known.get(name))
            if entry is not None:
                out.append(entry)
        if linking:
            self.link_folder(relative_dir, prefix, source_dir, target_dir, linking, out)
        if copying:
            fetched = self.host.fetch_files(
                source_dir,
                target_dir,
                copying,
                checksum.ALGORITHM,
                owners=self.owners,
                folder_id=self.folder_ids.get(relative_dir),
                root=self.source,
            )
            for (name, st), position, result in zip(copying, copied_at, fetched, strict=True):
                entry = self.copied(prefix + name, f"{source_dir}/{name}", st, result)
                if entry is not None:
                    self.account(entry)
                out[position] = entry
        return [entry for entry in out if entry is not None]  # (None: a copy that vanished)

    def previous_reached(self, relative_dir: str) -> bool:
        """The previous tree's folder ``relative_dir`` and every one on its way are real folders:
        a link by path would follow a symlink there (a damaged previous tree: files from outside
        it linked as unchanged)."""
        assert self.previous is not None
        parts = relative_dir.split("/") if relative_dir else []
        for depth in range(1, len(parts) + 1):
            above = "/".join(parts[:depth])
            if above not in self.previous_folders:
                st = self.store.stat(f"{self.previous.tree}/{above}", follow_symlinks=False)
                if st is None or not st.is_dir:
                    return False
                self.previous_folders.add(above)  # (its own way checked just before)
        return True

    def link_folder(
        self,
        relative_dir: str,
        prefix: str,
        source_dir: str,
        target_dir: str,
        linking: list[tuple[str, int, StatResult]],
        out: list[Entry | None],
    ) -> None:
        """Hard-link a folder's unchanged files to their previous copies (one ``link_names``);
        one that cannot be linked is copied instead (its place in ``out`` taken by the copy)."""
        assert self.previous is not None
        previous_dir = f"{self.previous.tree}/{relative_dir}" if relative_dir else self.previous.tree
        failed = self.store.link_names(previous_dir, target_dir, [name for name, _, _ in linking])
        if not failed:
            return
        where = {name: (position, st) for name, position, st in linking}
        for name, code in failed:
            if code not in _NOT_LINKABLE:
                raise OSError(code, os.strerror(code), f"{previous_dir}/{name}")
            position, st = where[name]
            self.stats.linked -= 1
            self.stats.bytes -= st.st_size
            source, target = f"{source_dir}/{name}", f"{target_dir}/{name}"
            out[position] = self.pool.submit(self.copy, prefix + name, source, target, st)

    def unchanged(self, previous: dict[str, Any], st: StatResult) -> bool:
        """Same size, mtime, ctime (unless ``ignore_ctime``), inode, mode and owner as recorded."""
        try:
            return bool(
                previous["mt"] == st.st_mtime_ns
                and previous["s"] == st.st_size
                and (self.ignore_ctime or previous["ct"] == st.st_ctime_ns)
                and previous["i"] == st.st_ino
                and previous["m"] == st.st_mode
                and previous["u"] == st.st_uid
                and previous["g"] == st.st_gid
            )
        except KeyError:
            return False

    def reuse(
        self, relative: str, source: str, st: StatResult, previous: tuple[dict[str, Any], bytes]
    ) -> bytes | dict[str, Any] | None:
        """The index line of an unchanged file (None when it changed): the previous line verbatim,
        or (an old index, or a ctime ignored that moved) the entry rebuilt from it. Counted as
        linked: the caller links it."""
        entry, line = previous
        if not self.unchanged(entry, st):
            return None
        assert self.previous is not None
        if self.ignore_ctime:
            xattrs = self.host.read_xattrs(source)  # (a change of them moves only the ctime)
            if with_xattrs({}, xattrs).get("x") != entry.get("x"):
                return None
        self.stats.linked += 1
        self.stats.bytes += st.st_size
        if self.previous.lines_whole and entry.get("ct") == st.st_ctime_ns:
            return line
        rebuilt = {"p": relative, **{k: v for k, v in entry.items() if k not in ("p", "pb", "lb", "x")}}
        rebuilt["ct"] = st.st_ctime_ns
        if self.ignore_ctime:
            return with_xattrs(rebuilt, xattrs)
        return with_xattrs(rebuilt, self.host.read_xattrs(source))

    def entry(
        self, relative: str, source: str, target: str, st: StatResult, previous: tuple[dict[str, Any], bytes] | None
    ) -> Entry | None:
        if stat.S_ISREG(st.st_mode):
            return self.regular(relative, source, target, st, previous)
        if stat.S_ISDIR(st.st_mode):
            self.store.mkdir(target, mode=0o700)
            self.folder_ids[relative] = (st.st_dev, st.st_ino)
            xattrs = self.host.read_xattrs(source)
            self.directories.append((target, st, xattrs))
            self.stats.directories += 1
            return with_xattrs({**_base(relative, st), "t": "d"}, xattrs)
        if stat.S_ISLNK(st.st_mode):
            return self.symlink(relative, source, target, st)
        self.stats.skipped.append(shown(relative))
        logs.get().warning("files.special_skipped", path=shown(source), kind=stat.filemode(st.st_mode)[0])
        return None

    def symlink(self, relative: str, source: str, target: str, st: StatResult) -> Entry | None:
        try:
            link = self.host.readlink(source)
        except FileNotFoundError:
            self.stats.vanish(source)
            return None
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self.stats.vanish(source, "changed_during_backup")  # no longer a symlink
            return None
        self.store.symlink(link, target)
        xattrs = self.host.read_xattrs(source)
        _store_metadata(self.store, self.owners, target, st, xattrs, symlink=True)
        self.stats.symlinks += 1
        return with_xattrs({**_base(relative, st), "t": "l", "l": link}, xattrs)

    def regular(
        self, relative: str, source: str, target: str, st: StatResult, previous: tuple[dict[str, Any], bytes] | None
    ) -> Entry:
        """A file with more than one name in the source (its other names stored as hard links to
        the first): linked to the previous copy (one call) when unchanged, else copied."""
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self.seen_inodes:
            first = self.seen_inodes[key]
            if first in self.copies:
                self.copies[first].result()  # the first name must exist before linking to it
            try:
                self.link(f"{self.tree}/{first}", target)
                self.stats.hardlinks += 1
                return {**_base(relative, st), "t": "h", "l": first, "s": st.st_size}
            except FileNotFoundError:
                pass  # the first name vanished while it was copied: this one is copied instead
        if st.st_nlink > 1:
            self.seen_inodes[key] = relative
        self.stats.files += 1
        if previous is not None and self.previous is not None:
            reused = self.reuse(relative, source, st, previous)
            if reused is not None:
                try:
                    self.link(f"{self.previous.tree}/{relative}", target)
                    return reused
                except OSError as exc:
                    if exc.errno not in _NOT_LINKABLE:
                        raise
                    self.stats.linked -= 1
                    self.stats.bytes -= st.st_size
        future = self.pool.submit(self.copy, relative, source, target, st)
        if st.st_nlink > 1:
            self.copies[relative] = future
        return future

    def copy(self, relative: str, source: str, target: str, st: StatResult) -> dict[str, Any] | None:
        """One file copied (in the pool) with its metadata; its index entry, None when it vanished."""
        source_dir, name = source.rsplit("/", 1)
        target_dir = target.rsplit("/", 1)[0]
        folder_id = self.folder_ids.get(relative.rsplit("/", 1)[0] if "/" in relative else "")
        (result,) = self.host.fetch_files(
            source_dir,
            target_dir,
            [(name, st)],
            checksum.ALGORITHM,
            owners=self.owners,
            folder_id=folder_id,
            root=self.source,
        )
        return self.copied(relative, source, st, result)

    def copied(self, relative: str, source: str, st: StatResult, result: CopiedFile | int) -> dict[str, Any] | None:
        """The index entry of a file ``fetch_files`` copied (None, with its warning, when it had
        vanished or was no longer a regular file)."""
        if not isinstance(result, CopiedFile):
            if result == errno.ENOENT:
                self.stats.vanish(source)
            else:
                self.stats.vanish(source, "changed_during_backup")  # now a symlink, a socket, ...
            return None
        opened = result.stat
        if (opened.st_dev, opened.st_ino, opened.st_ctime_ns) != (st.st_dev, st.st_ino, st.st_ctime_ns):
            st = opened  # replaced, or changed (its mode, its content), since it was listed: as it was opened
        entry = {**_base(relative, st), "t": "f", "s": result.size, "ct": st.st_ctime_ns, "i": st.st_ino}
        entry["h"] = result.digest
        return with_xattrs(entry, result.xattrs)

    def account(self, entry: dict[str, Any]) -> None:
        self.stats.copied += 1
        self.stats.copied_bytes += entry["s"]
        self.stats.bytes += entry["s"]

    def finish_directories(self) -> None:
        """Directory modes and mtimes last, deepest first: adding children changes them."""
        for target, st, xattrs in reversed(self.directories):
            _store_metadata(self.store, self.owners, target, st, xattrs)


def _write_ready(builder: _Builder, index: checksum.HashingWriter, pending: deque[Entry], wait: bool) -> None:
    """Take the index lines of every entry at the head that is ready, in walk order; write them
    (one write, one hash update) once they make a block of ``checksum.CHUNK``."""
    ready = builder.unwritten
    before = len(ready)
    while pending:
        head = pending[0]
        if isinstance(head, bytes):  # an unchanged file: its previous line, verbatim
            pending.popleft()
            ready.append(head)
            continue
        if isinstance(head, dict):
            pending.popleft()
            ready.append(encode_line(head))
            continue
        if not wait and not head.done():
            break
        entry = head.result()
        pending.popleft()
        wait = False
        if entry is None:  # vanished while it was being copied
            continue
        builder.account(entry)
        ready.append(encode_line(entry))
    builder.unwritten_size += sum(map(len, ready[before:]))
    if builder.unwritten_size >= checksum.CHUNK:
        index.write(b"".join(ready))
        ready.clear()
        builder.unwritten_size = 0


# Why the previous snapshot's copy of a file could not be linked, the file then being copied:
# too many links, another device, or a previous stored tree that is damaged (the copy gone, a
# folder on its way replaced by a file or a symlink, a folder in its place, a link the system
# refuses). Anything else (ENOSPC, a read-only repository) fails the backup.
_NOT_LINKABLE = (errno.EMLINK, errno.EXDEV, errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EPERM, errno.EACCES)


def _previous(previous: Snapshot | None, name: str, source: str) -> _Previous | None:
    """What an incremental snapshot of ``source`` can link against in ``previous``: None when it
    read another folder or hashed with another algorithm."""
    if (
        previous is None
        or previous.manifest["components"][name].get("source") != source
        or previous.manifest.get("checksum_algorithm") != checksum.ALGORITHM
    ):
        return None
    section = previous.manifest["components"][name]
    recorded = section.get("artifacts", {}).get(INDEX, {}).get("hash")
    if not isinstance(recorded, str):
        logs.get().warning("files.previous_unusable", snapshot=previous.id, reason=f"{INDEX} has no recorded hash")
        return None
    return _Previous(
        snapshot=previous,
        tree=str(previous.component_dir(name) / TREE),
        index=str(previous.component_dir(name) / INDEX),
        digest=recorded,
        algorithm=checksum.ALGORITHM,
        lines_whole=section.get("index_version", 1) >= INDEX_VERSION,
    )


def take(host: Host, store: Host, name: str, cfg: FilesConfig, dest: Path, previous: Snapshot | None) -> FilesManifest:
    """Snapshot ``cfg.path`` on ``host`` into ``dest/tree`` plus ``dest/index.jsonl`` on ``store``
    (the control machine, where the snapshot's folder is); return the manifest section.
    UsageError when the source is not a folder.

    Unchanged files are hard-linked against ``previous``, whose index is read as the walk goes
    and hashed: when it turns out not to be the index its snapshot recorded, everything made is
    removed and the snapshot is taken again without it (every file copied)."""
    source = str(cfg.path)
    if not host.is_dir(source):
        raise UsageError(f"component {name}: {source} is not a directory")
    base = _previous(previous, name, source)
    try:
        return _take(host, store, cfg, dest, base)
    except _PreviousChanged as exc:
        assert base is not None
        logs.get().warning("files.previous_unusable", snapshot=base.snapshot.id, reason=f"{name}: {exc}")
        store.remove_tree(f"{dest}/{TREE}")
        store.remove(f"{dest}/{INDEX}", missing_ok=True)
        return _take(host, store, cfg, dest, None)


def _take(host: Host, store: Host, cfg: FilesConfig, dest: Path, base: _Previous | None) -> FilesManifest:
    source = str(cfg.path)
    tree = f"{dest}/{TREE}"
    store.mkdir(tree, mode=0o700)
    builder = _Builder(host, store, source, tree, cfg.ignore_ctime)
    top = host.stat(source)  # (followed, as the walk opens it)
    if top is not None:
        builder.folder_ids[""] = (top.dev, top.ino)
    try:
        if base is not None:
            try:
                builder.against(base)
            except OSError as exc:  # missing, or a folder or a FIFO in its place
                reason = f"{INDEX}: {exc.strerror}"
                logs.get().warning("files.previous_unusable", snapshot=base.snapshot.id, reason=reason)
                base = None
        with store.open_write(f"{dest}/{INDEX}", mode=0o600, exclusive=True) as raw:
            index = checksum.HashingWriter(raw)
            builder.build(index, compile_excludes(cfg.exclude))
            index.flush()
        builder.check_previous()
    finally:
        builder.close()
    root = _store_root(host, store, builder.owners, source, tree)
    builder.finish_directories()
    stats = builder.stats
    logs.get().info(
        "files.snapshot",
        source=source,
        files=stats.files,
        copied=stats.copied,
        linked=stats.linked,
        bytes=stats.bytes,
        vanished=len(stats.vanished),
    )
    return FilesManifest(
        source=source,
        source_resolved=host.realpath(source),  # the folder read: an in-place restore goes only there
        root=root,
        exclude=cfg.exclude,
        index_version=INDEX_VERSION,
        owners_kept=builder.owners,
        file_count=stats.files + stats.hardlinks,
        directory_count=stats.directories,
        symlink_count=stats.symlinks,
        bytes=stats.bytes,
        copied_files=stats.copied,
        copied_bytes=stats.copied_bytes,
        linked_files=stats.linked,
        skipped_special=stats.skipped,
        vanished_during_backup=stats.vanished[:1000],
        previous=base.snapshot.id if base is not None else None,
        artifacts={INDEX: Artifact(size=index.size, hash=index.hexdigest())},
    )


def _store_root(host: Host, store: Host, owners: bool, source: str, tree: str) -> dict[str, Any]:
    """Give the stored tree's root (on ``store``) the source folder's metadata; return its
    manifest entry."""
    st = host.stat(source)
    if st is None or not st.is_dir:
        raise AuraError(f"{shown(source)} is no longer a directory (it changed during the backup)")
    xattrs = host.read_xattrs(source)
    store.set_metadata(
        tree,
        owner=(st.uid, st.gid) if owners else None,
        mode=stat.S_IMODE(st.mode),
        xattrs=xattrs,
        times_ns=(st.mtime_ns, st.mtime_ns),  # (no atime in FileStat)
    )
    return with_xattrs({"m": st.mode, "u": st.uid, "g": st.gid, "mt": st.mtime_ns}, xattrs)
