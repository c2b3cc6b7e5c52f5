"""FakeHost: a host whose files live in memory and whose programs are scripted, for unit tests.

Files: one node model (``_Node``: a folder, a regular file, a symlink or a FIFO, with mode,
owner, mtime/ctime, an inode number and a link count) under a root folder. Paths resolve as the
kernel resolves them (symlinks followed in the middle of a path, ``..`` taken physically, 40 links
at most), and every operation raises the ``OSError`` subclass, with its errno, that the system
call ``LocalHost`` makes would raise. The contract suite (``tests/unit/test_hosts.py``) runs the
same checks against both hosts so that the two cannot drift. Permissions are enforced for a host
built with a non-zero ``uid`` (search on folders, write on the folder of a created or removed
entry, read on a read file or a listed folder, ownership for chmod/chown/utime); the sticky bit
and ACLs are not modelled. Extended attributes are, as the ``user.`` namespace behaves: on files
and folders (a symlink takes none), set by root or by whoever may write the node. Space: file contents
count against ``capacity`` bytes; a write that would pass it raises ``OSError(ENOSPC)`` and
changes nothing.

Programs: ``on(prefix, reply)`` scripts the answer to every argv that starts with ``prefix`` (the
longest registered prefix wins): a canned ``Result`` or a handler called with the ``Call``. Every
command ``run``/``start`` receive is recorded (``commands``, ``argvs``); a program never
registered raises ``ToolMissing`` as a missing binary does, a registered program called with
arguments no prefix matches raises ``UnexpectedCommand`` (an ``AssertionError``: the test is
wrong, not the code under test), and a non-zero exit with ``check`` raises ``CommandFailed``.

Adding a protocol method: resolve paths with ``_locate`` (follows a final symlink or not) or
``_entry`` (the directory entry itself, for operations that create, remove or rename names),
check permissions with ``_require``, and change the tree only through ``_attach``/``_detach``
(names) and ``_write`` (content) so that link counts, folder times and the space used stay right.
"""

from __future__ import annotations

import contextlib
import errno
import io
import itertools
import os
import posixpath
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, NamedTuple, cast

from aura_ops import checksum, logs
from aura_ops.errors import AuraError, CommandFailed, ToolMissing
from aura_ops.hosts.base import (
    DEVNULL,
    FOLDER_BATCH,
    NOT_REGULAR,
    PIPE,
    Command,
    CopiedFile,
    Excludes,
    FileStat,
    Host,
    PutFile,
    PutResult,
    Result,
    StatResult,
    is_excluded,
    shown,
)
from aura_ops.hosts.local import STDERR_TAIL_LINES, write_all
from aura_ops.secrets import mask

R_OK, W_OK, X_OK = os.R_OK, os.W_OK, os.X_OK
_MAX_SYMLINKS = 40  # the kernel's MAXSYMLINKS: more in one resolution is ELOOP
_FOLDER_SIZE = 4096  # what ext4 reports for a small folder
_FAKE_PID = 4242  # stands for the process id in the names of temporary files
_KILLED = -9  # a process killed with SIGKILL, as subprocess reports it


def _error(code: int, path: str | None = None, path2: str | None = None) -> OSError:
    """The ``OSError`` subclass the system raises for ``code`` (``OSError`` picks it from errno)."""
    if path is None:
        return OSError(code, os.strerror(code))
    if path2 is None:
        return OSError(code, os.strerror(code), path)
    return OSError(code, os.strerror(code), path, None, path2)


# -- the node model ----------------------------------------------------------------------------


@dataclass(eq=False)
class _Node:
    """One inode: ``mode`` holds the type and permission bits as ``st_mode`` does. A folder has
    ``entries``, a regular file ``data``, a symlink ``target``; a FIFO holds nothing."""

    ino: int
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    ctime_ns: int
    nlink: int = 0
    atime_ns: int = 0
    data: bytes = b""
    target: str = ""
    entries: dict[str, _Node] = field(default_factory=dict)
    xattrs: dict[str, bytes] = field(default_factory=dict)

    @property
    def kind(self) -> int:
        return stat.S_IFMT(self.mode)

    @property
    def is_dir(self) -> bool:
        return self.kind == stat.S_IFDIR

    @property
    def is_file(self) -> bool:
        return self.kind == stat.S_IFREG

    @property
    def is_symlink(self) -> bool:
        return self.kind == stat.S_IFLNK

    @property
    def size(self) -> int:
        if self.is_file:
            return len(self.data)
        if self.is_symlink:
            return len(os.fsencode(self.target))
        return _FOLDER_SIZE if self.is_dir else 0


@dataclass
class _Where:
    """Where a path leads: the folders from the root down to the one holding ``name`` (its
    parent), and the node there (``None`` when the name is free). ``name`` is empty when the
    path names a folder that is no entry of a parent one (the root, or a path ending in ``..``)."""

    path: str
    folders: list[_Node]
    name: str
    node: _Node | None

    @property
    def parent(self) -> _Node:
        return self.folders[-1]


class Entry(NamedTuple):
    """One path in ``FakeHost.tree``: kind (dir, file, symlink, fifo), permission bits, and the
    content of a file (bytes) or the target of a symlink (str). Compares equal to a plain tuple."""

    kind: str
    mode: int
    content: bytes | str | None = None


class FakeStat(NamedTuple):
    """What ``FakeHost.walk`` and ``fetch_files`` tell about an entry: the ``StatResult``
    fields, as ``os.lstat`` gives them for the same node."""

    st_mode: int
    st_ino: int
    st_dev: int
    st_nlink: int
    st_uid: int
    st_gid: int
    st_size: int
    st_atime_ns: int
    st_mtime_ns: int
    st_ctime_ns: int


_KIND_NAMES = {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "symlink", stat.S_IFIFO: "fifo"}


# -- programs ----------------------------------------------------------------------------------


class UnexpectedCommand(AssertionError):
    """A registered program was called with arguments the test scripted no reply for."""


@dataclass(frozen=True)
class Call:
    """One command as a reply handler sees it: the host (to read or change its files), the
    command, what it was given on stdin, and its timeout."""

    host: FakeHost
    command: Command
    stdin: bytes
    timeout: float | None

    @property
    def argv(self) -> tuple[str, ...]:
        return self.command.argv


Handler = Callable[[Call], Result]
Reply = Result | Handler


def result(stdout: bytes | str = b"", *, returncode: int = 0, stderr: str = "") -> Result:
    """A canned ``Result`` for ``FakeHost.on`` (text stdout is encoded as UTF-8)."""
    data = stdout.encode() if isinstance(stdout, str) else stdout
    return Result(returncode, data, stderr, 0.0)


def _tail(stderr: str) -> str:
    """The masked last lines of stderr, as ``LocalHost`` keeps them."""
    return "\n".join(mask(line) for line in stderr.splitlines()[-STDERR_TAIL_LINES:])


