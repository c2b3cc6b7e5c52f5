"""Files component: a snapshot is a plain, browsable folder tree.

An incremental snapshot hard-links every file that is unchanged since the previous snapshot of
the same component (same size, mtime, ctime, inode, mode and owner, read from that snapshot's
index, so unchanged files are never re-read), and copies the rest, hashing each as it is
written. Permissions, ownership, symlinks, hard links, xattrs and ACLs are kept; fifos, sockets
and devices are skipped with a warning. A source that changes while it is read (files or folders
that vanish, or are replaced) gives warnings, not a failed backup.

The index (``index.jsonl``, one JSON line an entry, parents first) records for each path its
type, mode, owner, mtime, xattrs, and for files size and SHA-256. A name that is not UTF-8 is
stored byte-exact as base64 (``pb``/``lb`` instead of ``p``/``l``). Restores (files_restore.py)
write only what the index lists, each file checked against it.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
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
from aura_ops.hosts import Command, Host
from aura_ops.repository import Snapshot

INDEX = "index.jsonl"
INDEX_VERSION = 2  # 2: xattrs ("x") recorded in the index; names that are not UTF-8 as base64
COPY_WORKERS = 3  # hashing and file I/O release the GIL: copies overlap on 2+ cores
IN_FLIGHT = 512  # copies queued ahead of the index writer (bounds memory)
Entry = dict[str, Any] | bytes | concurrent.futures.Future[dict[str, Any] | None]
TREE = "tree"
IS_ROOT = os.geteuid() == 0
KINDS = {"f", "d", "l", "h"}


def shown(path: str) -> str:
    """A path as text anyone can print: bytes that are not UTF-8 appear as \\xNN escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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


def read_index(path: Path, algorithm: str = checksum.ALGORITHM) -> Index:
    """Read an index, hashing it as it is read (FileNotFoundError when it is missing)."""
    hasher = checksum.new(algorithm)
    entries: dict[str, dict[str, Any]] = {}
    lines: dict[str, bytes] = {}
    problems = []
    with open(path, "rb") as source:
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


def checked_index(snapshot: Snapshot, name: str) -> Index:
    """The index of a files component, checked against the manifest: VerificationError (exit 3)
    when it is missing, changed or holds an unreadable line."""
    info = snapshot.manifest["components"][name].get("artifacts", {}).get(INDEX, {})
    algorithm = snapshot.manifest.get("checksum_algorithm", checksum.ALGORITHM)
    try:
        index = read_index(snapshot.component_dir(name) / INDEX, algorithm)
    except FileNotFoundError:
        raise VerificationError(f"{name}: {INDEX} of snapshot {snapshot.id} is missing") from None
    if index.digest != info.get("hash"):
        raise VerificationError(f"{name}: {INDEX} of snapshot {snapshot.id} changed (checksum mismatch)")
    if index.problems:
        raise VerificationError(f"{name}: {index.problems[0]} in snapshot {snapshot.id}")
    return index


def index_damage(snapshot: Snapshot, name: str, cache: VerifiedCache | None = None) -> str | None:
    """Why this component's index cannot be trusted (missing, changed), or None."""
    info = snapshot.manifest["components"][name].get("artifacts", {}).get(INDEX, {})
    path = snapshot.component_dir(name) / INDEX
    try:
        st = os.stat(path)
    except OSError:
        return f"{name}: {INDEX} is missing"
    if cache is not None and cache.entries.get(VerifiedCache.key(st)) == info.get("hash"):
        return None
    digest, _ = checksum.file_digest(path, snapshot.manifest.get("checksum_algorithm", checksum.ALGORITHM))
    if digest != info.get("hash"):
        return f"{name}: {INDEX} changed since the snapshot was sealed (checksum mismatch)"
    if cache is not None:
        cache.entries[VerifiedCache.key(st)] = digest
    return None


# ---------------------------------------------------------------- xattrs and metadata


