"""Restoring a files snapshot: nothing unverified is written, and the target ends wholly old or
wholly new.

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
import ctypes
import errno
import os
import re
import shutil
import stat
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aura_ops import checksum, logs
from aura_ops.checksum import fsync_dir
from aura_ops.components import files
from aura_ops.errors import AuraError, UsageError, VerificationError
from aura_ops.hosts import Host, make_user_dirs
from aura_ops.repository import Snapshot, syncfs
from aura_ops.state import temporaries

FAULT_ENV = "AURA_FAULT"
STAGING = ".aura-staging-"
OLD = ".aura-old-"
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
SHOWN_LIMIT = 1000  # paths kept in a report; the log names every one


def _fault(point: str) -> None:
    if os.environ.get(FAULT_ENV) == f"files-restore:{point}":
        os._exit(137)


# ---------------------------------------------------------------- the target as it is


@dataclass
class Current:
    """What the target holds now: entries by relative path (excludes left out), and the top-most
    entries the excludes match (they are carried into the new tree)."""

    exists: bool
    entries: dict[str, os.stat_result] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)


def scan(target: str, patterns: list[str]) -> Current:
    """Read the target's tree (symlinks are not followed; entries that vanish are skipped)."""
    if not os.path.isdir(target) or os.path.islink(target):
        return Current(exists=os.path.lexists(target))
    excludes = files.compile_excludes(patterns)
    current = Current(exists=True)
    stack = [""]
    while stack:
        relative_dir = stack.pop()
        try:
            items = list(os.scandir(f"{target}/{relative_dir}" if relative_dir else target))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for item in items:
            relative = f"{relative_dir}/{item.name}" if relative_dir else item.name
            try:
                st = item.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if excludes and files.is_excluded(relative, stat.S_ISDIR(st.st_mode), excludes):
                current.excluded.append(relative)
                continue
            current.entries[relative] = st
            if stat.S_ISDIR(st.st_mode):
                stack.append(relative)
    return current


def count_entries(target: Path, patterns: list[str]) -> int:
    """How many entries (excludes left out) a restore into ``target`` would replace."""
    return len(scan(str(target), patterns).entries)


def _unescape_mount(field_: bytes) -> str:
    """A mount point as /proc/self/mountinfo writes it (space, tab, newline, backslash as \\ooo)."""
    return os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), field_))


def mounts_at_or_under(target: str) -> list[str]:
    """Mount points at ``target`` or below it (from /proc/self/mountinfo)."""
    try:
        with open("/proc/self/mountinfo", "rb") as info:
            points = [_unescape_mount(line.split()[4]) for line in info if len(line.split()) > 4]
    except OSError:
        return []
    prefix = target.rstrip("/") + "/"
    return sorted(p for p in points if p == target or p.startswith(prefix))


# ---------------------------------------------------------------- renames


def _renameat2(source: str, target: str, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    function = libc.renameat2
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if function(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), source, None, target)


def _unsupported(exc: OSError) -> bool:
    return exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


def _inode(path: str | None) -> int | None:
    """The inode of a real folder at ``path`` (None when there is none)."""
    if not path:
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_ino if stat.S_ISDIR(st.st_mode) else None


def _remove_tree(path: str, fault: bool = False) -> None:
    """Remove a folder and everything in it (symlinks are removed, never followed)."""
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        os.unlink(path)  # a symlink (or file) put at the target meanwhile: never followed
        return
    for number, item in enumerate(os.scandir(path)):
        if item.is_dir(follow_symlinks=False):
            shutil.rmtree(item.path)
        else:
            os.unlink(item.path)
        if fault and number == 0:
            _fault("old-partly-removed")
    os.rmdir(path)


# ---------------------------------------------------------------- staging


