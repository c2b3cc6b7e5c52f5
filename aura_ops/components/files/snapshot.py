"""Taking a files snapshot: a source tree on a host into a stored tree on the control machine.

An incremental snapshot hard-links every file that is unchanged since the previous snapshot of
the same component (same size, mtime, ctime, inode, mode and owner, read from that snapshot's
index, so unchanged files are never re-read), and copies the rest, hashing each as it is
written. Permissions, ownership, symlinks, hard links, xattrs and ACLs are kept; fifos, sockets
and devices are skipped with a warning. A source that changes while it is read (files or folders
that vanish, or are replaced) gives warnings, not a failed backup.

The source is read only through its ``Host`` (one walk, then one call a copied file, a folder or
a symlink); the stored tree and the index are written through the store host (the control
machine, where the snapshot being written is): one call an entry, as the system calls were.
"""

from __future__ import annotations

import concurrent.futures
import errno
import stat
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aura_ops import checksum, logs
from aura_ops.components.base import Artifact
from aura_ops.components.files.stored import (
    INDEX,
    INDEX_VERSION,
    TREE,
    FilesManifest,
    Index,
    checked_index,
    encode_line,
    with_xattrs,
)
from aura_ops.config import FilesConfig
from aura_ops.errors import AuraError, UsageError, VerificationError
from aura_ops.hosts.base import Host, StatResult, compile_excludes, shown
from aura_ops.repository import Snapshot

COPY_WORKERS = 3  # hashing and file I/O release the GIL: copies overlap on 2+ cores
IN_FLIGHT = 512  # copies queued ahead of the index writer (bounds memory)
Entry = dict[str, Any] | bytes | concurrent.futures.Future[dict[str, Any] | None]
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


def _unchanged(previous: dict[str, Any], st: StatResult) -> bool:
    return bool(
        previous["t"] == "f"
        and previous["s"] == st.st_size
        and previous["mt"] == st.st_mtime_ns
        and previous["ct"] == st.st_ctime_ns
        and previous["i"] == st.st_ino
        and previous["m"] == st.st_mode
        and previous["u"] == st.st_uid
        and previous["g"] == st.st_gid
    )


def _base(relative: str, st: StatResult) -> dict[str, Any]:
    return {"p": relative, "m": st.st_mode, "u": st.st_uid, "g": st.st_gid, "mt": st.st_mtime_ns}


class _Builder:
    """Builds one stored tree on ``store`` from a source tree on ``host`` and the previous
    snapshot's index."""

    def __init__(
        self, host: Host, store: Host, source: str, tree: str, previous_tree: str | None, previous: Index | None
    ) -> None:
        self.host = host
        self.store = store
        self.owners = store.is_root()  # the stored trees keep owners only when aura-ops runs as root there
        self.link = store.link  # (bound once: the hot path of an incremental snapshot)
        self.source = source
        self.tree = tree
        self.previous_tree = previous_tree
        self.previous = previous
        # an index from before xattrs were recorded: its lines cannot be reused verbatim
        self.previous_lines_whole = False
        self.stats = _Stats()
        self.seen_inodes: dict[tuple[int, int], str] = {}
        self.directories: list[tuple[str, StatResult, dict[str, bytes]]] = []
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=COPY_WORKERS)
        self.copies: dict[str, concurrent.futures.Future[dict[str, Any] | None]] = {}

    def entry(self, relative: str, st: StatResult) -> Entry | None:
        source, target = f"{self.source}/{relative}", f"{self.tree}/{relative}"
        if stat.S_ISREG(st.st_mode):
            return self.regular(relative, source, target, st)
        if stat.S_ISDIR(st.st_mode):
            self.store.mkdir(target, mode=0o700)
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

    def regular(self, relative: str, source: str, target: str, st: StatResult) -> Entry:
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
        reused = self.reuse_previous(relative, source, target, st)
        if reused is not None:
            return reused
        future = self.pool.submit(self.copy, relative, source, target, st)
        if st.st_nlink > 1:
            self.copies[relative] = future
        return future

    def reuse_previous(self, relative: str, source: str, target: str, st: StatResult) -> Entry | None:
        """An unchanged file: hard-linked to the previous snapshot's copy, its line reused."""
        if self.previous is None:
            return None
        previous = self.previous.entries.get(relative)
        if previous is None or not _unchanged(previous, st):
            return None
        try:
            self.link(f"{self.previous_tree}/{relative}", target)
        except OSError as exc:
            if exc.errno not in _NOT_LINKABLE:
                raise
            return None
        self.stats.linked += 1
        self.stats.bytes += st.st_size
        if self.previous_lines_whole:
            return self.previous.lines[relative]
        entry = {k: v for k, v in previous.items() if k not in ("pb", "lb", "x")}
        return with_xattrs(entry, self.host.read_xattrs(source))

    def copy(self, relative: str, source: str, target: str, st: StatResult) -> dict[str, Any] | None:
        try:
            copied = self.host.fetch_hashed(source, target, checksum.ALGORITHM)
        except FileNotFoundError:
            self.stats.vanish(source)
            return None
        if copied is None:
            self.stats.vanish(source, "changed_during_backup")  # now a symlink, a socket, ...
            return None
        opened = copied.stat
        if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
            st = opened  # replaced since it was listed: the file that is there now
        _store_metadata(self.store, self.owners, target, st, copied.xattrs)
        entry = {**_base(relative, st), "t": "f", "s": copied.size, "ct": st.st_ctime_ns, "i": st.st_ino}
        entry["h"] = copied.digest
        return with_xattrs(entry, copied.xattrs)

    def account(self, entry: dict[str, Any]) -> None:
        self.stats.copied += 1
        self.stats.copied_bytes += entry["s"]
        self.stats.bytes += entry["s"]

    def finish_directories(self) -> None:
        """Directory modes and mtimes last, deepest first: adding children changes them."""
        for target, st, xattrs in reversed(self.directories):
            _store_metadata(self.store, self.owners, target, st, xattrs)