def read_xattrs(target: str | int) -> dict[str, bytes]:
    """Every extended attribute (ACLs included) of a path (not followed) or an open file."""
    try:
        names = os.listxattr(target) if isinstance(target, int) else os.listxattr(target, follow_symlinks=False)
    except OSError:
        return {}
    found = {}
    for attribute in names:
        try:
            if isinstance(target, int):
                found[attribute] = os.getxattr(target, attribute)
            else:
                found[attribute] = os.getxattr(target, attribute, follow_symlinks=False)
        except OSError as exc:
            logs.get().debug("files.xattr_skipped", path=shown(str(target)), xattr=attribute, reason=exc.strerror)
    return found


def set_xattrs(target: str, xattrs: dict[str, bytes]) -> None:
    for attribute, value in xattrs.items():
        try:
            os.setxattr(target, attribute, value, follow_symlinks=False)
        except OSError as exc:
            logs.get().debug("files.xattr_skipped", path=shown(target), xattr=attribute, reason=exc.strerror)


def encode_xattrs(xattrs: dict[str, bytes]) -> dict[str, str]:
    return {name: base64.b64encode(value).decode("ascii") for name, value in sorted(xattrs.items()) if _is_utf8(name)}


def decode_xattrs(entry: dict[str, Any]) -> dict[str, bytes]:
    return {name: base64.b64decode(value) for name, value in entry.get("x", {}).items()}


def _with_xattrs(entry: dict[str, Any], xattrs: dict[str, bytes]) -> dict[str, Any]:
    if xattrs:
        entry["x"] = encode_xattrs(xattrs)
    return entry


def _apply_metadata(target: str, st: os.stat_result, xattrs: dict[str, bytes], symlink: bool = False) -> None:
    if IS_ROOT:
        os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
    if not symlink:
        os.chmod(target, stat.S_IMODE(st.st_mode))
    set_xattrs(target, xattrs)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


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
    vanished: list[str] = field(default_factory=list)


def _vanished(stats: _Stats, path: str, what: str = "vanished") -> None:
    """A source entry that disappeared (or was replaced) while the backup read it: a warning."""
    stats.vanished.append(shown(path))
    logs.get().warning(f"files.{what}", path=shown(path))


def _walk(root: str, excludes: list[tuple[str, bool, bool]], stats: _Stats) -> Iterator[tuple[str, os.stat_result]]:
    """Yield (relative path, lstat) for every entry under ``root``, parents first, sorted.
    A folder that vanishes before it is read is a warning (its entry was already yielded)."""
    stack = [""]
    while stack:
        relative_dir = stack.pop()
        directory = f"{root}/{relative_dir}" if relative_dir else root
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            _vanished(stats, directory)
            continue
        except OSError as exc:
            raise AuraError(f"cannot read {shown(directory)}: {exc.strerror}") from None
        subdirs = []
        for entry in entries:
            relative = f"{relative_dir}/{entry.name}" if relative_dir else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                _vanished(stats, entry.path)
                continue
            if excludes and is_excluded(relative, stat.S_ISDIR(st.st_mode), excludes):
                continue
            yield relative, st
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(relative)
        stack.extend(reversed(subdirs))


_buffers = threading.local()


def _buffer() -> tuple[bytearray, memoryview]:
    if not hasattr(_buffers, "data"):
        _buffers.data = bytearray(checksum.CHUNK)
        _buffers.view = memoryview(_buffers.data)
    return _buffers.data, _buffers.view


def copy_hashed(reader: int, target: str, algorithm: str = checksum.ALGORITHM) -> tuple[str, int]:
    """Copy an open file's content into a new file ``target`` (0600, must not exist), hashing it
    as it is written; return (hash, bytes)."""
    hasher = checksum.new(algorithm)
    size = 0
    buffer, view = _buffer()
    writer = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        while count := os.readv(reader, [buffer]):
            chunk = view[:count]
            hasher.update(chunk)
            write_all(writer, chunk)
            size += count
        if size >= checksum.CHUNK:
            checksum.start_writeback(writer)
    finally:
        os.close(writer)
    return hasher.hexdigest(), size


