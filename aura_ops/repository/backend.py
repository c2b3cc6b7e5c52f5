"""Where a repository's bytes live: the backend protocol and ``LocalBackend``, a folder on the
control machine.

A backend stores objects under ``/``-separated keys relative to the repository's root
(``format.json``, ``snapshots/<id>.sha256``, ``snapshots/<id>/manifest.json``, ...). It knows
nothing of snapshots, manifests or components: ``Repository`` (store.py) decides which keys
exist and what they hold, and uses only the operations below, so that another storage is one
more class. Each operation, and how an S3 bucket (any S3-compatible endpoint, keys under a
prefix) would implement it:

- ``put(key, data)``: store bytes or a stream, atomically and durably (never half an object).
  Local: a ``<key>.tmp`` file (0600), fsync, rename. S3: PutObject, or a multipart upload for a
  large stream (an object appears only when the upload completes).
- ``get(key)``: open an object for reading; FileNotFoundError when absent, OSError when it cannot
  be read. Local: open the file. S3: GetObject's streaming body (NoSuchKey translated to
  FileNotFoundError, other client errors to OSError).
- ``list(prefix)``: the names one level below a folder, each marked folder or not; empty when
  the folder does not exist. Local: scandir. S3: ListObjectsV2 with ``Prefix=<prefix>/`` and
  ``Delimiter="/"``: CommonPrefixes are the folders, Contents the objects.
- ``stat(key)``: is there an object or a folder at ``key`` (and its size), or None. Local:
  stat. S3: HeadObject, else a one-key listing of ``<key>/`` for a folder.
- ``delete(key)``: remove an object, or a folder with everything in it; a folder stops being
  visible under its key at once, so a crash never leaves half of one there. Local: rename to
  ``<key>.deleting.partial`` (a name the repository cleans like a partial), fsync the parent,
  remove. S3: delete the folder's ``manifest.json`` first (without it the folder is no
  snapshot), then the other keys by prefix (DeleteObjects, 1000 at a time).
- ``stage(key)`` / ``commit(staged, final, name, data)`` / ``discard(staged)``: a snapshot is
  written into a new local folder (components write files there with their own fast I/O), then
  published at once: ``commit`` writes ``name`` (the manifest) last, makes everything durable
  and publishes the folder as ``final``; ``discard`` drops an unpublished folder. Local: the
  staged folder is ``<repo>/<staged>`` itself (``snapshots/<id>.partial``); commit writes the
  manifest into it, syncs the file system, and renames it to ``final``: the rename is the
  commit. S3: the staged folder is in a local cache; commit uploads every file under
  ``final/``, then the manifest, last and written once (its presence is the commit: a listing
  counts a folder as a snapshot only when its manifest is there), then removes the local folder;
  discard also deletes any keys already uploaded under ``final/``.
- ``folder(key)``: a folder on this machine holding a committed folder's files, for the code
  that reads artifacts (restore, verify). Local: ``<repo>/<key>``. S3: a local cache folder,
  filled from the bucket before first use.
- ``locked(run_id, command)``: hold the repository's lock for a block; LockedError naming a
  live holder. Local: an flock'ed ``<repo>/lock`` file (state/lock.py). S3: a conditional put
  (``If-None-Match: *``) of a ``lock`` object holding the same record, deleted on exit (a dead
  holder's lock is found by its age and host), or the shared state database's advisory lock.
- ``ensure(*folders)``: create the root and these folders (0700). S3: nothing to create (a
  prefix exists by its keys); check that the bucket answers.
- ``free_bytes()``: room left for the next snapshot. Local: the file system's free space. S3:
  no limit (a quota, when one is configured).
- ``capacity()``: the size of the storage ``free_bytes`` is part of, or None when it has none
  (what a reserve given as a percentage is a percentage of). Local: the file system's size. S3:
  None (or the quota, when one is configured).
- ``links(key)``: every file stored under the folder ``key`` (or the object ``key``), one item a
  name: ``(identity, links, size)``, where ``identity`` is the same for every name of one stored
  file (hard links), ``links`` is how many names that file has in the whole store, and ``size``
  the bytes it takes there; what a snapshot's own and shared sizes are counted from (space.py).
  Nothing when ``key`` does not exist. Local: a walk with lstat: ``(st_dev, st_ino)``,
  ``st_nlink``, ``st_blocks * 512`` (the bytes deleting the last link frees); each folder, the
  top one included, as a file with one link (its own blocks). S3: a listing of
  the prefix; a file tree's content-addressed blob is its key, its links the count of references
  to it the repository's blob index keeps, its size the object's.

``root`` is the folder on this machine where the repository keeps its local files: the
repository itself for ``LocalBackend``, the cache of a remote one.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from aura_ops import faults
from aura_ops.checksum import fsync_dir
from aura_ops.state import lock

PARTIAL = ".partial"  # a folder being written, or being deleted: never a snapshot
DELETING = ".deleting" + PARTIAL
LOCK = "lock"


@dataclass(frozen=True)
class Entry:
    """A name in a folder (``list``) or at a key (``stat``): a folder or an object of ``size``
    bytes (0 for a folder)."""

    name: str
    is_folder: bool
    size: int = 0


class Backend(Protocol):
    """The storage under a repository (see the module docstring for each operation)."""

    root: Path

    def ensure(self, *folders: str) -> None: ...
    def put(self, key: str, data: bytes | IO[bytes]) -> None: ...
    def get(self, key: str) -> IO[bytes]: ...
    def list(self, prefix: str) -> list[Entry]: ...
    def stat(self, key: str) -> Entry | None: ...
    def delete(self, key: str) -> None: ...
    def stage(self, key: str) -> Path: ...
    def commit(self, staged: str, final: str, name: str, data: bytes) -> Path: ...
    def discard(self, staged: str) -> None: ...
    def folder(self, key: str) -> Path: ...
    def locked(self, run_id: str, command: str) -> contextlib.AbstractContextManager[Any]: ...
    def free_bytes(self) -> int: ...
    def capacity(self) -> int | None: ...
    def links(self, key: str) -> Iterator[tuple[Hashable, int, int]]: ...


def syncfs(path: Path) -> None:
    """Flush every dirty page of the filesystem holding ``path`` (one call, not one per file)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def write_bytes(path: Path, data: bytes | IO[bytes]) -> None:
    """Write a file atomically (``<name>.tmp``, fsync, rename), mode 0600."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        if isinstance(data, bytes):
            out.write(data)
        else:
            shutil.copyfileobj(data, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def open_regular_file(path: Path | str) -> IO[bytes]:
    """The regular file ``path`` opened for reading (buffered), without ever blocking: a FIFO
    planted where a manifest or a cache should be would make every command that lists snapshots
    wait forever. ``IsADirectoryError`` for a folder, ``OSError`` (EAGAIN) for anything else that
    is not a regular file, the open's own errors otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EAGAIN, "not a regular file", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def json_bytes(data: Any) -> bytes:
    """``data`` as the repository writes JSON: indented, keys sorted, one final newline."""
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file, fsync, rename), mode 0600."""
    write_bytes(path, json_bytes(data))


def write_cache(path: Path, data: Any) -> None:
    """Write a cache file as JSON atomically, under a temporary name of its own (mkstemp: new,
    0600) renamed over it: caches are written without the repository lock (``snapshots list``
    and ``stats`` beside a verify or a backup), so two writers never share a temporary file,
    and nothing planted at a fixed name (a FIFO, a symlink) is waited on or written through."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(json_bytes(data))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


