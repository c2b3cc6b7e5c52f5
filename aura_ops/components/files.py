"""Files component: a snapshot is a plain, browsable folder tree.

An incremental snapshot hard-links every file that is unchanged since the previous snapshot of
the same component (same size, mtime, ctime, inode, mode and owner, read from that snapshot's
index, so unchanged files are never re-read), and copies the rest, hashing each as it is
written. Permissions, ownership, symlinks, hard links, xattrs and ACLs are kept; fifos, sockets
and devices are skipped with a warning. Restores use rsync, exact, deletions included.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import fnmatch
import json
import os
import stat
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from aura_ops import checksum, logs
from aura_ops.config import FilesConfig
from aura_ops.errors import AuraError, UsageError, VerificationError
from aura_ops.host import Command, Host, make_user_dirs
from aura_ops.repository import Snapshot

INDEX = "index.jsonl"
COPY_WORKERS = 3  # hashing and file I/O release the GIL: copies overlap on 2+ cores
IN_FLIGHT = 512  # copies queued ahead of the index writer (bounds memory)
Entry = dict[str, Any] | bytes | concurrent.futures.Future[dict[str, Any] | None]
TREE = "tree"
IS_ROOT = os.geteuid() == 0


# ---------------------------------------------------------------- excludes


def compile_excludes(patterns: list[str]) -> list[tuple[str, bool, bool]]:
    """(glob, anchored-to-root, directories-only) for each rsync-like pattern."""
    compiled = []
    for pattern in patterns:
        directories_only = pattern.endswith("/")
        body = pattern.rstrip("/")
        anchored = "/" in body
        compiled.append((body.lstrip("/"), anchored, directories_only))
    return compiled


def is_excluded(relative: str, is_dir: bool, excludes: list[tuple[str, bool, bool]]) -> bool:
    name = relative.rsplit("/", 1)[-1]
    for glob, anchored, directories_only in excludes:
        if directories_only and not is_dir:
            continue
        if fnmatch.fnmatchcase(relative if anchored else name, glob):
            return True
    return False


def rsync_excludes(patterns: list[str]) -> list[str]:
    """The same excludes as rsync arguments (patterns with a slash are anchored at the root)."""
    args = []
    for glob, anchored, directories_only in compile_excludes(patterns):
        rsync_pattern = ("/" if anchored else "") + glob + ("/" if directories_only else "")
        args.append(f"--exclude={rsync_pattern}")
    return args


# ---------------------------------------------------------------- index


def load_index(snapshot: Snapshot, name: str) -> dict[str, dict[str, Any]]:
    """The per-path index of a files snapshot."""
    return {path: entry for path, (entry, _) in _index_lines(snapshot, name).items()}


def _index_lines(snapshot: Snapshot, name: str) -> dict[str, tuple[dict[str, Any], bytes]]:
    """Index entries with their raw lines (an unchanged file's line is written back verbatim)."""
    index: dict[str, tuple[dict[str, Any], bytes]] = {}
    with open(snapshot.component_dir(name) / INDEX, "rb") as source:
        for line in source:
            entry = orjson.loads(line)
            index[entry["p"]] = (entry, line)
    return index


# ---------------------------------------------------------------- snapshot
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


def _walk(root: str, excludes: list[tuple[str, bool, bool]]) -> Iterator[tuple[str, os.stat_result]]:
    """Yield (relative path, lstat) for every entry under ``root``, parents first, sorted."""
    stack = [""]
    while stack:
        relative_dir = stack.pop()
        directory = f"{root}/{relative_dir}" if relative_dir else root
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            raise AuraError(f"cannot read {directory}: {exc.strerror}") from None
        subdirs = []
        for entry in entries:
            relative = f"{relative_dir}/{entry.name}" if relative_dir else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                logs.get().warning("files.vanished", path=entry.path)
                continue
            if excludes and is_excluded(relative, stat.S_ISDIR(st.st_mode), excludes):
                continue
            yield relative, st
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(relative)
        stack.extend(reversed(subdirs))


def _copy_xattrs(source: str, target: str) -> None:
    try:
        names = os.listxattr(source, follow_symlinks=False)
    except OSError:
        return
    for attribute in names:
        try:
            value = os.getxattr(source, attribute, follow_symlinks=False)
            os.setxattr(target, attribute, value, follow_symlinks=False)
        except OSError as exc:
            logs.get().debug("files.xattr_skipped", path=source, xattr=attribute, reason=exc.strerror)


def _apply_metadata(source: str, target: str, st: os.stat_result, symlink: bool = False) -> None:
    if IS_ROOT:
        os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
    if not symlink:
        os.chmod(target, stat.S_IMODE(st.st_mode))
    _copy_xattrs(source, target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


_buffers = threading.local()


def _buffer() -> tuple[bytearray, memoryview]:
    if not hasattr(_buffers, "data"):
        _buffers.data = bytearray(checksum.CHUNK)
        _buffers.view = memoryview(_buffers.data)
    return _buffers.data, _buffers.view


def _copy_file(source: str, target: str, st: os.stat_result) -> tuple[str, int]:
    """Copy content, hashing it as it is written; return (hash, bytes)."""
    hasher = checksum.new()
    size = 0
    buffer, view = _buffer()
    with open(source, "rb", buffering=0) as reader, open(target, "xb", buffering=0) as writer:
        while count := reader.readinto(buffer):
            chunk = view[:count]
            hasher.update(chunk)
            writer.write(chunk)
            size += count
        if size >= checksum.CHUNK:
            checksum.start_writeback(writer.fileno())
    _apply_metadata(source, target, st)
    return hasher.hexdigest(), size


def _unchanged(previous: dict[str, Any], st: os.stat_result) -> bool:
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


class _Builder:
    """Builds one snapshot tree from a source tree and the previous snapshot's index."""

    def __init__(
        self, source: str, tree: str, previous_tree: str | None, previous_index: dict[str, tuple[dict[str, Any], bytes]]
    ) -> None:
        self.source = source
        self.tree = tree
        self.previous_tree = previous_tree
        self.previous_index = previous_index
        self.stats = _Stats()
        self.seen_inodes: dict[tuple[int, int], str] = {}
        self.directories: list[tuple[str, str, os.stat_result]] = []
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=COPY_WORKERS)
        self.copies: dict[str, concurrent.futures.Future[dict[str, Any] | None]] = {}

    def entry(self, relative: str, st: os.stat_result) -> Entry | None:
        source, target = f"{self.source}/{relative}", f"{self.tree}/{relative}"
        base = {"p": relative, "m": st.st_mode, "u": st.st_uid, "g": st.st_gid, "mt": st.st_mtime_ns}
        if stat.S_ISREG(st.st_mode):
            return self.regular(relative, source, target, st, base)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(target, 0o700)
            self.directories.append((source, target, st))
            self.stats.directories += 1
            return {**base, "t": "d"}
        if stat.S_ISLNK(st.st_mode):
            link = os.readlink(source)
            os.symlink(link, target)
            _apply_metadata(source, target, st, symlink=True)
            self.stats.symlinks += 1
            return {**base, "t": "l", "l": link}
        self.stats.skipped.append(relative)
        logs.get().warning("files.special_skipped", path=source, kind=stat.filemode(st.st_mode)[0])
        return None

    def regular(self, relative: str, source: str, target: str, st: os.stat_result, base: dict[str, Any]) -> Entry:
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self.seen_inodes:
            first = self.seen_inodes[key]
            if first in self.copies:
                self.copies[first].result()  # the first name must exist before linking to it
            os.link(f"{self.tree}/{first}", target)
            self.stats.hardlinks += 1
            return {**base, "t": "h", "l": first, "s": st.st_size}
        if st.st_nlink > 1:
            self.seen_inodes[key] = relative
        self.stats.files += 1
        previous = self.previous_index.get(relative)
        if previous is not None and _unchanged(previous[0], st):
            try:
                os.link(f"{self.previous_tree}/{relative}", target)
                self.stats.linked += 1
                self.stats.bytes += st.st_size
                return previous[1]
            except OSError as exc:
                if exc.errno not in (errno.EMLINK, errno.EXDEV, errno.ENOENT):
                    raise
        future = self.pool.submit(self._copy, source, target, st, base)
        if st.st_nlink > 1:
            self.copies[relative] = future
        return future

    def _copy(self, source: str, target: str, st: os.stat_result, base: dict[str, Any]) -> dict[str, Any] | None:
        try:
            digest, size = _copy_file(source, target, st)
        except FileNotFoundError:
            if os.path.lexists(source):
                raise
            logs.get().warning("files.vanished", path=source)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
            return None
        return {**base, "t": "f", "s": size, "ct": st.st_ctime_ns, "i": st.st_ino, "h": digest}

    def account(self, entry: dict[str, Any]) -> None:
        self.stats.copied += 1
        self.stats.copied_bytes += entry["s"]
        self.stats.bytes += entry["s"]

    def finish_directories(self) -> None:
        """Directory modes and mtimes last, deepest first: adding children changes them."""
        for source, target, st in reversed(self.directories):
            _apply_metadata(source, target, st)


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
            index.write(orjson.dumps(head) + b"\n")
            continue
        if not wait and not head.done():
            return
        entry = head.result()
        pending.popleft()
        wait = False
        if entry is None:  # vanished while it was being copied
            continue
        builder.account(entry)
        index.write(orjson.dumps(entry) + b"\n")


def snapshot(host: Host, name: str, cfg: FilesConfig, dest: Path, previous: Snapshot | None) -> dict[str, Any]:
    """Snapshot ``cfg.path`` into ``dest/tree`` plus ``dest/index.jsonl``; return the manifest entry."""
    source = cfg.path
    if not source.is_dir():
        raise UsageError(f"component {name}: {source} is not a directory")
    previous_index: dict[str, tuple[dict[str, Any], bytes]] = {}
    previous_tree = None
    if (
        previous is not None
        and previous.manifest["components"][name].get("source") == str(source)
        and previous.manifest.get("checksum_algorithm") == checksum.ALGORITHM
    ):
        previous_index = _index_lines(previous, name)
        previous_tree = str(previous.component_dir(name) / TREE)
    tree = dest / TREE
    tree.mkdir(mode=0o700)
    builder = _Builder(str(source), str(tree), previous_tree, previous_index)
    excludes = compile_excludes(cfg.exclude)
    try:
        with open(dest / INDEX, "xb") as raw:
            index = checksum.HashingWriter(raw)
            pending: deque[Entry] = deque()
            for relative, st in _walk(str(source), excludes):
                entry = builder.entry(relative, st)
                if entry is not None:
                    pending.append(entry)
                _write_ready(builder, index, pending, wait=len(pending) > IN_FLIGHT)
            while pending:
                _write_ready(builder, index, pending, wait=True)
            index.flush()
    finally:
        builder.pool.shutdown(wait=True, cancel_futures=True)
    os.chmod(dest / INDEX, 0o600)
    root_st = os.stat(source)
    _apply_metadata(str(source), str(tree), root_st)
    builder.finish_directories()
    stats = builder.stats
    logs.get().info(
        "files.snapshot",
        source=str(source),
        files=stats.files,
        copied=stats.copied,
        linked=stats.linked,
        bytes=stats.bytes,
    )
    return {
        "type": "files",
        "source": str(source),
        "root": {"m": root_st.st_mode, "u": root_st.st_uid, "g": root_st.st_gid},
        "exclude": cfg.exclude,
        "file_count": stats.files + stats.hardlinks,
        "directory_count": stats.directories,
        "symlink_count": stats.symlinks,
        "bytes": stats.bytes,
        "copied_files": stats.copied,
        "copied_bytes": stats.copied_bytes,
        "linked_files": stats.linked,
        "skipped_special": stats.skipped,
        "previous": previous.id if previous is not None and previous_tree else None,
        "artifacts": {INDEX: {"size": index.size, "hash": index.hexdigest()}},
    }


# ---------------------------------------------------------------- verify


class VerifiedCache:
    """Inodes already verified (key: inode, size, mtime, ctime -> hash), shared by snapshots.

    A file hard-linked from an earlier snapshot is the same inode, so it is hashed once.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.entries: dict[str, str] = json.loads(path.read_text())
        except (OSError, ValueError):
            self.entries = {}

    @staticmethod
    def key(st: os.stat_result) -> str:
        return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"

    def save(self) -> None:
        from aura_ops.repository import write_json

        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_json(self.path, self.entries)


def verify(host: Host, name: str, snapshot: Snapshot, cache: VerifiedCache, deep: bool = False) -> dict[str, Any]:
    """Check every file of the tree against the index; VerificationError naming the first bad."""
    tree = snapshot.component_dir(name) / TREE
    algorithm = snapshot.manifest.get("checksum_algorithm", checksum.ALGORITHM)
    hashed = skipped = 0
    for relative, entry in load_index(snapshot, name).items():
        path = tree / relative
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise VerificationError(f"{name}: {path} is missing") from None
        if entry["t"] == "l":
            if os.readlink(path) != entry["l"]:
                raise VerificationError(f"{name}: symlink {path} changed")
            continue
        if entry["t"] != "f":
            continue
        if st.st_size != entry["s"]:
            raise VerificationError(f"{name}: {path} has {st.st_size} bytes, expected {entry['s']}")
        key = VerifiedCache.key(st)
        if not deep and cache.entries.get(key) == entry["h"]:
            skipped += 1
            continue
        digest, _ = checksum.file_digest(path, algorithm)
        if digest != entry["h"]:
            raise VerificationError(f"{name}: checksum mismatch in {path}")
        cache.entries[key] = digest
        hashed += 1
    return {"files_hashed": hashed, "files_already_verified": skipped}


# ---------------------------------------------------------------- restore


def make_rsync_restore(tree: Path, target: Path, excludes: list[str], dry_run: bool) -> Command:
    """rsync that makes ``target`` exactly the snapshot tree (deletions included).

    ``--checksum``: rsync's quick check trusts size and mtime (to the second), so a same-size
    edit whose mtime matches (same second, or reset by a tool) would be skipped."""
    argv = ["rsync", "-aHAX", "--numeric-ids", "--delete", "--checksum"]
    if dry_run:
        argv += ["--dry-run", "--itemize-changes"]
    argv += rsync_excludes(excludes)
    argv += ["--", f"{tree}/", f"{target}/"]
    return Command(tuple(argv))


def restore(host: Host, name: str, snapshot: Snapshot, target: Path | None, dry_run: bool = False) -> dict[str, Any]:
    """Make ``target`` (default: the original path) equal to the snapshot tree."""
    entry = snapshot.manifest["components"][name]
    destination = target or Path(entry["source"])
    tree = snapshot.component_dir(name) / TREE
    if not dry_run:
        make_user_dirs(destination)  # the tree's own root gets the snapshot's mode below
    elif not destination.exists():
        return {
            "target": str(destination),
            "dry_run": True,
            "changes": [f"create {destination} with {entry['file_count']} files"],
        }
    result = host.run(make_rsync_restore(tree, destination, entry.get("exclude", []), dry_run))
    changes = [line for line in result.text.splitlines() if line.strip()]
    root = entry.get("root")
    if root and not dry_run:
        os.chmod(destination, stat.S_IMODE(root["m"]))
        if IS_ROOT:
            os.chown(destination, root["u"], root["g"])
    report: dict[str, Any] = {"target": str(destination), "dry_run": dry_run}
    if dry_run:
        report["changes"] = changes
    else:
        report["files"] = entry["file_count"]
        report["bytes"] = entry["bytes"]
    return report


def doctor(host: Host, name: str, cfg: FilesConfig) -> list[dict[str, Any]]:
    path = cfg.path
    ok = path.is_dir() and os.access(path, os.R_OK | os.X_OK)
    return [
        {
            "check": f"{name}: source {path}",
            "ok": ok,
            "detail": "readable" if ok else "missing or not readable",
            "exit_code": 2,
        }
    ]