def write_all(fd: int, data: memoryview) -> None:
    """Write every byte: a write may be short (a full disk writes part, then fails with ENOSPC)."""
    while data:
        written = os.write(fd, data)
        data = data[written:]


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


def _base(relative: str, st: os.stat_result) -> dict[str, Any]:
    return {"p": relative, "m": st.st_mode, "u": st.st_uid, "g": st.st_gid, "mt": st.st_mtime_ns}


class _Builder:
    """Builds one snapshot tree from a source tree and the previous snapshot's index."""

    def __init__(self, source: str, tree: str, previous_tree: str | None, previous: Index | None) -> None:
        self.source = source
        self.tree = tree
        self.previous_tree = previous_tree
        self.previous = previous
        # an index from before xattrs were recorded: its lines cannot be reused verbatim
        self.previous_lines_whole = False
        self.stats = _Stats()
        self.seen_inodes: dict[tuple[int, int], str] = {}
        self.directories: list[tuple[str, os.stat_result, dict[str, bytes]]] = []
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=COPY_WORKERS)
        self.copies: dict[str, concurrent.futures.Future[dict[str, Any] | None]] = {}

    def entry(self, relative: str, st: os.stat_result) -> Entry | None:
        source, target = f"{self.source}/{relative}", f"{self.tree}/{relative}"
        if stat.S_ISREG(st.st_mode):
            return self.regular(relative, source, target, st)
        if stat.S_ISDIR(st.st_mode):
            os.mkdir(target, 0o700)
            xattrs = read_xattrs(source)
            self.directories.append((target, st, xattrs))
            self.stats.directories += 1
            return _with_xattrs({**_base(relative, st), "t": "d"}, xattrs)
        if stat.S_ISLNK(st.st_mode):
            return self.symlink(relative, source, target, st)
        self.stats.skipped.append(shown(relative))
        logs.get().warning("files.special_skipped", path=shown(source), kind=stat.filemode(st.st_mode)[0])
        return None

    def symlink(self, relative: str, source: str, target: str, st: os.stat_result) -> Entry | None:
        try:
            link = os.readlink(source)
        except FileNotFoundError:
            _vanished(self.stats, source)
            return None
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            _vanished(self.stats, source, "changed_during_backup")  # no longer a symlink
            return None
        os.symlink(link, target)
        xattrs = read_xattrs(source)
        _apply_metadata(target, st, xattrs, symlink=True)
        self.stats.symlinks += 1
        return _with_xattrs({**_base(relative, st), "t": "l", "l": link}, xattrs)

    def regular(self, relative: str, source: str, target: str, st: os.stat_result) -> Entry:
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self.seen_inodes:
            first = self.seen_inodes[key]
            if first in self.copies:
                self.copies[first].result()  # the first name must exist before linking to it
            try:
                os.link(f"{self.tree}/{first}", target)
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
        future = self.pool.submit(self._copy, relative, source, target, st)
        if st.st_nlink > 1:
            self.copies[relative] = future
        return future

    def reuse_previous(self, relative: str, source: str, target: str, st: os.stat_result) -> Entry | None:
        """An unchanged file: hard-linked to the previous snapshot's copy, its line reused."""
        if self.previous is None:
            return None
        previous = self.previous.entries.get(relative)
        if previous is None or not _unchanged(previous, st):
            return None
        try:
            os.link(f"{self.previous_tree}/{relative}", target)
        except OSError as exc:
            if exc.errno not in (errno.EMLINK, errno.EXDEV, errno.ENOENT):
                raise
            return None
        self.stats.linked += 1
        self.stats.bytes += st.st_size
        if self.previous_lines_whole:
            return self.previous.lines[relative]
        entry = {k: v for k, v in previous.items() if k not in ("pb", "lb", "x")}
        return _with_xattrs(entry, read_xattrs(source))

    def _copy(self, relative: str, source: str, target: str, st: os.stat_result) -> dict[str, Any] | None:
        try:
            reader = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            _vanished(self.stats, source)
            return None
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENXIO):
                raise
            _vanished(self.stats, source, "changed_during_backup")  # now a symlink or a socket
            return None
        try:
            opened = os.fstat(reader)
            if not stat.S_ISREG(opened.st_mode):
                _vanished(self.stats, source, "changed_during_backup")
                return None
            if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                st = opened  # replaced since it was listed: the file that is there now
            digest, size = copy_hashed(reader, target)
            xattrs = read_xattrs(reader)
        finally:
            os.close(reader)
        _apply_metadata(target, st, xattrs)
        entry = {**_base(relative, st), "t": "f", "s": size, "ct": st.st_ctime_ns, "i": st.st_ino, "h": digest}
        return _with_xattrs(entry, xattrs)

    def account(self, entry: dict[str, Any]) -> None:
        self.stats.copied += 1
        self.stats.copied_bytes += entry["s"]
        self.stats.bytes += entry["s"]

    def finish_directories(self) -> None:
        """Directory modes and mtimes last, deepest first: adding children changes them."""
        for target, st, xattrs in reversed(self.directories):
            _apply_metadata(target, st, xattrs)


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