class LocalBackend:
    """A folder on the control machine: folders 0700, files 0600 (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def ensure(self, *folders: str) -> None:
        for folder in (self.root, *(self.root / name for name in folders)):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(folder, 0o700)

    def put(self, key: str, data: bytes | IO[bytes]) -> None:
        write_bytes(self.root / key, data)

    def get(self, key: str) -> IO[bytes]:
        return open_regular_file(f"{self.root}/{key}")  # (no Path built: a listing reads two a snapshot)

    def list(self, prefix: str) -> list[Entry]:
        try:
            with os.scandir(self.root / prefix) as entries:
                return [Entry(entry.name, entry.is_dir()) for entry in entries]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def stat(self, key: str) -> Entry | None:
        try:
            st = (self.root / key).stat()  # follows symlinks, like Path.is_dir
        except (FileNotFoundError, NotADirectoryError):
            return None
        is_folder = stat.S_ISDIR(st.st_mode)
        return Entry(key.rsplit("/", 1)[-1], is_folder, 0 if is_folder else st.st_size)

    def delete(self, key: str) -> None:
        path = self.root / key
        if path.is_dir():
            doomed = path.with_name(path.name + DELETING)
            os.rename(path, doomed)
            fsync_dir(path.parent)
            faults.point("delete:renamed-aside")  # a test hook: a kill between the rename and the removal
            shutil.rmtree(doomed)
        else:
            path.unlink(missing_ok=True)

    def stage(self, key: str) -> Path:
        staged = self.root / key
        staged.mkdir(mode=0o700)
        return staged

    def commit(self, staged: str, final: str, name: str, data: bytes) -> Path:
        folder = self.root / staged
        write_bytes(folder / name, data)
        syncfs(folder)
        published = self.root / final
        os.rename(folder, published)
        fsync_dir(published.parent)
        return published

    def discard(self, staged: str) -> None:
        shutil.rmtree(self.root / staged, ignore_errors=True)

    def folder(self, key: str) -> Path:
        return self.root / key

    @contextlib.contextmanager
    def locked(self, run_id: str, command: str) -> Iterator[dict[str, Any]]:
        with lock.hold(self.root / LOCK, run_id, command) as record:
            yield record

    def free_bytes(self) -> int:
        return shutil.disk_usage(self._existing()).free

    def capacity(self) -> int | None:
        return shutil.disk_usage(self._existing()).total

    def _existing(self) -> Path:
        """The root, or its nearest existing parent (on the same disk, before the first snapshot)."""
        target = self.root if self.root.exists() else self.root.parent
        while not target.exists():
            target = target.parent
        return target

    def links(self, key: str) -> Iterator[tuple[Hashable, int, int]]:
        try:
            top = os.lstat(self.root / key)
        except (FileNotFoundError, NotADirectoryError):
            return
        if not stat.S_ISDIR(top.st_mode):
            yield (top.st_dev, top.st_ino), top.st_nlink, top.st_blocks * 512
            return
        yield (top.st_dev, top.st_ino), 1, top.st_blocks * 512  # a folder is never hard-linked
        folders = [str(self.root / key)]
        while folders:
            with os.scandir(folders.pop()) as entries:
                for entry in entries:
                    st = entry.stat(follow_symlinks=False)
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
                        yield (st.st_dev, st.st_ino), 1, st.st_blocks * 512
                    else:
                        yield (st.st_dev, st.st_ino), st.st_nlink, st.st_blocks * 512
