"""The Host protocol: the only way aura-ops touches a machine.

Everything a component, an action or the deploy code does to a machine (start a program, read or
write a file, walk a tree, reach a TCP service) goes through a ``Host``. ``LocalHost`` is this
machine; an SSH host implements the same protocol, and ``FakeHost`` keeps files in memory and
records argv for fast unit tests. The repository and the journal live on the control machine and
are not reached through a host.

Paths are strings (POSIX paths on the host). Commands are values (``Command``: argv plus env,
never a shell string). A host turns its library's failures into ``AuraError`` subclasses where
they arise: a failed command is ``CommandFailed``, a missing program ``ToolMissing``, a host that
does not answer ``UnreachableError``; file operations raise ``OSError`` subclasses
(``FileNotFoundError``, ``FileExistsError``, ...) exactly as the local system calls do, so that
callers handle one set of conditions whatever the host.
"""

from __future__ import annotations

import fnmatch
import shlex
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import IO, NamedTuple, Protocol, runtime_checkable

from aura_ops.secrets import mask

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL

# ``Host.walk_folders``: the most entries one part of a folder holds. A walked entry costs about
# 2 KB while its part is snapshotted (its status, its previous index line, its new entry): a
# folder of 100,000 files handed over whole took 250 MB peak RSS; in parts of 2,048, 55 MB. What
# still grows with one folder is its names, listed whole to be sorted: about 65 B an entry.
FOLDER_BATCH = 2048


@dataclass(frozen=True)
class Command:
    """A program to run: argv (no shell), extra environment, working directory.

    Secrets go in ``env`` (e.g. PGPASSWORD), never in ``argv``.
    """

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None

    def display(self) -> str:
        """The command as a user would type it, with secrets masked."""
        return mask(shlex.join(self.argv))


@dataclass(frozen=True)
class Result:
    """What a finished command left: exit code, captured stdout (if any), stderr text."""

    returncode: int
    stdout: bytes
    stderr: str
    seconds: float

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")


@dataclass(frozen=True)
class FileStat:
    """What ``Host.stat`` tells about a path (an ``os.stat_result`` reduced to what aura-ops uses)."""

    mode: int  # st_mode: type and permission bits
    size: int
    uid: int
    gid: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    dev: int
    nlink: int
    atime_ns: int = 0  # release additions: a file step puts a file's access time back too

    @property
    def is_dir(self) -> bool:
        return (self.mode & 0o170000) == 0o040000

    @property
    def is_file(self) -> bool:
        return (self.mode & 0o170000) == 0o100000

    @property
    def is_symlink(self) -> bool:
        return (self.mode & 0o170000) == 0o120000


class Process(Protocol):
    """A running command whose output is streamed."""

    stdout: IO[bytes] | None

    def stderr_lines(self) -> Iterator[str]: ...
    def drain_in_background(self, on_line: Callable[[str], None] | None = None) -> None: ...
    def wait(self, check: bool = True, timeout: float | None = None) -> Result: ...
    def kill(self) -> None: ...

    # -- postgres/docker additions ---------------------------------------------------------------
    def poll(self) -> int | None:
        """The exit code once the command has ended, None while it runs (never blocks)."""
        ...

    def terminate(self, grace: float = 5.0) -> None:
        """Ask the command to stop (SIGTERM to it alone, so that a leader such as pg_restore
        can stop its own workers), then ``kill`` it if it has not ended within ``grace`` seconds.
        Nothing when it has ended already; safe to call from another thread than ``wait``'s."""
        ...