def _write_ready(builder: _Builder, index: checksum.HashingWriter, pending: deque[Entry], wait: bool) -> None:
    """Write index lines in walk order for every entry at the head that is ready."""
    while pending:
        head = pending[0]
        if isinstance(head, bytes):  # an unchanged file: its previous line, verbatim
            pending.popleft()
            index.write(head)
            continue
        if isinstance(head, dict):
            pending.popleft()
            index.write(encode_line(head))
            continue
        if not wait and not head.done():
            return
        entry = head.result()
        pending.popleft()
        wait = False
        if entry is None:  # vanished while it was being copied
            continue
        builder.account(entry)
        index.write(encode_line(entry))


# Why the previous snapshot's copy of a file could not be linked, the file then being copied:
# too many links, another device, or a previous stored tree that is damaged (the copy gone, a
# folder on its way replaced by a file, a folder in its place, a link the system refuses).
# Anything else (ENOSPC, a read-only repository) fails the backup.
_NOT_LINKABLE = (errno.EMLINK, errno.EXDEV, errno.ENOENT, errno.ENOTDIR, errno.EPERM, errno.EACCES)


def _previous_index(
    store: Host, previous: Snapshot | None, name: str, source: str
) -> tuple[Index | None, str | None, bool]:
    """The previous snapshot's index (checked, read through ``store``), its tree, and whether its
    lines can be reused."""
    if (
        previous is None
        or previous.manifest["components"][name].get("source") != source
        or previous.manifest.get("checksum_algorithm") != checksum.ALGORITHM
    ):
        return None, None, False
    try:
        index = checked_index(store, previous, name)
    except VerificationError as exc:
        logs.get().warning("files.previous_unusable", snapshot=previous.id, reason=str(exc))
        return None, None, False
    whole = previous.manifest["components"][name].get("index_version", 1) >= INDEX_VERSION
    return index, str(previous.component_dir(name) / TREE), whole


def take(host: Host, store: Host, name: str, cfg: FilesConfig, dest: Path, previous: Snapshot | None) -> FilesManifest:
    """Snapshot ``cfg.path`` on ``host`` into ``dest/tree`` plus ``dest/index.jsonl`` on ``store``
    (the control machine, where the snapshot's folder is); return the manifest section.
    UsageError when the source is not a folder."""
    source = str(cfg.path)
    if not host.is_dir(source):
        raise UsageError(f"component {name}: {source} is not a directory")
    previous_index, previous_tree, whole = _previous_index(store, previous, name, source)
    tree = f"{dest}/{TREE}"
    store.mkdir(tree, mode=0o700)
    builder = _Builder(host, store, source, tree, previous_tree, previous_index)
    builder.previous_lines_whole = whole
    excludes = compile_excludes(cfg.exclude)
    try:
        with store.open_write(f"{dest}/{INDEX}", mode=0o600, exclusive=True) as raw:
            index = checksum.HashingWriter(raw)
            pending: deque[Entry] = deque()
            for relative, st in host.walk(source, excludes, on_vanished=builder.stats.vanish):
                entry = builder.entry(relative, st)
                if entry is not None:
                    pending.append(entry)
                _write_ready(builder, index, pending, wait=len(pending) > IN_FLIGHT)
            while pending:
                _write_ready(builder, index, pending, wait=True)
            index.flush()
    finally:
        builder.pool.shutdown(wait=True, cancel_futures=True)
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
        previous=previous.id if previous is not None and previous_tree else None,
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