def _previous_index(previous: Snapshot | None, name: str, source: Path) -> tuple[Index | None, str | None, bool]:
    """The previous snapshot's index (checked), its tree, and whether its lines can be reused."""
    if (
        previous is None
        or previous.manifest["components"][name].get("source") != str(source)
        or previous.manifest.get("checksum_algorithm") != checksum.ALGORITHM
    ):
        return None, None, False
    try:
        index = checked_index(previous, name)
    except VerificationError as exc:
        logs.get().warning("files.previous_unusable", snapshot=previous.id, reason=str(exc))
        return None, None, False
    whole = previous.manifest["components"][name].get("index_version", 1) >= INDEX_VERSION
    return index, str(previous.component_dir(name) / TREE), whole


def snapshot(host: Host, name: str, cfg: FilesConfig, dest: Path, previous: Snapshot | None) -> dict[str, Any]:
    """Snapshot ``cfg.path`` into ``dest/tree`` plus ``dest/index.jsonl``; return the manifest entry."""
    source = cfg.path
    if not source.is_dir():
        raise UsageError(f"component {name}: {source} is not a directory")
    previous_index, previous_tree, whole = _previous_index(previous, name, source)
    tree = dest / TREE
    tree.mkdir(mode=0o700)
    builder = _Builder(str(source), str(tree), previous_tree, previous_index)
    builder.previous_lines_whole = whole
    excludes = compile_excludes(cfg.exclude)
    try:
        with open(dest / INDEX, "xb") as raw:
            index = checksum.HashingWriter(raw)
            pending: deque[Entry] = deque()
            for relative, st in _walk(str(source), excludes, builder.stats):
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
    root_xattrs = read_xattrs(str(source))
    _apply_metadata(str(tree), root_st, root_xattrs)
    builder.finish_directories()
    stats = builder.stats
    logs.get().info(
        "files.snapshot",
        source=str(source),
        files=stats.files,
        copied=stats.copied,
        linked=stats.linked,
        bytes=stats.bytes,
        vanished=len(stats.vanished),
    )
    root = _with_xattrs(
        {"m": root_st.st_mode, "u": root_st.st_uid, "g": root_st.st_gid, "mt": root_st.st_mtime_ns}, root_xattrs
    )
    return {
        "type": "files",
        "source": str(source),
        "source_resolved": os.path.realpath(source),  # the folder read: an in-place restore goes only there
        "root": root,
        "exclude": cfg.exclude,
        "index_version": INDEX_VERSION,
        "owners_kept": IS_ROOT,
        "file_count": stats.files + stats.hardlinks,
        "directory_count": stats.directories,
        "symlink_count": stats.symlinks,
        "bytes": stats.bytes,
        "copied_files": stats.copied,
        "copied_bytes": stats.copied_bytes,
        "linked_files": stats.linked,
        "skipped_special": stats.skipped,
        "vanished_during_backup": stats.vanished[:1000],
        "previous": previous.id if previous is not None and previous_tree else None,
        "artifacts": {INDEX: {"size": index.size, "hash": index.hexdigest()}},
    }