@runtime_checkable
class Host(Protocol):
    """A machine aura-ops acts on. ``name`` appears in every log line and error."""

    name: str

    # -- programs ------------------------------------------------------------------------------
    def run(
        self,
        command: Command,
        *,
        stdin: bytes | IO[bytes] | None = None,
        stdout: IO[bytes] | int | None = PIPE,
        timeout: float | None = None,
        check: bool = True,
    ) -> Result:
        """Run ``command`` to completion; ``CommandFailed`` when ``check`` and it exits non-zero."""
        ...

    def start(
        self, command: Command, *, stdout: IO[bytes] | int | None = PIPE, stdin: IO[bytes] | int | None = DEVNULL
    ) -> Process:
        """Start ``command`` with streamed output (pg_dump, pg_restore, rsync); stderr is kept as
        a masked tail for errors; a kill reaches everything it started."""
        ...

    def which(self, program: str) -> str | None: ...

    # -- reaching the host ---------------------------------------------------------------------
    def rsync_path(self, path: str) -> str:
        """How rsync addresses ``path`` on this host (the path itself locally, ``host:path`` over SSH)."""
        ...

    def tunnel(self, address: str, port: int) -> AbstractContextManager[tuple[str, int]]:
        """A local (address, port) that reaches ``address:port`` as seen from this host: the same
        pair for ``LocalHost``, a forwarded port over SSH. Open for the ``with`` block."""
        ...

    # -- files -----------------------------------------------------------------------------------
    def stat(self, path: str, *, follow_symlinks: bool = True) -> FileStat | None:
        """The path's status, ``None`` when nothing is there."""
        ...

    def exists(self, path: str) -> bool: ...
    def is_dir(self, path: str) -> bool: ...
    def is_file(self, path: str) -> bool: ...
    def access(self, path: str, mode: int) -> bool:
        """``os.access``: may this process read (R_OK), write (W_OK) or enter (X_OK) ``path``?"""
        ...

    def realpath(self, path: str) -> str: ...
    def read_bytes(self, path: str) -> bytes: ...
    def read_text(self, path: str) -> str: ...
    def write_atomic(
        self,
        path: str,
        data: bytes,
        *,
        mode: int = 0o644,
        owner: tuple[int, int] | None = None,
        times: tuple[int, int] | None = None,
    ) -> None:
        """Replace ``path`` with ``data`` all at once (temp file in the same folder, fsync, rename,
        fsync of the folder): a reader sees the old or the new content, never a mix. The new file
        gets ``owner`` (uid, gid; ``PermissionError`` where this process may not give it), then
        ``mode`` exactly (after the owner: a chown clears the setuid and setgid bits), and
        ``times`` (atime_ns, mtime_ns) when given."""
        ...

    def open_read(self, path: str) -> IO[bytes]:
        """``path`` opened for reading as a binary stream (buffered: lines or large chunks; a
        symlink is followed; a file still being written reads up to its current end, and on as it
        grows); the caller closes it. Never blocks: a folder is ``IsADirectoryError``, anything
        else that is not a regular file (a FIFO, a device) ``OSError`` with ``EAGAIN``, at once.
        ``FileNotFoundError`` when nothing is there, the system's other ``OSError`` otherwise."""
        ...

    def open_write(self, path: str, *, mode: int = 0o600, exclusive: bool = True) -> IO[bytes]:
        """A new regular file ``path`` opened for writing as a binary stream (buffered), given
        ``mode`` exactly (not reduced by the umask); ``FileExistsError`` when ``exclusive`` and
        something is there (a symlink too), else a file there is emptied and given ``mode``. The
        caller closes it; what it wrote is durable only after the caller's fsync (or ``syncfs``)."""
        ...

    def cpu_count(self) -> int:
        """How many CPUs this host has (at least 1): the default parallelism of tools run there."""
        ...

    def listdir(self, path: str) -> list[str]:
        """The names in a folder, sorted."""
        ...

    def mkdir(self, path: str, *, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None: ...
    def make_user_dirs(self, path: str) -> None:
        """``mkdir -p`` with the invoking user's umask for every folder it creates (releases,
        restored trees), not aura-ops' own 0077."""
        ...

    def rename(self, source: str, target: str) -> None:
        """Atomic rename, replacing ``target`` if it is a file (``os.replace``)."""
        ...

    def exchange(self, a: str, b: str) -> None:
        """Swap two paths in one atomic step (``renameat2(RENAME_EXCHANGE)``); ``OSError`` with
        ``EINVAL``/``ENOSYS`` where the file system cannot."""
        ...

    def remove(self, path: str, *, missing_ok: bool = False) -> None:
        """Remove a file or a symlink (never follows it)."""
        ...

    def rmdir(self, path: str) -> None: ...
    def remove_tree(self, path: str) -> None:
        """Remove a folder and everything under it; nothing when it is not there."""
        ...

    def symlink(self, target: str, path: str) -> None: ...
    def replace_symlink(self, target: str, path: str) -> None:
        """Point the symlink ``path`` at ``target`` atomically (a new link renamed over it)."""
        ...

    def readlink(self, path: str) -> str: ...
    def chmod(self, path: str, mode: int, *, follow_symlinks: bool = True) -> None: ...
    def chown(self, path: str, uid: int, gid: int, *, follow_symlinks: bool = True) -> None: ...
    def utime(self, path: str, mtime_ns: int, *, follow_symlinks: bool = True) -> None: ...
    def disk_usage(self, path: str) -> tuple[int, int]:
        """(free bytes for an unprivileged user, total bytes) of the file system holding ``path``."""
        ...

    def user_umask(self) -> int:
        """The umask of the user who started aura-ops (what it makes *for* the user gets it)."""
        ...

    # -- bulk operations (one call for many files, at full speed on LocalHost) -----------------

    def make_fifo(self, path: str) -> None: ...

    # -- release additions ---------------------------------------------------------------------
    def fsync_dir(self, path: str) -> None:
        """Make the entries of folder ``path`` durable (a rename, link or removal made in it
        survives a crash from now on)."""
        ...

    # -- postgres/docker additions ---------------------------------------------------------------
    def temp_root(self) -> str:
        """The folder for temporary files on this host (``$TMPDIR`` or ``/tmp`` there); the caller
        names its own folder in it, records it as a temporary object, then creates it."""
        ...

    def open_fifo_writer(self, path: str) -> IO[bytes] | None:
        """The named pipe ``path`` opened for writing once a reader has it open; None while no
        reader has (never blocks, so one thread can poll many pipes). Writes to the stream
        returned block as usual; on Linux its pipe buffer is enlarged to 1 MiB (fewer wake-ups
        for bulk data). ``OSError`` for anything but a missing reader."""
        ...

    # -- bulk operations for file trees --------------------------------------------------------
    # (files snapshots read a source tree through these, files restores write a target tree)
    def walk(
        self,
        root: str,
        excludes: Excludes = (),
        *,
        on_vanished: Callable[[str], None] | None = None,
        on_excluded: Callable[[str], None] | None = None,
    ) -> Iterator[tuple[str, StatResult]]:
        """Yield (relative path, lstat) for every entry below ``root``: a folder's entries in name
        order, all before anything below them (parents first); symlinks are not followed. An
        entry the ``excludes`` match is not yielded (nor what is below it) and is passed to
        ``on_excluded``. A folder or entry that vanishes while it is read is passed (as its full
        path) to ``on_vanished`` and skipped; any other failure to read a folder is ``AuraError``
        naming it."""
        ...

    def read_xattrs(self, path: str) -> dict[str, bytes]:
        """Every extended attribute (ACLs included) of ``path`` (a symlink is not followed); one
        that cannot be read is logged and left out, a path that has none gives ``{}``."""
        ...

    def set_metadata(
        self,
        path: str,
        *,
        owner: tuple[int, int] | None = None,
        mode: int | None = None,
        xattrs: Mapping[str, bytes] | None = None,
        times_ns: tuple[int, int] | None = None,
    ) -> None:
        """Set what is given, in this order: owner (never following a symlink), permission bits
        (``mode``; not for a symlink), xattrs (one that cannot be set is logged and skipped),
        then (atime, mtime) in nanoseconds (never following a symlink)."""
        ...

    def hash_file(self, path: str, algorithm: str) -> str | None:
        """The content hash of the regular file ``path`` (None when it cannot be opened as one)."""
        ...

    def link_if_unchanged(
        self, path: str, new: str, *, listed: StatResult, digest: str, xattrs: Mapping[str, bytes], algorithm: str
    ) -> bool:
        """Hard-link the file ``path`` as ``new`` when it is still the file ``listed`` (same
        inode, and nothing wrote to it while it was read), its content hashes to ``digest`` and
        its xattrs equal ``xattrs``; False, nothing left behind, otherwise."""
        ...

    def link(self, existing: str, new: str) -> None:
        """A hard link ``new`` to ``existing`` (a symlink is linked itself, never followed)."""
        ...

    def rename_noreplace(self, source: str, target: str) -> None:
        """Rename ``source`` to ``target`` only if nothing is there (``renameat2(RENAME_NOREPLACE)``):
        ``FileExistsError`` when something is; ``OSError`` with ``EINVAL``/``ENOSYS`` where the
        file system cannot."""
        ...

    def syncfs(self, path: str) -> None:
        """Flush every dirty page of the file system holding ``path`` (one call, not one a file)."""
        ...

    def is_root(self) -> bool:
        """Whether the user aura-ops acts as on this host is root (may give files to others)."""
        ...

    # -- files store additions (the files component's part of a snapshot, read and written
    # through the store host; streaming and bulk, no per-file round trip on LocalHost) ----------
    def lstat(self, path: str) -> StatResult:
        """The status of ``path`` itself (a symlink is not followed), with the raw ``st_*``
        fields (``LocalHost``: ``os.lstat`` itself); ``OSError`` (``FileNotFoundError``, ...) as
        the system call raises it."""
        ...

    def scandir(self, path: str) -> Sequence[DirEntry]:
        """The entries of folder ``path``, in no particular order, as ``os.scandir`` gives them:
        each with ``name``, ``path`` (``path/name``), ``is_dir(follow_symlinks=False)`` (no
        system call where the file system tells the type) and ``stat(follow_symlinks=False)``.
        ``OSError`` as the listing raises it."""
        ...

    def open_regular(self, path: str) -> IO[bytes] | None:
        """The regular file ``path`` opened for reading, unbuffered (``LocalHost``: a real file,
        whose ``fileno`` is a descriptor on this machine), never following a symlink and never
        blocking on a FIFO: ``OSError`` as the open raises it (``FileNotFoundError``; ``ELOOP``
        for a symlink), None when what is there opened but is no regular file (a folder, a
        FIFO). The caller closes it."""
        ...

    # -- files restores (bulk: one call a folder, no per-file round trip) ------------------------
    def put_files(self, source: str, target: str, files: Sequence[PutFile], algorithm: str) -> list[PutResult]:
        """Copy each regular file ``source/NAME`` (``source``: a folder on the control machine)
        into the new file ``target/NAME`` of this host (0600 until its metadata is given; it
        must not exist), hashing it as it is written, then give it its metadata on the open
        file in ``set_metadata``'s order: owner (when given), permission bits, xattrs (one that
        cannot be set is logged and skipped), times; the writeback of a file of a chunk or more
        (``checksum.CHUNK``) is started at once (a later ``syncfs`` waits less). Neither folder is reached through a
        symlink in its place, a source that is a symlink is not followed, a FIFO never waited
        on. One ``PutResult`` a file, in order: its hash and size, or why its source was not
        copied (``error``: the errno of its open or read, every file's when ``source`` cannot
        be opened; ``NOT_REGULAR``), nothing being made for it then. ``OSError`` when
        ``target`` cannot be opened or a new file cannot be made or written (``ENOSPC``,
        ``EEXIST``, ...)."""
        ...

    # -- incremental files snapshots (bulk: one call a folder, no per-file round trip) ----------
    def walk_folders(
        self,
        root: str,
        excludes: Excludes = (),
        *,
        on_vanished: Callable[[str], None] | None = None,
        on_excluded: Callable[[str], None] | None = None,
        batch: int = FOLDER_BATCH,
    ) -> Iterator[tuple[str, Sequence[tuple[str, StatResult]]]]:
        """``walk`` a folder at a time: yield (relative folder, its entries) for every folder
        reached (the root as ``""``), each entry (name, lstat), in name order (names compared as
        str), in the order ``walk`` lists them (a folder's entries before anything below them;
        its subfolders then, in name order, depth first). A folder of more than ``batch`` names
        is yielded in consecutive parts of at most ``batch`` entries (the same relative folder,
        names ascending across its parts; an empty folder is one empty part): memory stays
        bounded by ``batch``, not the folder's size. Every entry of a part is looked at (once
        the folder is listed whole) before the part is yielded; an entry that is a folder is
        descended into after the folder's last part. Excludes, ``on_excluded``, ``on_vanished``
        and errors as ``walk`` (a folder replaced by a symlink is vanished, never followed; the
        root may be a symlink)."""
        ...

    def link_names(self, existing: str, new: str, names: Sequence[str]) -> list[tuple[str, int]]:
        """Hard-link ``existing/NAME`` as ``new/NAME`` for each name (a symlink is linked itself;
        neither folder is reached through a symlink in its place); return the names that could
        not be linked, each with its errno (every name, when ``existing`` cannot be opened).
        ``OSError`` when the folder ``new`` cannot be opened."""

    def fetch_files(
        self,
        folder: str,
        local_folder: str,
        files: Sequence[tuple[str, StatResult]],
        algorithm: str,
        *,
        owners: bool,
        folder_id: tuple[int, int] | None = None,
        root: str | None = None,
    ) -> list[CopiedFile | int]:
        """Copy each named regular file of ``folder`` on this host (each with its status as
        listed) into a new file of the same name in ``local_folder`` (on the control machine;
        must not exist), hashing it as it is read, and give the copy the file's metadata: owner
        (when ``owners``), permission bits, xattrs, atime and mtime, taken from the status listed
        (from the file opened when it is another one now, or changed since: its ctime moved, a
        chmod 600 before a secret is written in must not leave the copy 0644). Per name, in order: its
        ``CopiedFile``, ``errno.ENOENT`` when it (or ``folder``) is gone, ``errno.EINVAL`` when
        it is no longer a regular file. ``folder`` is opened once, each name relative to it,
        never through a symlink in its place. ``folder_id``: the (st_dev, st_ino) the folder was
        listed with in its parent; a folder opened that is another one (a folder on its way
        replaced by a symlink since: only the last name is opened without following) is taken as
        gone, unless ``root`` is given: the source root ``folder`` is below (or is), opened as
        ``walk_folders`` opens it (a symlink there followed); then ``folder`` is opened again a
        name at a time below it, none followed (a folder replaced by another one since is read,
        as the walk listed it; one reached only through a symlink is gone).
        ``OSError`` when ``local_folder`` cannot be opened or a copy cannot be written."""
        ...

    # -- postgres restore additions (issue 12: no polling of named pipes) -----------------------
    def open_fifo_writer_waiting(self, path: str) -> IO[bytes]:
        """The named pipe ``path`` opened for writing, waiting (in the calling thread, without
        polling) until a reader opens it; ``open_fifo_reader`` on the same path ends the wait
        where no real reader will come. Its pipe buffer as ``open_fifo_writer`` makes it.
        ``OSError`` as the open raises it (a missing path, a folder)."""
        ...

    def open_fifo_reader(self, path: str) -> IO[bytes]:
        """The named pipe ``path`` opened for reading without waiting for a writer (its reads
        never block): a writer waiting in ``open_fifo_writer_waiting`` goes on, and while this
        stays open a later one does not wait. ``OSError`` as the open raises it."""
        ...

    def fast_temp_root(self, need: int) -> str:
        """A folder for short-lived files read soon after they are written (a restore's staging
        folder): a memory file system (a writable tmpfs at ``/dev/shm``) when ``$TMPDIR`` does not
        choose another place and it has ``need`` bytes free four times over, else ``temp_root``.
        The caller names its own folder in it, records it as a temporary object, then creates it."""
        ...


# -- bulk operations for file trees: values and pure helpers -------------------------------------


class StatResult(Protocol):
    """What a tree walk tells about an entry: the fields of an ``os.stat_result`` aura-ops uses
    (``LocalHost`` yields ``os.stat_result`` itself: no conversion on the hot path)."""

    @property
    def st_mode(self) -> int: ...
    @property
    def st_size(self) -> int: ...
    @property
    def st_uid(self) -> int: ...
    @property
    def st_gid(self) -> int: ...
    @property
    def st_atime_ns(self) -> int: ...
    @property
    def st_mtime_ns(self) -> int: ...
    @property
    def st_ctime_ns(self) -> int: ...
    @property
    def st_ino(self) -> int: ...
    @property
    def st_dev(self) -> int: ...
    @property
    def st_nlink(self) -> int: ...


class CopiedFile(NamedTuple):
    """A file ``Host.fetch_files`` copied: its content hash and size, its status as it was
    opened (it may have been replaced since it was listed) and its xattrs."""

    digest: str
    size: int
    stat: StatResult
    xattrs: dict[str, bytes]


NOT_REGULAR = -1  # ``PutResult.error``: the source opened but is no regular file (a folder, a FIFO)


class PutFile(NamedTuple):
    """A file for ``Host.put_files``: its name (in both folders) and the metadata it is given."""

    name: str
    mode: int  # permission bits
    owner: tuple[int, int] | None  # (uid, gid); None: the new file's, as made
    xattrs: Mapping[str, bytes]
    times_ns: tuple[int, int]  # (atime, mtime)


class PutResult(NamedTuple):
    """What ``Host.put_files`` made of one file: its content hash and size as written, or why
    it did not copy it (``error``: 0 when copied, else an errno or ``NOT_REGULAR``)."""

    digest: str
    size: int
    error: int = 0


# An rsync-like exclude pattern compiled: (glob, anchored at the root, folders only).
Exclude = tuple[str, bool, bool]
Excludes = Sequence[Exclude]


def compile_excludes(patterns: Iterable[str]) -> list[Exclude]:
    """(glob, anchored-to-root, directories-only) for each rsync-like pattern."""
    compiled = []
    for pattern in patterns:
        directories_only = pattern.endswith("/")
        body = pattern.rstrip("/")
        anchored = "/" in body
        compiled.append((body.lstrip("/"), anchored, directories_only))
    return compiled


def is_excluded(relative: str, is_dir: bool, excludes: Excludes) -> bool:
    name = relative.rsplit("/", 1)[-1]
    for glob, anchored, directories_only in excludes:
        if directories_only and not is_dir:
            continue
        if fnmatch.fnmatchcase(relative if anchored else name, glob):
            return True
    return False


def shown(path: str) -> str:
    """A path as text anyone can print: bytes that are not UTF-8 appear as \\xNN escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class DirEntry(Protocol):
    """One entry of ``Host.scandir`` (``LocalHost`` gives ``os.DirEntry`` itself)."""

    @property
    def name(self) -> str: ...
    @property
    def path(self) -> str: ...
    def is_dir(self, *, follow_symlinks: bool = True) -> bool: ...
    def stat(self, *, follow_symlinks: bool = True) -> StatResult: ...