class FakeProcess:
    """A started fake command. Its reply is computed at ``start``; it counts as running until
    ``wait``, so a ``kill`` before that makes it end by SIGKILL (-9), as a real one would."""

    def __init__(self, host: FakeHost, command: Command, reply: Result, stdout: IO[bytes] | None) -> None:
        self.host = host
        self.command = command
        self.reply = reply
        self.stdout = stdout
        self.killed = False
        self.waited = False
        self._stderr_left = reply.stderr.splitlines()

    def stderr_lines(self) -> Iterator[str]:
        while self._stderr_left:
            yield mask(self._stderr_left.pop(0))

    def drain_in_background(self, on_line: Callable[[str], None] | None = None) -> None:
        for line in self.stderr_lines():
            if on_line is not None:
                on_line(line)

    def wait(self, check: bool = True, timeout: float | None = None) -> Result:
        self.waited = True
        returncode = _KILLED if self.killed else self.reply.returncode
        done = Result(returncode, b"", _tail(self.reply.stderr), 0.0)
        if check and returncode != 0:
            raise CommandFailed(self.host.name, self.command.display(), returncode, done.stderr)
        return done

    def kill(self) -> None:
        if not self.waited:
            self.killed = True

    def poll(self) -> int | None:
        """None while running (until ``wait`` or a kill), then its exit code."""
        if self.killed:
            return _KILLED
        return self.reply.returncode if self.waited else None

    def terminate(self, grace: float = 5.0) -> None:
        """A fake program ends at once on SIGTERM (it has nothing to flush): as a kill."""
        self.kill()


class _NodeWriter(io.RawIOBase):
    """Writes into a fake file's data from its start, as a write-only open without O_TRUNC."""

    def __init__(self, host: FakeHost, node: _Node) -> None:
        self._host, self._node, self._at = host, node, 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        old = self._node.data
        self._host._write(self._node, old[: self._at] + chunk + old[self._at + len(chunk) :])
        self._at += len(chunk)
        return len(chunk)


class _NodeReader(io.RawIOBase):
    """Reads a fake file's data from its start, as the data is at each read."""

    def __init__(self, node: _Node) -> None:
        self._node, self._at = node, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._node.data[self._at : self._at + len(buffer)]
        buffer[: len(chunk)] = chunk
        self._at += len(chunk)
        return len(chunk)


# -- the host ----------------------------------------------------------------------------------