# ---------------------------------------------------------------- verify


class VerifiedCache:
    """Files indexes a verify hashed and found as sealed (key: device, inode, size, mtime, ctime
    -> hash): lets ``snapshots list`` skip re-hashing an index nobody rewrote. Only a hint for
    ``list``: ``verify`` re-hashes every artifact and file, and restores hash what they use. A
    cache file that is unreadable or not a map of strings is ignored (and replaced by verify).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, str] = {}
        try:
            loaded = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        if isinstance(loaded, dict):
            self.entries = {k: v for k, v in loaded.items() if isinstance(k, str) and isinstance(v, str)}

    @staticmethod
    def key(st: os.stat_result) -> str:
        return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"

    def save(self) -> None:
        from aura_ops.repository import write_json

        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_json(self.path, self.entries)


def kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "d"
    if stat.S_ISLNK(mode):
        return "l"
    return "f" if stat.S_ISREG(mode) else "special"


KIND_NAMES = {"d": "a folder", "l": "a symlink", "f": "a file", "h": "a file", "special": "a special file"}


class _TreeChecker:
    """Compares a stored tree with its index; collects every difference as a problem."""

    def __init__(self, snapshot: Snapshot, name: str, index: Index) -> None:
        component = snapshot.manifest["components"][name]
        self.tree = str(snapshot.component_dir(name) / TREE)
        self.index = index
        self.algorithm = snapshot.manifest.get("checksum_algorithm", checksum.ALGORITHM)
        self.owners = bool(component.get("owners_kept", False))
        self.xattrs = component.get("index_version", 1) >= INDEX_VERSION
        self.root = component.get("root")
        self.problems: list[str] = []
        self.seen: set[str] = set()
        self.replaced: set[str] = set()  # folders of another type: what is under them is not missing
        self.hashed = 0

    def problem(self, relative: str, what: str) -> None:
        self.problems.append(f"{shown(relative)}: {what}")

    def run(self) -> None:
        if not os.path.isdir(self.tree) or os.path.islink(self.tree):
            self.problems.append(f"{TREE}: missing")
            return
        self.check_root()
        self.walk("")
        bad = set(self.replaced)
        for relative in self.index.entries:
            if relative in self.seen:
                continue
            bad.add(relative)
            if "/" not in relative or relative.rsplit("/", 1)[0] not in bad:
                self.problem(relative, "missing")  # (what is under a missing folder is not listed)

    def check_root(self) -> None:
        if not self.root:
            return
        st = os.lstat(self.tree)
        self.check_mode_owner("(root)", st, self.root)

    def walk(self, relative_dir: str) -> None:
        directory = f"{self.tree}/{relative_dir}" if relative_dir else self.tree
        for item in sorted(os.scandir(directory), key=lambda e: e.name):
            relative = f"{relative_dir}/{item.name}" if relative_dir else item.name
            st = item.stat(follow_symlinks=False)
            entry = self.index.entries.get(relative)
            if entry is None:
                link = f" (a symlink to {shown(os.readlink(item.path))})" if stat.S_ISLNK(st.st_mode) else ""
                self.problem(relative, f"not in the index{link}")
                continue
            self.seen.add(relative)
            if self.check(relative, item.path, st, entry) and entry["t"] == "d":
                self.walk(relative)

    def check(self, relative: str, path: str, st: os.stat_result, entry: dict[str, Any]) -> bool:
        """Check one entry; False when its type differs (its children are then not looked at)."""
        expected = "f" if entry["t"] == "h" else entry["t"]
        found = kind_of(st.st_mode)
        if found != expected:
            self.problem(relative, f"is {KIND_NAMES[found]}, the index says {KIND_NAMES[expected]}")
            self.replaced.add(relative)
            return False
        if entry["t"] == "l":
            link = os.readlink(path)
            if link != entry["l"]:
                self.problem(relative, f"symlink changed (to {shown(link)}; the index says {shown(entry['l'])})")
            if self.owners and (st.st_uid, st.st_gid) != (entry["u"], entry["g"]):
                self.problem(relative, f"owner {st.st_uid}:{st.st_gid}; the index says {entry['u']}:{entry['g']}")
            return True
        if entry["t"] == "h":
            first = f"{self.tree}/{entry['l']}"
            if not os.path.lexists(first) or os.lstat(first).st_ino != st.st_ino:
                self.problem(relative, f"no longer a hard link to {shown(entry['l'])}")
            return True
        if entry["t"] == "f":
            self.check_content(relative, path, st, entry)
        self.check_mode_owner(relative, st, entry)
        if self.xattrs and read_xattrs(path) != decode_xattrs(entry):
            self.problem(relative, "xattrs or ACLs changed")
        return True

    def check_mode_owner(self, relative: str, st: os.stat_result, entry: dict[str, Any]) -> None:
        if st.st_mode != entry["m"]:
            self.problem(relative, f"mode {stat.filemode(st.st_mode)}; the index says {stat.filemode(entry['m'])}")
        if self.owners and (st.st_uid, st.st_gid) != (entry["u"], entry["g"]):
            self.problem(relative, f"owner {st.st_uid}:{st.st_gid}; the index says {entry['u']}:{entry['g']}")

    def check_content(self, relative: str, path: str, st: os.stat_result, entry: dict[str, Any]) -> None:
        if st.st_size != entry["s"]:
            self.problem(relative, f"content changed ({st.st_size} bytes; the index says {entry['s']})")
            return
        digest, _ = checksum.file_digest(Path(path), self.algorithm)  # always: bit rot keeps the metadata
        self.hashed += 1
        if digest != entry["h"]:
            self.problem(relative, "content changed (checksum mismatch)")


def verify(host: Host, name: str, snapshot: Snapshot) -> dict[str, Any]:
    """Check the stored tree against the index: each file's content (every file hashed), every entry's type, mode
    (and owner, when the snapshot kept owners), xattrs, symlink targets, hard links, and what is
    in the tree but not in the index. Every problem found is returned in ``problems``."""
    algorithm = snapshot.manifest.get("checksum_algorithm", checksum.ALGORITHM)
    try:
        index = read_index(snapshot.component_dir(name) / INDEX, algorithm)
    except FileNotFoundError:
        return {"problems": [f"{name}: {INDEX} is missing"]}
    checker = _TreeChecker(snapshot, name, index)
    checker.run()
    problems = [f"{name}: {problem}" for problem in index.problems + checker.problems]
    return {"files_hashed": checker.hashed, "problems": problems}


# ---------------------------------------------------------------- restore


def make_rsync_restore(tree: Path, target: Path, excludes: list[str], dry_run: bool = False) -> Command:
    """rsync that makes ``target`` exactly ``tree`` (deletions included); used only to apply an
    already verified staging tree in place (a mount point, or no room for a swap).

    ``--checksum``: rsync's quick check trusts size and mtime (to the second), so a same-size
    edit whose mtime matches (same second, or reset by a tool) would be skipped."""
    argv = ["rsync", "-aHAX", "--numeric-ids", "--delete", "--checksum"]
    if dry_run:
        argv += ["--dry-run", "--itemize-changes"]
    argv += rsync_excludes(excludes)
    argv += ["--", f"{tree}/", f"{target}/"]
    return Command(tuple(argv))


def restore(
    host: Host,
    name: str,
    snapshot: Snapshot,
    target: Path | None,
    dry_run: bool = False,
    run_id: str = "",
    replace: bool = True,
) -> dict[str, Any]:
    """Make ``target`` (default: the original path) equal to the snapshot tree; see files_restore."""
    from aura_ops.components.files import restorer as files_restore

    return files_restore.restore(host, name, snapshot, target, dry_run, run_id, replace)


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