class _Stager:
    """Writes the index's tree into ``staging`` (or, for a dry run, only checks and compares)."""

    def __init__(
        self,
        name: str,
        snapshot: Snapshot,
        index: files.Index,
        destination: str,
        current: Current,
        staging: str | None,
    ) -> None:
        component = snapshot.manifest["components"][name]
        self.name = name
        self.snapshot = snapshot
        self.component = component
        self.tree = str(snapshot.component_dir(name) / files.TREE)
        self.index = index
        self.destination = destination
        self.current = current
        self.staging = staging
        self.algorithm = snapshot.manifest.get("checksum_algorithm", checksum.ALGORITHM)
        self.xattrs_in_index = component.get("index_version", 1) >= files.INDEX_VERSION
        self.firsts = {e["l"] for e in index.entries.values() if e["t"] == "h"}
        self.first_copies: dict[str, concurrent.futures.Future[tuple[str, int]]] = {}
        self.linked = self.copied = self.copied_bytes = 0
        self.now = time.time_ns()
        self.device = os.lstat(staging).st_dev if staging else -1
        self.parents_checked: set[str] = set()

    def fail(self, relative: str, what: str) -> VerificationError:
        return VerificationError(f"{self.name}: {files.shown(relative)} {what} in snapshot {self.snapshot.id}")

    # -- checks of the stored tree

    def stored_directory(self, relative: str) -> None:
        try:
            st = os.lstat(f"{self.tree}/{relative}")
        except FileNotFoundError:
            raise self.fail(relative, "is missing") from None
        if not stat.S_ISDIR(st.st_mode):
            raise self.fail(relative, f"is {files.KIND_NAMES[files.kind_of(st.st_mode)]}, the index says a folder")

    def stored_symlink(self, relative: str, entry: dict[str, Any]) -> None:
        try:
            link = os.readlink(f"{self.tree}/{relative}")
        except FileNotFoundError:
            raise self.fail(relative, "is missing") from None
        except OSError:
            raise self.fail(relative, "is not a symlink, the index says one") from None
        if link != entry["l"]:
            raise self.fail(relative, "is a changed symlink")

    def stored_file_present(self, relative: str, entry: dict[str, Any]) -> None:
        try:
            st = os.lstat(f"{self.tree}/{relative}")
        except FileNotFoundError:
            raise self.fail(relative, "is missing") from None
        if not stat.S_ISREG(st.st_mode) or st.st_size != entry["s"]:
            raise self.fail(relative, "does not match the index (changed in the repository)")

    def open_stored(self, relative: str) -> int:
        try:
            reader = os.open(f"{self.tree}/{relative}", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise self.fail(relative, "is missing") from None
        except OSError as exc:
            raise self.fail(relative, f"cannot be read as a file ({exc.strerror})") from None
        if not stat.S_ISREG(os.fstat(reader).st_mode):
            os.close(reader)
            raise self.fail(relative, "is not a regular file, the index says one")
        return reader

    def xattrs_of(self, entry: dict[str, Any], stored: str | int) -> dict[str, bytes]:
        """The xattrs to restore: from the (checked) index; from the stored tree for snapshots
        made before the index recorded them."""
        return files.decode_xattrs(entry) if self.xattrs_in_index else files.read_xattrs(stored)

    # -- building

    def build(self) -> None:
        """Write every entry of the index into the staging folder; VerificationError on the first
        artifact that does not match (the staging folder is then the caller's to remove)."""
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=files.COPY_WORKERS)
        pending: deque[concurrent.futures.Future[tuple[str, int]]] = deque()
        try:
            for relative, entry in self.index.entries.items():
                kind = entry["t"]
                self.check_parent(relative)
                if kind == "d":
                    self.stored_directory(relative)
                    os.mkdir(f"{self.staging}/{relative}", 0o700)
                elif kind == "l":
                    self.symlink(relative, entry)
                elif kind == "h":
                    self.hardlink(relative, entry)
                else:
                    future = pool.submit(self.file, relative, entry)
                    if relative in self.firsts:
                        self.first_copies[relative] = future
                    pending.append(future)
                while pending and (pending[0].done() or len(pending) > files.IN_FLIGHT):
                    self.account(pending.popleft().result())
            while pending:
                self.account(pending.popleft().result())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def check_parent(self, relative: str) -> None:
        """Every name is made below a folder this stager made itself (never through a symlink:
        read_index refuses such an index, and this holds whatever built the index)."""
        if "/" in relative:
            parent = relative.rsplit("/", 1)[0]
            if self.index.entries.get(parent, {}).get("t") != "d":
                raise self.fail(relative, f"is below {files.shown(parent)}, which the index does not hold as a folder")
            if parent not in self.parents_checked:
                if not stat.S_ISDIR(os.lstat(f"{self.staging}/{parent}").st_mode):
                    raise self.fail(relative, "would be written through a symlink")
                self.parents_checked.add(parent)

    def account(self, result: tuple[str, int]) -> None:
        how, size = result
        if how == "linked":
            self.linked += 1
        else:
            self.copied += 1
            self.copied_bytes += size

    def apply(self, path: str, entry: dict[str, Any], xattrs: dict[str, bytes], symlink: bool = False) -> None:
        if files.IS_ROOT:
            os.chown(path, entry["u"], entry["g"], follow_symlinks=False)
        if not symlink:
            os.chmod(path, stat.S_IMODE(entry["m"]))
        files.set_xattrs(path, xattrs)
        os.utime(path, ns=(self.now, entry["mt"]), follow_symlinks=False)

    def symlink(self, relative: str, entry: dict[str, Any]) -> None:
        self.stored_symlink(relative, entry)
        path = f"{self.staging}/{relative}"
        os.symlink(entry["l"], path)
        self.apply(path, entry, self.xattrs_of(entry, f"{self.tree}/{relative}"), symlink=True)

    def hardlink(self, relative: str, entry: dict[str, Any]) -> None:
        first = self.index.entries.get(entry["l"])
        if first is None or first["t"] != "f":
            raise self.fail(relative, f"is a hard link to {files.shown(entry['l'])}, which the index does not hold")
        if entry["l"] in self.first_copies:
            self.first_copies[entry["l"]].result()
        os.link(f"{self.staging}/{entry['l']}", f"{self.staging}/{relative}")

    def file(self, relative: str, entry: dict[str, Any]) -> tuple[str, int]:
        """One regular file into the staging tree: linked from the target when it already holds
        exactly this file, else copied from the snapshot and checked against the index."""
        current = self.current.entries.get(relative)
        target = f"{self.staging}/{relative}"
        if current is not None and self.reusable(current, entry) and self.link_current(relative, entry, target):
            self.stored_file_present(relative, entry)  # unused, but a snapshot missing it is damaged
            return "linked", entry["s"]
        reader = self.open_stored(relative)
        try:
            digest, size = files.copy_hashed(reader, target, self.algorithm)
            xattrs = self.xattrs_of(entry, reader)
        finally:
            os.close(reader)
        if size != entry["s"] or digest != entry["h"]:
            raise self.fail(relative, "does not match the index (changed in the repository)")
        self.apply(target, entry, xattrs)
        return "copied", size

    def reusable(self, current: os.stat_result, entry: dict[str, Any]) -> bool:
        return bool(
            stat.S_ISREG(current.st_mode)
            and current.st_nlink == 1
            and current.st_dev == self.device
            and current.st_size == entry["s"]
            and current.st_mode == entry["m"]
            and current.st_mtime_ns == entry["mt"]
            and (current.st_uid, current.st_gid) == (entry["u"], entry["g"])
        )

    def link_current(self, relative: str, entry: dict[str, Any], target: str) -> bool:
        """Hard-link the target's own file when its content hashes to the index's and its xattrs
        match; False (nothing done) otherwise."""
        path = f"{self.destination}/{relative}"
        try:
            reader = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return False
        try:
            before = os.fstat(reader)
            digest = _hash_fd(reader, self.algorithm)
            after = os.fstat(reader)
            if digest != entry["h"] or not _same_file(before, after, self.current.entries[relative]):
                return False
            if files.read_xattrs(reader) != self.xattrs_of(entry, f"{self.tree}/{relative}"):
                return False
            os.link(path, target, follow_symlinks=False)
        except OSError:
            return False
        finally:
            os.close(reader)
        if os.lstat(target).st_ino != before.st_ino:  # replaced between the hash and the link
            os.unlink(target)
            return False
        return True

    def finish(self) -> None:
        """Folder metadata last, deepest first (adding entries changes a folder's mtime), then the
        root's."""
        for relative, entry in reversed(self.index.entries.items()):
            if entry["t"] == "d":
                path = f"{self.staging}/{relative}"
                self.apply(path, entry, self.xattrs_of(entry, f"{self.tree}/{relative}"))
        self.apply_root()

    def root_entry(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        root = self.component.get("root") or {}
        stored = os.lstat(self.tree)
        entry = {
            "m": root.get("m", stored.st_mode),
            "u": root.get("u", stored.st_uid),
            "g": root.get("g", stored.st_gid),
            "mt": root.get("mt", stored.st_mtime_ns),
        }
        xattrs = files.decode_xattrs(root) if self.xattrs_in_index else files.read_xattrs(self.tree)
        return entry, xattrs

    def apply_root(self) -> None:
        entry, xattrs = self.root_entry()
        self.apply(str(self.staging), entry, xattrs)

    # -- dry run

    def changes(self) -> list[str]:
        """What a restore would change, each artifact it would use checked; writes nothing."""
        lines = []
        for relative, entry in self.index.entries.items():
            line = self.change(relative, entry)
            if line:
                lines.append(line)
        for relative in self.current.entries:
            if relative not in self.index.entries:
                lines.append(f"deleting {files.shown(relative)}")
        return lines

    def change(self, relative: str, entry: dict[str, Any]) -> str | None:
        kind = entry["t"]
        current = self.current.entries.get(relative)
        expected = "f" if kind == "h" else kind
        shown = files.shown(relative)
        if current is None or files.kind_of(current.st_mode) != expected:
            self.check_stored(relative, entry)
            if current is None:
                return f"creating {shown}"
            was = files.KIND_NAMES[files.kind_of(current.st_mode)]
            return f"replacing {shown} ({was} by {files.KIND_NAMES[expected]})"
        if kind == "h":
            return None
        differences = self.differences(relative, current, entry)
        if "content" in differences or "target" in differences:
            self.check_stored(relative, entry)
        return f"updating {shown} ({', '.join(differences)})" if differences else None

    def check_stored(self, relative: str, entry: dict[str, Any]) -> None:
        if entry["t"] == "d":
            self.stored_directory(relative)
        elif entry["t"] == "l":
            self.stored_symlink(relative, entry)
        elif entry["t"] == "f":
            reader = self.open_stored(relative)
            try:
                size = os.fstat(reader).st_size
                digest = _hash_fd(reader, self.algorithm)
            finally:
                os.close(reader)
            if size != entry["s"] or digest != entry["h"]:
                raise self.fail(relative, "does not match the index (changed in the repository)")

    def differences(self, relative: str, current: os.stat_result, entry: dict[str, Any]) -> list[str]:
        path = f"{self.destination}/{relative}"
        found = []
        if entry["t"] == "f" and (current.st_size != entry["s"] or _hash_path(path, self.algorithm) != entry["h"]):
            found.append("content")
        if entry["t"] == "l" and os.readlink(path) != entry["l"]:
            found.append("target")
        if entry["t"] != "l" and current.st_mode != entry["m"]:
            found.append("mode")
        if files.IS_ROOT and (current.st_uid, current.st_gid) != (entry["u"], entry["g"]):
            found.append("owner")
        if entry["t"] != "d" and current.st_mtime_ns != entry["mt"]:
            found.append("mtime")
        if entry["t"] != "l" and files.read_xattrs(path) != self.xattrs_of(entry, f"{self.tree}/{relative}"):
            found.append("xattrs")
        return found


def _hash_fd(reader: int, algorithm: str) -> str:
    hasher = checksum.new(algorithm)
    buffer = bytearray(checksum.CHUNK)
    view = memoryview(buffer)
    while count := os.readv(reader, [buffer]):
        hasher.update(view[:count])
    return str(hasher.hexdigest())


def _hash_path(path: str, algorithm: str) -> str:
    try:
        reader = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    try:
        return _hash_fd(reader, algorithm)
    finally:
        os.close(reader)


def _same_file(before: os.stat_result, after: os.stat_result, listed: os.stat_result) -> bool:
    """Nothing wrote to the file while it was hashed, and it is the one the scan listed."""
    return (before.st_ino, before.st_dev) == (listed.st_ino, listed.st_dev) and (
        after.st_size,
        after.st_mtime_ns,
        after.st_ctime_ns,
    ) == (listed.st_size, listed.st_mtime_ns, listed.st_ctime_ns)


def not_in_index(tree: str, index: files.Index) -> list[str]:
    """Entries of the stored tree that the index does not list (top-most only): never restored."""
    found = []
    stack = [""]
    while stack:
        relative_dir = stack.pop()
        for item in os.scandir(f"{tree}/{relative_dir}" if relative_dir else tree):
            relative = f"{relative_dir}/{item.name}" if relative_dir else item.name
            entry = index.entries.get(relative)
            if entry is None:
                found.append(relative)
            elif entry["t"] == "d" and item.is_dir(follow_symlinks=False):
                stack.append(relative)
    return sorted(found)


# ---------------------------------------------------------------- excluded entries


def _excluded_moves(stager: _Stager, staging: str, destination: str) -> list[str]:
    """The target's excluded entries, checked to fit into the new tree (their missing parent
    folders are made there, as in the target); AuraError, before anything moved, when the
    snapshot holds something else at such a path."""
    moves = []
    for relative in sorted(stager.current.excluded):
        parts = relative.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            at = f"{staging}/{parent}"
            if os.path.lexists(at) and (os.path.islink(at) or not os.path.isdir(at)):
                raise AuraError(
                    f"{stager.name}: cannot keep the excluded {files.shown(relative)}: the snapshot has a "
                    f"{files.KIND_NAMES[files.kind_of(os.lstat(at).st_mode)][2:]} at {files.shown(parent)}; "
                    "nothing was changed"
                )
        if os.path.lexists(f"{staging}/{relative}"):
            raise AuraError(
                f"{stager.name}: cannot keep the excluded {files.shown(relative)}: the snapshot holds "
                f"{files.shown(relative)} too; nothing was changed"
            )
        moves.append(relative)
    for relative in moves:
        _make_parents_like(relative, staging, destination)
    return moves


def _make_parents_like(relative: str, staging: str, destination: str) -> None:
    parts = relative.split("/")
    for depth in range(1, len(parts)):
        parent = "/".join(parts[:depth])
        made = f"{staging}/{parent}"
        if os.path.isdir(made):
            continue
        original = os.lstat(f"{destination}/{parent}")
        os.mkdir(made, 0o700)
        files.set_xattrs(made, files.read_xattrs(f"{destination}/{parent}"))
        if files.IS_ROOT:
            os.chown(made, original.st_uid, original.st_gid)
        os.chmod(made, stat.S_IMODE(original.st_mode))


def _reset_mtimes(stager: _Stager, staging: str, moves: list[str]) -> None:
    """Moving entries in changed their folders' mtimes: put back the snapshot's (or the target's)."""
    parents = {relative.rsplit("/", 1)[0] if "/" in relative else "" for relative in moves}
    for parent in sorted(parents, key=len, reverse=True):
        entry = stager.index.entries.get(parent) if parent else stager.root_entry()[0]
        mtime = entry["mt"] if entry is not None else os.lstat(f"{stager.destination}/{parent}").st_mtime_ns
        os.utime(f"{staging}/{parent}" if parent else staging, ns=(stager.now, mtime), follow_symlinks=False)


# ---------------------------------------------------------------- restore


def _method(destination: Path) -> tuple[str, str]:
    """``swap`` (stage beside the target, exchange by rename) or ``in_place`` with the reason."""
    mounts = mounts_at_or_under(str(destination))
    if mounts:
        return "in_place", (
            f"{destination} is a mount point or holds one ({files.shown(mounts[0])}): the verified tree was "
            "applied in place with rsync (not atomically)"
        )
    if not os.access(destination.parent, os.W_OK | os.X_OK):
        return "in_place", (
            f"no staging folder can be made beside {destination} (its parent is not writable): the tree was "
            "verified in the repository and applied in place with rsync (not atomically)"
        )
    return "swap", ""


def _staging_path(snapshot: Snapshot, destination: Path, run_id: str) -> Path:
    if os.access(destination.parent, os.W_OK | os.X_OK):
        return destination.parent / f"{destination.name}{STAGING}{run_id}"
    return snapshot.path.parent.parent / "tmp" / f"restore-{run_id}"


def _make_parents(folder: Path) -> None:
    """The folders that hold a new target, made with the invoking user's umask (not aura's 0077)."""
    make_user_dirs(folder)


def restore(
    host: Host,
    name: str,
    snapshot: Snapshot,
    target: Path | None,
    dry_run: bool = False,
    run_id: str = "",
    replace: bool = True,
) -> dict[str, Any]:
    """Make ``target`` (default: the original path, resolved) exactly the snapshot's tree, every
    artifact checked against the index first; VerificationError (exit 3) before the target is
    touched when one does not match. ``replace`` False (nobody consented to replacing what the
    target holds, it was empty): UsageError (exit 2), nothing changed, when it holds something
    just before the swap."""
    component = snapshot.manifest["components"][name]
    destination = target if target is not None else Path(os.path.realpath(component["source"]))
    if os.path.lexists(destination) and not destination.is_dir():
        raise UsageError(f"{destination} is not a folder")
    index = files.checked_index(snapshot, name)
    tree = str(snapshot.component_dir(name) / files.TREE)
    if not os.path.isdir(tree) or os.path.islink(tree):
        raise VerificationError(f"{name}: the stored tree ({files.TREE}) of snapshot {snapshot.id} is missing")
    current = scan(str(destination), component.get("exclude", []))
    unlisted = not_in_index(tree, index)
    for relative in unlisted:
        logs.get().warning("files.not_in_index", path=files.shown(relative), snapshot=snapshot.id)
    report: dict[str, Any] = {"target": str(destination), "dry_run": dry_run}
    report["not_in_index"] = [files.shown(r) for r in unlisted[:SHOWN_LIMIT]]
    if dry_run:
        stager = _Stager(name, snapshot, index, str(destination), current, None)
        report["changes"] = stager.changes()
        return report
    run_id = run_id or str(os.getpid())
    if not destination.parent.is_dir():
        _make_parents(destination.parent)
    method, note = _method(destination)
    staging = _staging_path(snapshot, destination, run_id)
    with temporaries.track("dir_swap", str(destination), staging=str(staging), stage="building", method=method) as temp:
        staging.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging.mkdir(mode=0o700)
        temp.update(staging_ino=_inode(str(staging)), target_ino=_inode(str(destination)))
        stager = _Stager(name, snapshot, index, str(destination), current, str(staging))
        try:
            stager.build()
            stager.finish()
            syncfs(staging)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise AuraError(
                f"{name}: no space left on the device of {staging.parent} for the restored tree (it needs room "
                "for every file that differs from the target's); nothing was changed"
            ) from None
        _fault("staged")
        stager.current = _look_again(name, destination, component.get("exclude", []), replace)
        if method == "swap":
            try:
                kept = _swap(temp, stager, str(staging), str(destination), run_id, replace)
                if kept:
                    report["kept"] = files.shown(kept)
                    note = (
                        f"something was written into {destination} during the swap: it was not removed but kept "
                        f"in {files.shown(kept)}"
                    )
            except _SwapRefused as refused:
                method = "in_place"
                note = (
                    f"renaming {destination} was refused ({refused.reason}): the verified tree was applied "
                    "in place with rsync (not atomically)"
                )
        if method == "in_place":
            temp.update(stage="applying")
            host.run(files.make_rsync_restore(staging, destination, component.get("exclude", [])))
    report.update(
        method=method,
        files=component["file_count"],
        bytes=component["bytes"],
        copied_files=stager.copied,
        copied_bytes=stager.copied_bytes,
        linked_files=stager.linked,
    )
    if note:
        report["note"] = note
    return report


def _look_again(name: str, destination: Path, patterns: list[str], replace: bool) -> Current:
    """What the target holds just before it is replaced (the lock is held): its excluded entries,
    those made during the restore included, are carried over. UsageError when nobody consented
    to replacing what it holds (it was empty) and it now holds something."""
    now = scan(str(destination), patterns)
    if now.exists and (os.path.islink(destination) or not os.path.isdir(destination)):
        raise UsageError(f"{name}: {destination} is no longer a folder; it was not replaced; nothing was changed")
    unexpected = list(now.entries)[:1]
    if not replace and unexpected:
        raise UsageError(
            f"{name}: {destination} was empty when the restore began and now holds something "
            f"({files.shown(unexpected[0])}, ...); it was not replaced without consent. Restore again "
            "(confirm, or pass --yes, to replace it); nothing was changed"
        )
    return now


class _SwapRefused(Exception):
    """The file system refused a rename (EXDEV, EBUSY); what was moved has been moved back."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _move_back(moves: list[str], staging: str, destination: str) -> None:
    for relative in moves:
        if os.path.lexists(f"{staging}/{relative}") and not os.path.lexists(f"{destination}/{relative}"):
            os.rename(f"{staging}/{relative}", f"{destination}/{relative}")


def _swap(
    temp: temporaries.Temporary, stager: _Stager, staging: str, destination: str, run_id: str, replace: bool = True
) -> str | None:
    """Carry the excluded entries over, exchange staging and target, remove the old tree; each
    step recorded before it is made. _SwapRefused when a rename is refused (nothing changed).
    ``replace`` False: the old tree is removed only when empty, else kept (its path returned)."""
    moves = _excluded_moves(stager, staging, destination)
    temp.update(stage="moving_excluded", moves=moves)
    try:
        for relative in moves:
            os.rename(f"{destination}/{relative}", f"{staging}/{relative}")
        _reset_mtimes(stager, staging, moves)
        _fault("excluded-moved")
        temp.update(stage="swapping")
        old = _exchange(temp, staging, destination, stager.current.exists, run_id)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EBUSY):
            raise
        _move_back(moves, staging, destination)
        temp.update(stage="building", moves=[])
        raise _SwapRefused(exc.strerror or str(exc)) from None
    if old is None:
        temp.release()
        return None
    if not replace:
        return _remove_empty_old(temp, old)
    _remove_old(temp, old)
    return None


def _remove_empty_old(temp: temporaries.Temporary, old: str) -> str | None:
    """The old tree of a target that held nothing (excluded entries moved): removed when still
    empty; else something was written in the instant between the last look and the exchange,
    and it is kept where it is (returned), never removed without consent."""
    _fault("swapped")
    try:
        os.rmdir(old)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise
        temp.release()
        logs.get().warning("files.unexpected_kept", path=files.shown(old))
        return old
    temp.release()
    return None


def _exchange(temp: temporaries.Temporary, staging: str, destination: str, exists: bool, run_id: str) -> str | None:
    """Put the staging tree at ``destination``; return where the old tree now is (None: there
    was none)."""
    if not exists:
        try:
            _renameat2(staging, destination, _RENAME_NOREPLACE)
        except OSError as exc:
            if not _unsupported(exc):
                raise
            os.rename(staging, destination)
        fsync_dir(Path(destination).parent)
        return None
    old = staging
    try:
        _renameat2(staging, destination, _RENAME_EXCHANGE)
    except OSError as exc:
        if not _unsupported(exc):
            raise
        old = f"{destination}{OLD}{run_id}"
        temp.update(old=old)
        os.rename(destination, old)
        os.rename(staging, destination)
    fsync_dir(Path(destination).parent)
    return old


def _remove_old(temp: temporaries.Temporary, old: str) -> None:
    _fault("swapped")
    temp.update(stage="removing_old")
    try:
        _remove_tree(old, fault=True)
    except OSError as exc:
        logs.get().warning("files.old_tree_left", path=files.shown(old), reason=exc.strerror)
        return  # the record stays: the next command that takes the lock removes it, doctor lists it
    temp.release()


def finish_or_undo(config: Any, record: temporaries.Temporary) -> str:
    """The ``dir_swap`` handler: a restore that was stopped anywhere is finished when the restored
    tree is already in place (the old one is removed), else undone (the old tree is put back with
    its excluded entries, the staging folder removed). Idempotent."""
    target = record.name
    details = record.details
    staging, old = details.get("staging"), details.get("old")
    new_inode, old_inode = details.get("staging_ino"), details.get("target_ino")
    at_target = _inode(target)
    if new_inode is not None and at_target == new_inode:
        for leftover in (staging, old):
            if _inode(leftover) is not None and _inode(leftover) != new_inode:
                shutil.rmtree(str(leftover))
        return "finished: the restored tree is in place, the old one removed"
    if at_target is None and old and old_inode is not None and _inode(old) == old_inode:
        os.rename(old, target)
    if staging and _inode(target) is not None:
        _move_back(details.get("moves", []), staging, target)
    if _inode(staging) is not None and (old_inode is None or _inode(staging) != old_inode):
        shutil.rmtree(str(staging))
    if details.get("stage") == "applying":
        return f"undone: staging removed; {target} was being restored in place and may be partly restored"
    return "undone: the old tree is in place, the staging folder removed"