class FakeHost:
    """An in-memory host for unit tests (see the module's docstring).

    ``uid``/``gid``/``groups`` are the identity aura-ops runs as (root by default: no permission
    is checked), ``umask`` the process's, ``user_umask`` the invoking user's; ``capacity`` is the
    size of the file system in bytes; ``clock`` gives the time in ns for new mtimes and ctimes;
    ``exchange_supported=False`` makes ``exchange`` fail as on a file system without it, and
    ``noreplace_supported=False`` does the same for ``rename_noreplace``.
    """

    def __init__(
        self,
        name: str = "fake",
        *,
        uid: int = 0,
        gid: int = 0,
        groups: Iterable[int] = (),
        umask: int = 0o022,
        user_umask: int = 0o022,
        capacity: int = 1 << 40,
        clock: Callable[[], int] = time.time_ns,
        exchange_supported: bool = True,
        noreplace_supported: bool = True,
        dev: int = 1,
    ) -> None:
        self.name = name
        self.uid = uid
        self.gid = gid
        self.groups = frozenset({gid, *groups})
        self.umask = umask
        self._user_umask = user_umask
        self.capacity = capacity
        self.clock = clock
        self.exchange_supported = exchange_supported
        self.noreplace_supported = noreplace_supported
        self.dev = dev
        self.cwd = "/"
        self.used = 0  # bytes of file content held
        self._inodes = itertools.count(2)  # 2 is the root's, as on ext4
        self._temp_names = itertools.count(1)
        self._privileged = False
        now = clock()
        self.root = _Node(next(self._inodes), stat.S_IFDIR | 0o755, 0, 0, now, now, nlink=2)
        self._programs: dict[str, str] = {}  # name (argv[0]) -> the path ``which`` answers
        self._replies: dict[tuple[str, ...], Reply] = {}
        self.commands: list[Command] = []
        self.tunnels: list[tuple[str, int]] = []

    # == programs ===================================================================================

    def on(self, prefix: str | Sequence[str], reply: Reply | None = None, *, path: str | None = None) -> None:
        """Script the reply to every command whose argv starts with ``prefix`` (a program name
        alone, or a list); ``reply`` is a ``Result`` or a handler (default: exit 0, no output).
        ``path`` is what ``which`` answers for the program (default ``/usr/bin/NAME``)."""
        key = (prefix,) if isinstance(prefix, str) else tuple(prefix)
        program = key[0]
        if path is not None or program not in self._programs:
            self._programs[program] = path or (program if "/" in program else f"/usr/bin/{program}")
        self._replies[key] = reply if reply is not None else result()

    @property
    def argvs(self) -> list[list[str]]:
        """The argv of every command run or started, in order."""
        return [list(command.argv) for command in self.commands]

    def _reply(self, command: Command, stdin: bytes, timeout: float | None) -> Result:
        self.commands.append(command)
        logs.get().info("command.started", host=self.name, command=command.display())
        argv = tuple(command.argv)
        program = self._program_of(argv[0])
        if program is None:
            raise ToolMissing(f"{argv[0]}: not found on {self.name}")
        matches = [key for key in self._replies if key[0] == program and argv[1 : len(key)] == key[1:]]
        if not matches:
            raise UnexpectedCommand(f"{self.name}: no scripted reply for `{command.display()}`")
        reply = self._replies[max(matches, key=len)]
        return reply if isinstance(reply, Result) else reply(Call(self, command, stdin, timeout))

    def _program_of(self, argv0: str) -> str | None:
        if argv0 in self._programs:
            return argv0
        return next((name for name, path in self._programs.items() if path == argv0), None)

    def run(
        self,
        command: Command,
        *,
        stdin: bytes | IO[bytes] | None = None,
        stdout: IO[bytes] | int | None = PIPE,
        timeout: float | None = None,
        check: bool = True,
    ) -> Result:
        """Answer ``command`` from the script; ``CommandFailed`` when ``check`` and it exits non-zero."""
        given = stdin if isinstance(stdin, bytes) else (stdin.read() if stdin is not None else b"")
        reply = self._reply(command, given, timeout)
        captured = reply.stdout if stdout == PIPE else _deliver(reply.stdout, stdout)
        done = Result(reply.returncode, captured, _tail(reply.stderr), 0.0)
        if check and done.returncode != 0:
            raise CommandFailed(self.name, command.display(), done.returncode, done.stderr)
        return done

    def start(
        self, command: Command, *, stdout: IO[bytes] | int | None = PIPE, stdin: IO[bytes] | int | None = DEVNULL
    ) -> FakeProcess:
        """Answer ``command`` from the script at once; its stdout is readable from the process
        (``PIPE``) or written to the given file."""
        given = b"" if stdin is None or isinstance(stdin, int) else stdin.read()
        reply = self._reply(command, given, None)
        pipe: IO[bytes] | None = None
        if stdout == PIPE:
            pipe = io.BytesIO(reply.stdout)
        else:
            _deliver(reply.stdout, stdout)
        return FakeProcess(self, command, reply, pipe)

    def which(self, program: str) -> str | None:
        if "/" in program:
            return program if self._program_of(program) is not None else None
        return self._programs.get(program)

    # == reaching the host ==========================================================================

    def rsync_path(self, path: str) -> str:
        return path

    @contextlib.contextmanager
    def tunnel(self, address: str, port: int) -> Iterator[tuple[str, int]]:
        self.tunnels.append((address, port))
        yield address, port

    # == path resolution ============================================================================

    def _absolute(self, path: str) -> str:
        return path if path.startswith("/") else posixpath.join(self.cwd, path)

    def _locate(self, path: str, *, follow: bool = True) -> _Where:
        """Resolve ``path`` as the kernel does; ``follow`` resolves a final symlink too (always
        done for a path ending in ``/``). Raises ENOENT/ENOTDIR/ELOOP/EACCES on the way."""
        path = os.fspath(path)
        if not path:
            raise _error(errno.ENOENT, path)
        full = self._absolute(path)
        as_folder = full.endswith("/") or full.endswith("/.")
        todo = [part for part in full.split("/") if part not in ("", ".")]
        todo.reverse()  # popped from the end
        folders = [self.root]
        node: _Node | None = self.root
        name, links = "", 0
        while todo:
            part = todo.pop()
            if part == "..":
                if len(folders) > 1:
                    folders.pop()
                name, node = "", folders[-1]
                continue
            self._require(folders[-1], X_OK, path)
            name, node = part, folders[-1].entries.get(part)
            if node is None:
                if todo:
                    raise _error(errno.ENOENT, path)
                break
            if node.is_symlink and (todo or follow or as_folder):
                links += 1
                if links > _MAX_SYMLINKS:
                    raise _error(errno.ELOOP, path)
                if node.target.startswith("/"):
                    folders = [self.root]
                todo.extend(reversed([p for p in node.target.split("/") if p not in ("", ".")]))
                name, node = "", folders[-1]
                continue
            if node.is_dir:
                if todo:
                    folders.append(node)
            elif todo:
                raise _error(errno.ENOTDIR, path)
        if name == "" and node is not None and node is folders[-1] and len(folders) > 1:
            folders = folders[:-1]  # the path names a folder itself (``..``, or a link to one)
        if as_folder and node is not None and not node.is_dir:
            raise _error(errno.ENOTDIR, path)
        return _Where(path, folders, name, node)

    def _entry(self, path: str) -> _Where:
        """The directory entry ``path`` names (a final symlink is not followed): what creating,
        removing and renaming act on. A trailing ``/`` requires it to be a folder."""
        path = os.fspath(path)
        bare = path.rstrip("/")
        if bare == "" and path:
            bare = "/"
        where = self._locate(bare, follow=False)
        where.path = path
        if bare != path and where.node is not None and not where.node.is_dir:
            raise _error(errno.ENOTDIR, path)
        return where

    def _existing(self, path: str, *, follow: bool = True) -> _Node:
        node = self._locate(path, follow=follow).node
        if node is None:
            raise _error(errno.ENOENT, path)
        return node

    # == permissions ================================================================================

    def _permits(self, node: _Node, want: int) -> bool:
        """``access(2)`` for this host's identity: root may read and write anything and execute
        what has an x bit (a folder is always searchable)."""
        if self.uid == 0 or self._privileged:
            return not (want & X_OK) or node.is_dir or bool(node.mode & 0o111)
        if node.uid == self.uid:
            bits = (node.mode >> 6) & 7
        elif node.gid in self.groups:
            bits = (node.mode >> 3) & 7
        else:
            bits = node.mode & 7
        return bits & want == want

    def _require(self, node: _Node, want: int, path: str) -> None:
        if not self._permits(node, want):
            raise _error(errno.EACCES, path)

    def _require_owner(self, node: _Node, path: str) -> None:
        if not (self.uid == 0 or self._privileged or node.uid == self.uid):
            raise _error(errno.EPERM, path)

    # == changing the tree ==========================================================================

    def _new(self, kind: int, perm: int, parent: _Node) -> _Node:
        """A fresh inode owned by this host's identity; in a setgid folder it takes the folder's
        group (and a new folder the setgid bit), as Linux does."""
        now = self.clock()
        gid = self.gid
        if parent.mode & stat.S_ISGID:
            gid = parent.gid
            if kind == stat.S_IFDIR:
                perm |= stat.S_ISGID
        return _Node(next(self._inodes), kind | perm, self.uid, gid, now, now)

    def _touch(self, *nodes: _Node) -> None:
        """Content changed (a folder's entries, a file's data): mtime and ctime are now."""
        now = self.clock()
        for node in nodes:
            node.mtime_ns = node.ctime_ns = now

    def _attach(self, parent: _Node, name: str, node: _Node) -> None:
        """Add the entry ``name`` -> ``node`` to ``parent`` (the name must be free)."""
        parent.entries[name] = node
        node.nlink += 2 if node.is_dir else 1
        if node.is_dir:
            parent.nlink += 1
        elif node.is_file and node.nlink == 1:
            self.used += len(node.data)
        node.ctime_ns = self.clock()
        self._touch(parent)

    def _detach(self, parent: _Node, name: str) -> _Node:
        """Remove the entry ``name`` from ``parent``; a file's content is freed with its last link."""
        node = parent.entries.pop(name)
        if node.is_dir:
            node.nlink = 0
            parent.nlink -= 1
        else:
            node.nlink -= 1
            if node.is_file and node.nlink == 0:
                self.used -= len(node.data)
        node.ctime_ns = self.clock()
        self._touch(parent)
        return node

    def _reserve(self, size: int) -> None:
        if self.used + size > self.capacity:
            raise _error(errno.ENOSPC)

    def _creatable(self, path: str) -> _Where:
        """The free entry ``path`` names, in a folder this host may write: EEXIST when taken."""
        where = self._entry(path)
        if where.node is not None or not where.name:
            raise _error(errno.EEXIST, path)
        self._require(where.parent, W_OK | X_OK, path)
        return where

    # == files: reading =============================================================================

    def stat(self, path: str, *, follow_symlinks: bool = True) -> FileStat | None:
        try:
            node = self._locate(path, follow=follow_symlinks).node
        except (FileNotFoundError, NotADirectoryError):
            return None
        return None if node is None else self._file_stat(node)

    def _file_stat(self, node: _Node) -> FileStat:
        return FileStat(
            node.mode,
            node.size,
            node.uid,
            node.gid,
            node.mtime_ns,
            node.ctime_ns,
            node.ino,
            self.dev,
            node.nlink,
            node.atime_ns or node.mtime_ns,
        )

    def _lookup_quietly(self, path: str, *, follow: bool) -> _Node | None:
        """The node at ``path`` or ``None`` on any error (``os.path.exists`` and friends)."""
        try:
            return self._locate(path, follow=follow).node
        except (OSError, ValueError):
            return None

    def exists(self, path: str) -> bool:
        return self._lookup_quietly(path, follow=False) is not None

    def _path_exists(self, path: str) -> bool:
        return self._lookup_quietly(path, follow=True) is not None

    def _is_link(self, path: str) -> bool:
        node = self._lookup_quietly(path, follow=False)
        return node is not None and node.is_symlink

    def is_dir(self, path: str) -> bool:
        node = self._lookup_quietly(path, follow=True)
        return node is not None and node.is_dir

    def is_file(self, path: str) -> bool:
        node = self._lookup_quietly(path, follow=True)
        return node is not None and node.is_file

    def access(self, path: str, mode: int) -> bool:
        node = self._lookup_quietly(path, follow=True)
        return node is not None and (mode == os.F_OK or self._permits(node, mode & (R_OK | W_OK | X_OK)))

    def realpath(self, path: str) -> str:
        """``os.path.realpath`` (not strict): symlinks resolved where they exist, the rest kept."""
        resolved, _ = self._join_realpath("", os.fspath(path), {})
        return posixpath.normpath(self._absolute(resolved))

    def _join_realpath(self, path: str, rest: str, seen: dict[str, str | None]) -> tuple[str, bool]:
        # posixpath._joinrealpath, on this host's files
        if rest.startswith("/"):
            rest, path = rest[1:], "/"
        while rest:
            name, _, rest = rest.partition("/")
            if not name or name == ".":
                continue
            if name == "..":
                if path:
                    path, name = posixpath.split(path)
                    if name == "..":
                        path = posixpath.join(path, "..", "..")
                else:
                    path = ".."
                continue
            newpath = posixpath.join(path, name)
            if not self._is_link(newpath):
                path = newpath
                continue
            if newpath in seen:
                cached = seen[newpath]
                if cached is not None:
                    path = cached
                    continue
                return posixpath.join(newpath, rest), False  # a loop
            seen[newpath] = None
            path, ok = self._join_realpath(path, self.readlink(newpath), seen)
            if not ok:
                return posixpath.join(path, rest), False
            seen[newpath] = path
        return path, True

    def read_bytes(self, path: str) -> bytes:
        node = self._existing(path)
        if node.is_dir:
            raise _error(errno.EISDIR, path)
        self._require(node, R_OK, path)
        if node.kind == stat.S_IFIFO:  # a real read would wait for a writer forever
            raise _error(errno.EAGAIN, path)
        return node.data

    def read_text(self, path: str) -> str:
        return self.read_bytes(path).decode("utf-8")

    def listdir(self, path: str) -> list[str]:
        node = self._existing(path)
        if not node.is_dir:
            raise _error(errno.ENOTDIR, path)
        self._require(node, R_OK, path)
        return sorted(node.entries)

    def disk_usage(self, path: str) -> tuple[int, int]:
        self._existing(path)
        return max(self.capacity - self.used, 0), self.capacity

    def user_umask(self) -> int:
        return self._user_umask

    # == files: creating ============================================================================

    def _create(self, path: str, kind: int, perm: int) -> _Node:
        where = self._creatable(path)
        node = self._new(kind, perm, where.parent)
        self._attach(where.parent, where.name, node)
        return node

    def _mkdir(self, path: str, mode: int) -> None:
        self._create(path, stat.S_IFDIR, mode & 0o1777 & ~self.umask)

    def mkdir(self, path: str, *, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None:
        if parents:
            self._makedirs(path, mode, exist_ok)
            return
        try:
            self._mkdir(path, mode)
        except FileExistsError:
            if not (exist_ok and self.is_dir(path)):
                raise

    def _makedirs(self, path: str, mode: int = 0o777, exist_ok: bool = False) -> None:
        # os.makedirs, step for step: intermediate folders get the default mode
        head, tail = posixpath.split(path)
        if not tail:
            head, tail = posixpath.split(head)
        if head and tail and not self._path_exists(head):
            with contextlib.suppress(FileExistsError):
                self._makedirs(head, exist_ok=exist_ok)
            if tail == ".":
                return
        try:
            self._mkdir(path, mode)
        except OSError:
            if not exist_ok or not self.is_dir(path):
                raise

    def make_user_dirs(self, path: str) -> None:
        missing = []
        current = posixpath.normpath(self._absolute(path))
        while not self.is_dir(current):
            missing.append(current)
            parent = posixpath.dirname(current)
            if parent == current:
                break
            current = parent
        for folder in reversed(missing):
            try:
                self._mkdir(folder, 0o777)
            except FileExistsError:
                if not self.is_dir(folder):
                    raise
                continue
            self.chmod(folder, 0o777 & ~self._user_umask)

    def write_atomic(
        self,
        path: str,
        data: bytes,
        *,
        mode: int = 0o644,
        owner: tuple[int, int] | None = None,
        times: tuple[int, int] | None = None,
    ) -> None:
        """As ``LocalHost``: a temporary file in the same folder, renamed over ``path``; on any
        failure (ENOSPC, a folder at ``path``) the temporary is gone and ``path`` untouched."""
        folder, base = posixpath.split(path)
        temp = posixpath.join(folder or ".", f".{base}.aura-{_FAKE_PID}.tmp")
        where = self._entry(temp)
        if where.node is not None:
            self.remove(temp)  # O_TRUNC of a leftover
        node = self._create(temp, stat.S_IFREG, 0o600)
        try:
            # as LocalHost: the data, then the owner, then the mode (a write or a chown clears
            # setuid/setgid, so the mode asked for is set last), then the times
            self._write(node, data)
            if owner is not None:
                self.chown(temp, *owner)
            self.chmod(temp, mode & 0o7777)
            if times is not None:
                node.atime_ns, node.mtime_ns = times
            self.rename(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                self.remove(temp)
            raise

    def open_read(self, path: str) -> IO[bytes]:
        """As ``LocalHost``: each read gives the file's content as it is then (a file being
        written reads on as it grows); the errors of ``read_bytes`` at open."""
        node = self._existing(path)
        if node.is_dir:
            raise _error(errno.EISDIR, path)
        self._require(node, R_OK, path)
        if node.kind == stat.S_IFIFO:  # a real open would wait for a writer forever
            raise _error(errno.EAGAIN, path)
        return cast(IO[bytes], _NodeReader(node))

    def open_write(self, path: str, *, mode: int = 0o600, exclusive: bool = True) -> IO[bytes]:
        """As ``LocalHost``; what is written reaches the file when the stream is flushed or
        closed (or its buffer fills), ENOSPC then when it does not fit."""
        perm = mode & 0o7777 & ~self.umask
        if exclusive:
            node = self._create(path, stat.S_IFREG, perm)
        else:
            where = self._locate(path, follow=True)  # O_CREAT follows a final symlink
            if where.node is None and where.name:
                self._require(where.parent, W_OK | X_OK, path)
                node = self._new(stat.S_IFREG, perm, where.parent)
                self._attach(where.parent, where.name, node)
            elif where.node is None or where.node.is_dir:
                raise _error(errno.EISDIR, path)
            elif not where.node.is_file:
                raise _error(errno.ENXIO, path)  # a FIFO: no reader
            else:
                node = where.node
                self._require(node, W_OK, path)
                self._write(node, b"")  # O_TRUNC
        node.mode = stat.S_IFREG | (mode & 0o7777)  # exactly ``mode``, as LocalHost's fchmod
        return cast(IO[bytes], io.BufferedWriter(_NodeWriter(self, node)))

    cpus = 2  # what cpu_count answers (set it on an instance)

    def cpu_count(self) -> int:
        return self.cpus

    def _write(self, node: _Node, data: bytes) -> None:
        """Give a file new content: ENOSPC when it does not fit; written by anyone but root it
        loses its setuid bit (and setgid if group-executable), as a write(2) makes it."""
        self._reserve(len(data) - len(node.data))
        if data and not (self.uid == 0 or self._privileged):
            node.mode &= ~_privilege_bits(node)
        self.used += len(data) - len(node.data)
        node.data = bytes(data)
        self._touch(node)

    def symlink(self, target: str, path: str) -> None:
        if not target:
            raise _error(errno.ENOENT, target, path)
        try:
            where = self._creatable(path)
        except OSError as exc:
            raise _error(exc.errno or errno.EIO, target, path) from None
        node = self._new(stat.S_IFLNK, 0o777, where.parent)
        node.target = target
        self._attach(where.parent, where.name, node)

    def replace_symlink(self, target: str, path: str) -> None:
        folder, base = posixpath.split(path)
        temp = posixpath.join(folder or ".", f".{base}.aura-{_FAKE_PID}.link")
        with contextlib.suppress(FileNotFoundError):
            self.remove(temp)
        self.symlink(target, temp)
        try:
            self.rename(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                self.remove(temp)
            raise

    def make_fifo(self, path: str) -> None:
        self._create(path, stat.S_IFIFO, 0o600 & ~self.umask)

    def temp_root(self) -> str:
        return "/tmp"  # noqa: S108 (in memory: the fake's own /tmp)

    def open_fifo_writer(self, path: str) -> IO[bytes] | None:
        """No process ever reads a fake pipe: None (no reader yet), as LocalHost answers while
        pg_restore has not opened it; ``OSError`` as the real open for a missing path or a
        non-FIFO."""
        node = self._existing(path, follow=True)
        if node.is_dir:
            raise _error(errno.EISDIR, path)
        if node.is_file:  # as open(O_WRONLY) of a plain file: written from the start, not truncated
            return cast(IO[bytes], io.BufferedWriter(_NodeWriter(self, node)))
        return None

    def _link(self, existing: str, new: str) -> None:
        try:
            source = self._entry(existing)
            target = self._entry(new)
        except OSError as exc:
            raise _error(exc.errno or errno.EIO, existing, new) from None
        if source.node is None:
            raise _error(errno.ENOENT, existing, new)
        if target.node is not None or not target.name:
            raise _error(errno.EEXIST, existing, new)
        if source.node.is_dir:
            raise _error(errno.EPERM, existing, new)
        self._require(target.parent, W_OK | X_OK, new)
        self._attach(target.parent, target.name, source.node)

    # == files: renaming and removing ===============================================================

    def rename(self, source: str, target: str) -> None:
        """``rename(2)``: replaces a file, or an empty folder by a folder; never a non-empty one."""
        try:
            src = self._entry(source)
            dst = self._entry(target)
        except OSError as exc:
            raise _error(exc.errno or errno.EIO, source, target) from None
        if src.node is None:
            raise _error(errno.ENOENT, source, target)
        if not src.name or not dst.name:
            raise _error(errno.EBUSY, source, target)
        self._require(src.parent, W_OK | X_OK, source)
        self._require(dst.parent, W_OK | X_OK, target)
        if dst.node is src.node:
            return  # two names of one inode: nothing to do (POSIX)
        if src.node.is_dir:
            if src.node in dst.folders:
                raise _error(errno.EINVAL, source, target)
            if dst.node is not None and not dst.node.is_dir:
                raise _error(errno.ENOTDIR, source, target)
            if dst.node is not None and dst.node.entries:
                raise _error(errno.ENOTEMPTY, source, target)
        elif dst.node is not None and dst.node.is_dir:
            raise _error(errno.EISDIR, source, target)
        if dst.node is not None:
            self._detach(dst.parent, dst.name)
        self._move(src, dst.parent, dst.name)

    def _move(self, src: _Where, parent: _Node, name: str) -> None:
        """Move the entry ``src`` to ``name`` in ``parent`` (free), keeping its inode and links."""
        assert src.node is not None
        node = src.parent.entries.pop(src.name)
        if node.is_dir:
            src.parent.nlink -= 1
            parent.nlink += 1
        parent.entries[name] = node
        node.ctime_ns = self.clock()
        self._touch(src.parent, parent)

    def exchange(self, a: str, b: str) -> None:
        """``renameat2(RENAME_EXCHANGE)``: both must exist; neither may hold the other."""
        if not self.exchange_supported:
            raise _error(errno.EINVAL, a)
        first, second = self._entry(a), self._entry(b)
        if first.node is None or second.node is None:
            raise _error(errno.ENOENT, a)
        if not first.name or not second.name:
            raise _error(errno.EBUSY, a)
        self._require(first.parent, W_OK | X_OK, a)
        self._require(second.parent, W_OK | X_OK, b)
        if first.node is second.node:
            return
        if first.node in second.folders or second.node in first.folders:
            raise _error(errno.EINVAL, a)
        one, other = first.node, second.node
        first.parent.entries[first.name] = other
        second.parent.entries[second.name] = one
        if one.is_dir != other.is_dir and first.parent is not second.parent:
            moved_in = 1 if one.is_dir else -1  # a folder went from first's parent to second's
            first.parent.nlink -= moved_in
            second.parent.nlink += moved_in
        now = self.clock()
        one.ctime_ns = other.ctime_ns = now
        self._touch(first.parent, second.parent)

    def remove(self, path: str, *, missing_ok: bool = False) -> None:
        try:
            where = self._entry(path)
            if where.node is None:
                raise _error(errno.ENOENT, path)
        except FileNotFoundError:
            if not missing_ok:
                raise
            return
        if not where.name or where.node.is_dir:
            raise _error(errno.EISDIR, path)
        self._require(where.parent, W_OK | X_OK, path)
        self._detach(where.parent, where.name)

    def rmdir(self, path: str) -> None:
        where = self._entry(path)
        if where.node is None:
            raise _error(errno.ENOENT, path)
        if not where.node.is_dir:
            raise _error(errno.ENOTDIR, path)
        if not where.name:
            raise _error(errno.EBUSY if where.node is self.root else errno.EINVAL, path)
        if where.node.entries:
            raise _error(errno.ENOTEMPTY, path)
        self._require(where.parent, W_OK | X_OK, path)
        self._detach(where.parent, where.name)

    def remove_tree(self, path: str) -> None:
        """As ``LocalHost``: a symlink or a file is unlinked, a folder removed with all it
        holds, anything else (nothing, a FIFO) left alone."""
        if self._is_link(path) or self.is_file(path):
            self.remove(path)
        elif self.is_dir(path):
            where = self._entry(path)
            assert where.node is not None
            self._empty(where.node, path)
            self.rmdir(path)

    def _empty(self, folder: _Node, path: str) -> None:
        self._require(folder, R_OK | W_OK | X_OK, path)
        for name, node in list(folder.entries.items()):
            if node.is_dir:
                self._empty(node, posixpath.join(path, name))
            self._detach(folder, name)

    # == files: metadata ============================================================================

    def readlink(self, path: str) -> str:
        node = self._entry(path).node
        if node is None:
            raise _error(errno.ENOENT, path)
        if not node.is_symlink:
            raise _error(errno.EINVAL, path)
        return node.target

    def chmod(self, path: str, mode: int, *, follow_symlinks: bool = True) -> None:
        if not follow_symlinks:  # as os.chmod on Linux
            raise NotImplementedError("chmod: follow_symlinks unavailable on this platform")
        node = self._existing(path)
        self._require_owner(node, path)
        perm = mode & 0o7777
        if not (self.uid == 0 or self._privileged or node.gid in self.groups):
            perm &= ~stat.S_ISGID
        node.mode = node.kind | perm
        node.ctime_ns = self.clock()

    def chown(self, path: str, uid: int, gid: int, *, follow_symlinks: bool = True) -> None:
        """``chown(2)``: only root gives a file away; an owner may pick one of its groups. A
        non-folder loses its setuid bit (and setgid if group-executable), as on Linux."""
        node = self._existing(path, follow=follow_symlinks)
        privileged = self.uid == 0 or self._privileged
        gives_away = uid not in (-1, node.uid)
        foreign_group = gid != -1 and (node.uid != self.uid or gid not in self.groups)
        if not privileged and (gives_away or foreign_group):
            raise _error(errno.EPERM, path)
        if uid != -1:
            node.uid = uid
        if gid != -1:
            node.gid = gid
        if not node.is_dir and not node.is_symlink:
            node.mode &= ~_privilege_bits(node)
        node.ctime_ns = self.clock()

    def fsync_dir(self, path: str) -> None:
        """Memory is as durable as it gets: only check that ``path`` is a folder, as open(O_DIRECTORY) does."""
        node = self._existing(path, follow=True)
        if not node.is_dir:
            raise _error(errno.ENOTDIR, path)

    def utime(self, path: str, mtime_ns: int, *, follow_symlinks: bool = True) -> None:
        node = self._existing(path, follow=follow_symlinks)
        self._require_owner(node, path)
        node.mtime_ns = mtime_ns
        node.ctime_ns = self.clock()

    # == bulk operations for file trees =============================================================
    # The host side is this fake's tree; the local side of ``fetch_files`` and ``put_files`` is
    # the real file system of the control machine, as it is for any host.

    def _lstat(self, node: _Node) -> FakeStat:
        return FakeStat(
            node.mode,
            node.ino,
            self.dev,
            node.nlink,
            node.uid,
            node.gid,
            node.size,
            node.atime_ns or node.mtime_ns,
            node.mtime_ns,
            node.ctime_ns,
        )

    def walk(
        self,
        root: str,
        excludes: Excludes = (),
        *,
        on_vanished: Callable[[str], None] | None = None,
        on_excluded: Callable[[str], None] | None = None,
    ) -> Iterator[tuple[str, StatResult]]:
        """As ``LocalHost.walk``: a folder is listed when it is reached (one folder's entries
        in name order, then the first subfolder's, ...), an entry is looked at when it is
        yielded, so what a caller removes meanwhile is reported as vanished."""
        stack = [""]
        while stack:
            relative_dir = stack.pop()
            directory = f"{root}/{relative_dir}" if relative_dir else root
            try:
                names = self.listdir(directory)
            except (FileNotFoundError, NotADirectoryError):
                if on_vanished is not None:
                    on_vanished(directory)
                continue
            except OSError as exc:
                raise AuraError(f"cannot read {shown(directory)}: {exc.strerror}") from None
            subdirs = []
            for name in names:
                relative = f"{relative_dir}/{name}" if relative_dir else name
                node = self._lookup_quietly(f"{directory}/{name}", follow=False)
                if node is None:
                    if on_vanished is not None:
                        on_vanished(f"{directory}/{name}")
                    continue
                if excludes and is_excluded(relative, node.is_dir, excludes):
                    if on_excluded is not None:
                        on_excluded(relative)
                    continue
                yield relative, self._lstat(node)
                if node.is_dir:
                    subdirs.append(relative)
            stack.extend(reversed(subdirs))

    def read_xattrs(self, path: str) -> dict[str, bytes]:
        node = self._lookup_quietly(path, follow=False)
        return {} if node is None else dict(node.xattrs)

    def set_metadata(
        self,
        path: str,
        *,
        owner: tuple[int, int] | None = None,
        mode: int | None = None,
        xattrs: Mapping[str, bytes] | None = None,
        times_ns: tuple[int, int] | None = None,
    ) -> None:
        if owner is not None:
            self.chown(path, owner[0], owner[1], follow_symlinks=False)
        if xattrs:  # (before the mode, as LocalHost)
            self._set_xattrs(path, xattrs)
        if mode is not None:
            self.chmod(path, mode)
        if times_ns is not None:
            node = self._existing(path, follow=False)
            self._require_owner(node, path)
            node.atime_ns, node.mtime_ns = times_ns
            node.ctime_ns = self.clock()

    def _set_xattrs(self, path: str, xattrs: Mapping[str, bytes]) -> None:
        """As ``setxattr(2)`` in the user namespace: EPERM on a symlink, EACCES without write
        permission; each failure is logged and skipped, as ``LocalHost`` does."""
        node = self._existing(path, follow=False)
        for attribute, value in xattrs.items():
            if node.is_symlink or not self._permits(node, W_OK):
                reason = os.strerror(errno.EPERM if node.is_symlink else errno.EACCES)
                logs.get().debug("files.xattr_skipped", path=shown(path), xattr=attribute, reason=reason)
                continue
            node.xattrs[attribute] = bytes(value)
            node.ctime_ns = self.clock()

    def _opened(self, path: str) -> _Node | None:
        """The node ``open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK)`` reaches: None for a
        symlink (ELOOP); ENOENT, EACCES ... as the open raises them."""
        node = self._existing(path, follow=False)
        if node.is_symlink:
            return None
        if not node.is_dir:
            self._require(node, R_OK, path)
        return node

    def hash_file(self, path: str, algorithm: str) -> str | None:
        """As ``LocalHost``: None when the open fails; a folder opens but cannot be read
        (EISDIR), a FIFO reads as empty (no writer)."""
        try:
            node = self._opened(path)
        except OSError:
            return None
        if node is None:
            return None
        if node.is_dir:
            raise _error(errno.EISDIR, path)
        hasher = checksum.new(algorithm)
        hasher.update(node.data)
        return str(hasher.hexdigest())

    def link_if_unchanged(
        self, path: str, new: str, *, listed: StatResult, digest: str, xattrs: Mapping[str, bytes], algorithm: str
    ) -> bool:
        try:
            node = self._opened(path)
            if node is None or node.is_dir:
                return False
            before = self._lstat(node)
            found = checksum.new(algorithm)
            found.update(node.data)
            same = (before.st_ino, before.st_dev, before.st_size, before.st_mtime_ns, before.st_ctime_ns) == (
                listed.st_ino,
                listed.st_dev,
                listed.st_size,
                listed.st_mtime_ns,
                listed.st_ctime_ns,
            )
            if found.hexdigest() != digest or not same or node.xattrs != dict(xattrs):
                return False
            self._link(path, new)
        except OSError:
            return False
        return True

    def link(self, existing: str, new: str) -> None:
        self._link(existing, new)

    def rename_noreplace(self, source: str, target: str) -> None:
        """``renameat2(RENAME_NOREPLACE)``: ENOENT for a missing source before EEXIST for a
        taken target; otherwise as ``rename``."""
        if not self.noreplace_supported:
            raise _error(errno.EINVAL, source, target)
        try:
            src = self._entry(source)
            dst = self._entry(target)
        except OSError as exc:
            raise _error(exc.errno or errno.EIO, source, target) from None
        if src.node is None:
            raise _error(errno.ENOENT, source, target)
        if dst.node is not None or not dst.name:
            raise _error(errno.EEXIST, source, target)
        self.rename(source, target)

    def syncfs(self, path: str) -> None:
        """Nothing to flush in memory; fails as ``open(O_DIRECTORY)`` of ``path`` would."""
        self.fsync_dir(path)

    def is_root(self) -> bool:
        return self.uid == 0

    # == helpers for tests ==========================================================================

    @contextlib.contextmanager
    def _setup(self) -> Iterator[None]:
        """Test set-up acts as root: no permission stands in its way."""
        privileged, self._privileged = self._privileged, True
        try:
            yield
        finally:
            self._privileged = privileged

    def _add_parents(self, path: str) -> None:
        """The missing folders of ``path`` and ``path`` itself, mode 0755 whatever the umask."""
        current = "/"
        for part in posixpath.normpath(self._absolute(path)).split("/"):
            current = posixpath.join(current, part)
            if not self.is_dir(current):
                self._mkdir(current, 0o755)
                self.chmod(current, 0o755)

    def add_dir(self, path: str, mode: int = 0o755, *, owner: tuple[int, int] | None = None) -> None:
        """A folder with ``mode`` (whatever the umask) and ``owner`` (default: this host's
        user), its missing parents made 0755."""
        with self._setup():
            self._add_parents(path)
            self.chmod(path, mode)
            if owner is not None:
                self.chown(path, *owner)

    def add_file(
        self, path: str, data: bytes | str = b"", mode: int = 0o644, *, owner: tuple[int, int] | None = None
    ) -> None:
        """A file with ``data`` (text as UTF-8), ``mode`` and ``owner`` (default: this host's
        user), its folders made as needed."""
        with self._setup():
            self._add_parents(posixpath.dirname(self._absolute(path)))
            self.write_atomic(path, data.encode() if isinstance(data, str) else data, mode=mode, owner=owner)

    def add_symlink(self, target: str, path: str) -> None:
        """A symlink at ``path`` pointing at ``target``, its folders made as needed."""
        with self._setup():
            self._add_parents(posixpath.dirname(self._absolute(path)))
            self.symlink(target, path)

    def tree(self, root: str = "/") -> dict[str, Entry]:
        """Everything under ``root`` (not itself), by path relative to it, symlinks not followed:
        ``{"a": ("dir", 0o755), "a/f": ("file", 0o644, b"..."), "l": ("symlink", 0o777, "a")}``."""
        with self._setup():
            folder = self._existing(root)
        found: dict[str, Entry] = {}
        for relative, node in self._walk(folder, ""):
            content: bytes | str | None = node.data if node.is_file else (node.target if node.is_symlink else None)
            found[relative] = Entry(_KIND_NAMES[node.kind], stat.S_IMODE(node.mode), content)
        return found

    def files(self, root: str = "/") -> dict[str, bytes]:
        """The content of every regular file under ``root``, by path relative to it."""
        return {path: entry.content for path, entry in self.tree(root).items() if isinstance(entry.content, bytes)}

    def _walk(self, folder: _Node, prefix: str) -> Iterator[tuple[str, _Node]]:
        """Every node under ``folder`` by relative path, depth first in name order, symlinks
        not followed (what a bulk walk with stats builds on)."""
        for name in sorted(folder.entries):
            node = folder.entries[name]
            relative = f"{prefix}{name}"
            yield relative, node
            if node.is_dir:
                yield from self._walk(node, relative + "/")

    # == files store additions ======================================================================

    def lstat(self, path: str) -> FakeStat:
        return self._lstat(self._existing(path, follow=False))

    def scandir(self, path: str) -> list[_FakeDirEntry]:
        """As ``os.scandir``: the folder's entries (here in name order), each looked at when its
        ``stat`` is called."""
        node = self._existing(path)
        if not node.is_dir:
            raise _error(errno.ENOTDIR, path)
        self._require(node, R_OK, path)
        return [
            _FakeDirEntry(self, name, posixpath.join(path, name), child) for name, child in sorted(node.entries.items())
        ]

    def open_regular(self, path: str) -> IO[bytes] | None:
        node = self._existing(path, follow=False)
        if node.is_symlink:
            raise _error(errno.ELOOP, path)  # O_NOFOLLOW
        if not node.is_dir:
            self._require(node, R_OK, path)
        return io.BytesIO(node.data) if node.is_file else None

    # == files restores ============================================================================

    def put_files(self, source: str, target: str, files: Sequence[PutFile], algorithm: str) -> list[PutResult]:
        """As ``LocalHost.put_files``: the sources are real files (on the control machine), each
        new file a node of this fake, given its metadata as ``set_metadata`` does."""
        error = self._folder_error(target)
        if error is not None:
            raise _error(error, target)
        try:
            reading = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            return [PutResult("", 0, exc.errno or errno.EIO) for _ in files]
        try:
            return [self._put(reading, f"{target}/{item.name}", item, algorithm) for item in files]
        finally:
            os.close(reading)

    def _put(self, reading: int, path: str, item: PutFile, algorithm: str) -> PutResult:
        try:
            reader = os.open(item.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=reading)
        except OSError as exc:
            return PutResult("", 0, exc.errno or errno.EIO)
        chunks = []
        try:
            if not stat.S_ISREG(os.fstat(reader).st_mode):
                return PutResult("", 0, NOT_REGULAR)
            while chunk := os.read(reader, checksum.CHUNK):
                chunks.append(chunk)
        except OSError as exc:
            return PutResult("", 0, exc.errno or errno.EIO)
        finally:
            os.close(reader)
        data = b"".join(chunks)
        self._write(self._create(path, stat.S_IFREG, 0o600 & ~self.umask), data)
        self.set_metadata(path, owner=item.owner, mode=item.mode, xattrs=item.xattrs, times_ns=item.times_ns)
        hasher = checksum.new(algorithm)
        hasher.update(data)
        return PutResult(str(hasher.hexdigest()), len(data))

    # == incremental files snapshots ===============================================================

    def walk_folders(
        self,
        root: str,
        excludes: Excludes = (),
        *,
        on_vanished: Callable[[str], None] | None = None,
        on_excluded: Callable[[str], None] | None = None,
        batch: int = FOLDER_BATCH,
    ) -> Iterator[tuple[str, Sequence[tuple[str, StatResult]]]]:
        """As ``LocalHost.walk_folders``: a part's entries are looked at (in the folder as
        listed) when the part is yielded; a folder replaced by a symlink (below the root) is
        vanished."""
        batch = max(batch, 1)
        stack = [""]
        while stack:
            relative_dir = stack.pop()
            directory = f"{root}/{relative_dir}" if relative_dir else root
            try:
                folder = self._existing(directory, follow=not relative_dir)
                if not folder.is_dir:  # (a symlink too: O_DIRECTORY | O_NOFOLLOW)
                    raise _error(errno.ENOTDIR, directory)
                parts = relative_dir.split("/")
                for depth in range(1, len(parts)):  # nor one on its way (as LocalHost, a name at a time)
                    above = self._lookup_quietly(f"{root}/{'/'.join(parts[:depth])}", follow=False)
                    if above is None or not above.is_dir:
                        raise _error(errno.ENOTDIR, directory)
                names = self.listdir(directory)
            except (FileNotFoundError, NotADirectoryError):
                if on_vanished is not None:
                    on_vanished(directory)
                continue
            except OSError as exc:
                raise AuraError(f"cannot read {shown(directory)}: {exc.strerror}") from None
            prefix = f"{relative_dir}/" if relative_dir else ""
            below: list[str] = []  # its subfolders, descended into after its last part
            for start in range(0, len(names) or 1, batch):
                entries: list[tuple[str, StatResult]] = []
                for name in names[start : start + batch]:
                    node = folder.entries.get(name)
                    if node is None:  # gone since the folder was listed
                        if on_vanished is not None:
                            on_vanished(f"{directory}/{name}")
                        continue
                    if excludes and is_excluded(prefix + name, node.is_dir, excludes):
                        if on_excluded is not None:
                            on_excluded(prefix + name)
                        continue
                    entries.append((name, self._lstat(node)))
                below.extend(prefix + name for name, st in entries if stat.S_ISDIR(st.st_mode))
                yield relative_dir, entries
            stack.extend(reversed(below))

    def link_names(self, existing: str, new: str, names: Sequence[str]) -> list[tuple[str, int]]:
        """As ``LocalHost.link_names``: both folders looked up without following a symlink in
        their place."""
        target = self._folder_error(new)
        if target is not None:
            raise _error(target, new)
        source = self._folder_error(existing)
        if source is not None:
            return [(name, source) for name in names]
        failed: list[tuple[str, int]] = []
        for name in names:
            try:
                self._link(f"{existing}/{name}", f"{new}/{name}")
            except OSError as exc:
                failed.append((name, exc.errno or errno.EIO))
        return failed

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
        """As ``LocalHost.fetch_files``: the host side in this fake's tree (the folder looked up
        without following a symlink in its place, unless ``root`` is given; another folder than
        ``folder_id`` looked up again a name at a time below ``root``, none followed), the copies
        real files of the control machine."""
        target = os.open(local_folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        os.close(target)
        if root is None and self._folder_error(folder) is not None:
            return [errno.ENOENT] * len(files)
        opened = self._lookup_quietly(folder, follow=root is not None)
        if opened is None or not opened.is_dir:
            return [errno.ENOENT] * len(files)
        moved = folder_id is not None and (self.dev, opened.ino) != folder_id
        if moved and (root is None or not self._reached_by_name(root, folder)):
            return [errno.ENOENT] * len(files)
        found: list[CopiedFile | int] = []
        for name, listed in files:
            try:
                node = self._opened(f"{folder}/{name}")
            except FileNotFoundError:
                found.append(errno.ENOENT)
                continue
            if node is None or not node.is_file:
                found.append(errno.EINVAL)
                continue
            found.append(self._fetch_node(node, f"{local_folder}/{name}", listed, algorithm, owners))
        return found

    def _reached_by_name(self, root: str, folder: str) -> bool:
        """``folder`` is a folder reached from ``root`` (followed) a name at a time, none a symlink."""
        node = self._lookup_quietly(root, follow=True)
        if node is None or not node.is_dir:
            return False
        path = root.rstrip("/")
        for name in folder[len(root) :].split("/"):
            if name:
                path = f"{path}/{name}"
                node = self._lookup_quietly(path, follow=False)
                if node is None or not node.is_dir:
                    return False
        return True

    def _fetch_node(self, node: _Node, local: str, listed: StatResult, algorithm: str, owners: bool) -> CopiedFile:
        opened = self._lstat(node)
        same = (opened.st_ino, opened.st_dev, opened.st_ctime_ns) == (listed.st_ino, listed.st_dev, listed.st_ctime_ns)
        st = listed if same else opened
        hasher = checksum.new(algorithm)
        hasher.update(node.data)
        writer = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            write_all(writer, memoryview(node.data))
            if owners:
                os.fchown(writer, st.st_uid, st.st_gid)
            for attribute, value in node.xattrs.items():  # (before the mode, as LocalHost)
                with contextlib.suppress(OSError):
                    os.setxattr(writer, attribute, value)
            os.fchmod(writer, stat.S_IMODE(st.st_mode))
            os.utime(writer, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(writer)
        return CopiedFile(str(hasher.hexdigest()), len(node.data), opened, dict(node.xattrs))

    def _folder_error(self, path: str) -> int | None:
        """Why ``open(path, O_DIRECTORY | O_NOFOLLOW)`` would fail, or None (ENOTDIR for a
        symlink, as Linux says)."""
        node = self._lookup_quietly(path, follow=False)
        if node is None:
            return errno.ENOENT
        return None if node.is_dir else errno.ENOTDIR

    # -- postgres restore additions ----------------------------------------------------------------
    def _fifo(self, path: str) -> tuple[_Node, _FakeFifo]:
        """The FIFO node at ``path`` and its pipe state (made on first use); ``OSError`` as an
        open of a missing path or a folder raises it."""
        node = self._existing(path, follow=True)
        if node.is_dir:
            raise _error(errno.EISDIR, path)
        with _FIFO_LOCK:
            pipes: dict[int, _FakeFifo] = self.__dict__.setdefault("_fifos", {})
            return node, pipes.setdefault(node.ino, _FakeFifo())

    def open_fifo_writer_waiting(self, path: str) -> IO[bytes]:
        """As the real open: waits until a reader opens the pipe (``open_fifo_reader``, the
        only reader a fake pipe has); a regular file opens at once, written from its start."""
        node, pipe = self._fifo(path)
        if node.is_file:
            return cast(IO[bytes], io.BufferedWriter(_NodeWriter(self, node)))
        with pipe.changed:
            opened = pipe.reader_opens
            pipe.changed.wait_for(lambda: pipe.readers > 0 or pipe.reader_opens != opened)
        return cast(IO[bytes], _FakeFifoEnd(pipe, writing=True))

    def open_fifo_reader(self, path: str) -> IO[bytes]:
        node, pipe = self._fifo(path)
        if node.is_file:
            return io.BytesIO(node.data)
        with pipe.changed:
            pipe.readers += 1
            pipe.reader_opens += 1
            pipe.changed.notify_all()
        return cast(IO[bytes], _FakeFifoEnd(pipe, writing=False))

    def fast_temp_root(self, need: int) -> str:
        """The fake's ``/dev/shm`` when a test made that folder and the fake has room for ``need``
        bytes four times over, else ``temp_root`` (as LocalHost with a tmpfs there)."""
        shm = "/dev/shm"  # noqa: S108 (in memory: the fake's own)
        if self.is_dir(shm) and self.access(shm, os.W_OK | os.X_OK) and self.disk_usage(shm)[0] >= 4 * max(need, 0):
            return shm
        return self.temp_root()


_FIFO_LOCK = threading.Lock()


class _FakeFifo:
    """A fake named pipe's state: readers open, reader opens so far (a waiting writer goes on
    when it changes, as in the kernel), and the bytes written but not yet read."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.readers = 0
        self.reader_opens = 0
        self.buffer = bytearray()


class _FakeFifoEnd(io.RawIOBase):
    """One end of a fake pipe. Writing with no reader open is ``BrokenPipeError``; reading
    takes what was written (nothing: b"", it never waits)."""

    def __init__(self, pipe: _FakeFifo, writing: bool) -> None:
        self._pipe, self._writing = pipe, writing

    def writable(self) -> bool:
        return self._writing

    def readable(self) -> bool:
        return not self._writing

    def write(self, data: Any) -> int:
        with self._pipe.changed:
            if not self._pipe.readers:
                raise _error(errno.EPIPE)
            self._pipe.buffer += bytes(data)
        return len(data)

    def readinto(self, buffer: Any) -> int:
        with self._pipe.changed:
            chunk = self._pipe.buffer[: len(buffer)]
            del self._pipe.buffer[: len(chunk)]
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        if not self.closed and not self._writing:
            with self._pipe.changed:
                self._pipe.readers -= 1
        super().close()


def _privilege_bits(node: _Node) -> int:
    """The bits a chown or an unprivileged write takes from a file: setuid, and setgid when
    group-executable (without it, setgid marks mandatory locking and stays)."""
    return stat.S_ISUID | (stat.S_ISGID if node.mode & stat.S_IXGRP else 0)


def _deliver(data: bytes, stdout: IO[bytes] | int | None) -> bytes:
    """Send a command's output where ``stdout`` says (a file, a descriptor, nowhere): nothing
    is captured then, as with ``subprocess``."""
    if stdout is None or stdout == DEVNULL:
        return b""
    if isinstance(stdout, int):
        os.write(stdout, data)
    else:
        stdout.write(data)
    return b""


def _is_a_host(host: FakeHost) -> Host:
    """Checked by mypy: a FakeHost is a Host."""
    return host


class _FakeDirEntry:
    """One entry of ``FakeHost.scandir``, as an ``os.DirEntry``."""

    def __init__(self, host: FakeHost, name: str, path: str, node: _Node) -> None:
        self._host, self.name, self.path, self._node = host, name, path, node

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        if follow_symlinks and self._node.is_symlink:
            return self._host.is_dir(self.path)
        return self._node.is_dir

    def stat(self, *, follow_symlinks: bool = True) -> FakeStat:
        if follow_symlinks and self._node.is_symlink:
            return self._host._lstat(self._host._existing(self.path, follow=True))
        return self._host._lstat(self._node)
