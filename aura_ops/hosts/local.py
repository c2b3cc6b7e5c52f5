"""LocalHost: this machine, through ``subprocess`` and the ``os`` module.

It logs every command masked, enforces timeouts, and turns a failure into ``CommandFailed``
naming the host, the masked command, the exit code and the last lines of stderr. Children run in
their own process group with the user's umask and die with aura-ops (PDEATHSIG). File operations
are the system calls themselves; bulk operations run at full speed in this process.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Any

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
    PutFile,
    PutResult,
    Result,
    StatResult,
    is_excluded,
    shown,
)
from aura_ops.secrets import mask

STDERR_TAIL_LINES = 20


def _current_umask() -> int:
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


# The umask of the user who started aura-ops. ``cli.main`` tightens the process's own umask to
# 0077 (repository, state and logs are owner-only) and records the user's here first: what
# aura-ops makes *for* the user (releases, restored trees, the folders that hold them) and the
# commands it runs for the user (migrations, playbook commands) get the user's umask instead.
_user_umask = _current_umask()


def remember_user_umask(mask: int) -> None:
    global _user_umask
    _user_umask = mask


def user_umask() -> int:
    return _user_umask


def make_user_dirs(path: str | os.PathLike[str]) -> None:
    """``mkdir -p`` with the invoking user's umask for every folder it creates (not aura's 0077),
    so that a folder made to hold a release or a restored tree is as readable as the user's own."""
    missing = []
    current = os.path.abspath(path)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder)
        except FileExistsError:
            if not os.path.isdir(folder):
                raise
            continue
        os.chmod(folder, 0o777 & ~_user_umask)


def _parent_death_signal() -> Any:
    """Return a preexec function that gives the child the user's umask and makes it die with us
    (Linux)."""
    # this process's own C library (dlopen(NULL)): find_library("c") ran ``ldconfig -p``, a
    # process and 10-25 ms at every start
    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
    pr_set_pdeathsig = 1

    def preexec() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _INTERRUPTS)  # held by the parent while it forks
        os.umask(_user_umask)
        if prctl is not None:
            prctl(pr_set_pdeathsig, signal.SIGKILL)

    return preexec


_INTERRUPTS = {signal.SIGINT, signal.SIGTERM}
_PREEXEC = _parent_death_signal()


class _LocalProcess:
    """A subprocess.Popen with a bounded stderr tail and our error conventions."""

    def __init__(self, host: LocalHost, command: Command, popen: subprocess.Popen[bytes]) -> None:
        self.host = host
        self.command = command
        self.popen = popen
        self.stdout = popen.stdout
        self.started = time.monotonic()
        self.tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._drainer: threading.Thread | None = None
        self._stderr_consumed = False

    def stderr_lines(self) -> Iterator[str]:
        assert self.popen.stderr is not None
        for raw in self.popen.stderr:
            line = mask(raw.decode("utf-8", "replace").rstrip("\n"))
            self.tail.append(line)
            yield line

    def _drain_stderr(self, on_line: Callable[[str], None] | None = None) -> None:
        for line in self.stderr_lines():
            if on_line is not None:
                on_line(line)

    def consume_stderr(self, data: bytes) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            self.tail.append(mask(line))
        self._stderr_consumed = True

    def drain_in_background(self, on_line: Callable[[str], None] | None = None) -> None:
        """Read stderr in a thread (keeping the tail), calling ``on_line`` for each line."""
        self._drainer = threading.Thread(target=self._drain_stderr, args=(on_line,), daemon=True)
        self._drainer.start()

    def wait(self, check: bool = True, timeout: float | None = None) -> Result:
        try:
            returncode = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AuraError(f"on {self.host.name}: `{self.command.display()}` timed out after {timeout:g}s") from None
        except BaseException:  # interrupted: never leave the command running behind us
            self.kill()
            raise
        if returncode != 0:
            self._end_group()
        if self._drainer is not None:
            self._drainer.join()
        elif not self._stderr_consumed:
            self._drain_stderr()
        seconds = time.monotonic() - self.started
        result = Result(returncode, b"", "\n".join(self.tail), seconds)
        log = logs.get()
        log.debug(
            "command.finished",
            host=self.host.name,
            returncode=returncode,
            seconds=round(seconds, 3),
            command=self.command.display(),
        )
        if check and returncode != 0:
            raise CommandFailed(self.host.name, self.command.display(), returncode, result.stderr)
        return result

    def _end_group(self) -> None:
        """A command that failed may leave processes of its group behind (rsync's generator goes
        on making folders and links after its receiver was killed and its client gave up): kill
        them and wait until none is left, so that whatever undoes the command's work (removing a
        partial release) never races one of them. The group id stays reserved while any member
        lives; a command that succeeded keeps what it started on purpose (a daemon)."""
        group = self.popen.pid
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return  # nobody left in the group
        deadline = time.monotonic() + 10.0
        while _live_members(group) and time.monotonic() < deadline:
            time.sleep(0.01)

    def kill(self) -> None:
        """Kill the command's whole process group (what it started too), then reap it."""
        if self.popen.returncode is None:  # not reaped yet: its pid still names only its group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()

    # -- postgres/docker additions ---------------------------------------------------------------
    def poll(self) -> int | None:
        return self.popen.poll()

    def terminate(self, grace: float = 5.0) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()


def _communicate(process: _LocalProcess, feed: bytes | None, timeout: float | None) -> tuple[bytes, bytes]:
    """``communicate`` with ``process``, in slices: once the command has exited non-zero, what it
    left running in its group is ended (``_end_group``), as it would hold our pipes open and
    the failed command would read as running until they closed (``sh -c 'daemon & exit 3'``:
    the failure was reported only when the daemon exited, or as a timeout)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = _SLICE if deadline is None else min(_SLICE, max(deadline - time.monotonic(), 0.0))
        try:
            return process.popen.communicate(input=feed, timeout=left)
        except subprocess.TimeoutExpired:
            if deadline is not None and time.monotonic() >= deadline:
                raise
            if process.popen.poll() not in (None, 0):
                process._end_group()  # (its pipes close with the group: communicate ends)


_SLICE = 0.5  # (seconds between looks at a command whose pipes are still open)


def _live_members(group: int) -> bool:
    """Whether a process of process group ``group`` is still alive (not a zombie) on this machine:
    /proc, as a zombie whose parent does not reap it would answer kill(0) forever."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == group and fields[0] != b"Z":
            return True
    return False


class LocalHost:
    """Runs commands on this machine."""

    def __init__(self, name: str = "local") -> None:
        self.name = name

    def _env(self, command: Command) -> dict[str, str]:
        env = dict(os.environ)
        env.update(command.env)
        return env

    def start(
        self,
        command: Command,
        *,
        stdout: IO[bytes] | int | None = PIPE,
        stdin: IO[bytes] | int | None = DEVNULL,
    ) -> _LocalProcess:
        """Start ``command``; its stderr is kept as a masked tail for errors."""
        logs.get().info("command.started", host=self.name, command=command.display())
        # SIGINT/SIGTERM are held while the child is forked: a handler raising inside the fork's
        # own Python hooks is lost (the run would then wait for the child); once the process is
        # known, a held signal arrives and kills it
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)
        process: _LocalProcess | None = None
        try:
            popen = subprocess.Popen(
                command.argv,
                stdin=stdin,
                stdout=stdout,
                stderr=PIPE,
                env=self._env(command),
                cwd=command.cwd,
                preexec_fn=_PREEXEC,  # noqa: PLW1509
                process_group=0,  # its own group: a timeout or an interruption kills all it started
            )
            process = _LocalProcess(self, command, popen)
        except FileNotFoundError:
            raise ToolMissing(f"{command.argv[0]}: not found on {self.name}") from None
        except PermissionError:
            raise ToolMissing(f"{command.argv[0]}: not executable on {self.name}") from None
        finally:
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
            except BaseException:
                if process is not None:
                    process.kill()
                raise
        return process

    def run(
        self,
        command: Command,
        *,
        stdin: bytes | IO[bytes] | None = None,
        stdout: IO[bytes] | int | None = PIPE,
        timeout: float | None = None,
        check: bool = True,
    ) -> Result:
        """Run ``command`` to completion; raise CommandFailed when ``check`` and it fails."""
        feed = stdin if isinstance(stdin, bytes) else None
        source: IO[bytes] | int | None = PIPE if feed is not None else stdin  # type: ignore[assignment]
        process = self.start(command, stdout=stdout, stdin=source or subprocess.DEVNULL)
        try:
            captured, errors = _communicate(process, feed, timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AuraError(f"on {self.name}: `{command.display()}` timed out after {timeout:g}s") from None
        except BaseException:  # interrupted: never leave the child running behind us
            process.kill()
            raise
        process.consume_stderr(errors or b"")
        result = process.wait(check=check)
        return Result(result.returncode, captured or b"", result.stderr, result.seconds)

    def which(self, program: str) -> str | None:
        return shutil.which(program)

    # -- reaching the host ---------------------------------------------------------------------
    def rsync_path(self, path: str) -> str:
        return path

    @contextlib.contextmanager
    def tunnel(self, address: str, port: int) -> Iterator[tuple[str, int]]:
        yield address, port

    # -- files -----------------------------------------------------------------------------------
    def stat(self, path: str, *, follow_symlinks: bool = True) -> FileStat | None:
        try:
            st = os.stat(path, follow_symlinks=follow_symlinks)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return FileStat(
            st.st_mode,
            st.st_size,
            st.st_uid,
            st.st_gid,
            st.st_mtime_ns,
            st.st_ctime_ns,
            st.st_ino,
            st.st_dev,
            st.st_nlink,
            st.st_atime_ns,
        )

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def is_file(self, path: str) -> bool:
        return os.path.isfile(path)

    def access(self, path: str, mode: int) -> bool:
        return os.access(path, mode)

    def realpath(self, path: str) -> str:
        return os.path.realpath(path)

    def read_bytes(self, path: str) -> bytes:
        with open(path, "rb") as handle:
            return handle.read()

    def read_text(self, path: str) -> str:
        with open(path, encoding="utf-8") as handle:
            return handle.read()

    def write_atomic(
        self,
        path: str,
        data: bytes,
        *,
        mode: int = 0o644,
        owner: tuple[int, int] | None = None,
        times: tuple[int, int] | None = None,
    ) -> None:
        folder = os.path.dirname(path) or "."
        temp = os.path.join(folder, f".{os.path.basename(path)}.aura-{os.getpid()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if owner is not None:
                    os.fchown(fd, *owner)
                os.fchmod(fd, mode)  # not reduced by the umask; after the owner (chown clears setuid/setgid)
                if times is not None:
                    os.utime(fd, ns=times)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        _fsync_dir(folder)

    def open_read(self, path: str) -> IO[bytes]:
        # opened without blocking (a FIFO planted in a repository would wait for a writer
        # forever), then refused unless a regular file (a folder, a FIFO, a device); buffered:
        # an index is read by lines, a read larger than the buffer (checksum.CHUNK) goes
        # straight to one read(2)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
            if not stat.S_ISREG(mode):
                raise OSError(errno.EAGAIN, "not a regular file", path)  # as FakeHost's FIFO
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def open_write(self, path: str, *, mode: int = 0o600, exclusive: bool = True) -> IO[bytes]:
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_EXCL if exclusive else os.O_TRUNC)
        fd = os.open(path, flags, mode)
        try:
            os.fchmod(fd, mode)  # exactly ``mode``, whatever the umask or the file's mode before
            return os.fdopen(fd, "wb")  # buffered as open(path, "xb")
        except BaseException:
            os.close(fd)
            raise

    def cpu_count(self) -> int:
        return os.cpu_count() or 1

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def mkdir(self, path: str, *, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None:
        if parents:
            os.makedirs(path, mode, exist_ok=exist_ok)
            return
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            if not (exist_ok and os.path.isdir(path)):
                raise

    def make_user_dirs(self, path: str) -> None:
        make_user_dirs(path)

    def rename(self, source: str, target: str) -> None:
        os.replace(source, target)

    def exchange(self, a: str, b: str) -> None:
        _rename_exchange(a, b)

    def remove(self, path: str, *, missing_ok: bool = False) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def remove_tree(self, path: str) -> None:
        try:
            st = os.lstat(path)  # one stat; a symlink is removed, never followed
        except (FileNotFoundError, NotADirectoryError):
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)  # a file, a symlink, a fifo or a socket

    def symlink(self, target: str, path: str) -> None:
        os.symlink(target, path)

    def replace_symlink(self, target: str, path: str) -> None:
        temp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.aura-{os.getpid()}.link")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        os.symlink(target, temp)
        try:
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        _fsync_dir(os.path.dirname(path) or ".")

    def readlink(self, path: str) -> str:
        return os.readlink(path)

    def chmod(self, path: str, mode: int, *, follow_symlinks: bool = True) -> None:
        os.chmod(path, mode, follow_symlinks=follow_symlinks)

    def chown(self, path: str, uid: int, gid: int, *, follow_symlinks: bool = True) -> None:
        os.chown(path, uid, gid, follow_symlinks=follow_symlinks)

    def utime(self, path: str, mtime_ns: int, *, follow_symlinks: bool = True) -> None:
        os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=follow_symlinks)

    def disk_usage(self, path: str) -> tuple[int, int]:
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize

    def user_umask(self) -> int:
        return _user_umask

    # -- bulk operations -------------------------------------------------------------------------

    def make_fifo(self, path: str) -> None:
        os.mkfifo(path, 0o600)

    # -- release additions -----------------------------------------------------------------------
    def fsync_dir(self, path: str) -> None:
        _fsync_dir(path)

    # -- postgres/docker additions ---------------------------------------------------------------
    def temp_root(self) -> str:
        return tempfile.gettempdir()

    def open_fifo_writer(self, path: str) -> IO[bytes] | None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no reader yet
                return None
            raise
        try:
            os.set_blocking(fd, True)
            with contextlib.suppress(OSError):  # F_SETPIPE_SZ (Linux): 1 MiB, fewer wake-ups than 64 KiB
                fcntl.fcntl(fd, 1031, 1 << 20)
            return os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            raise

    # -- bulk operations for file trees ----------------------------------------------------------
    # Each is the system calls themselves, in this process: the walker is the files component's
    # own (scandir, one lstat an entry), copies hash as they go with a reused buffer per thread.
    def walk(
        self,
        root: str,
        excludes: Excludes = (),
        *,
        on_vanished: Callable[[str], None] | None = None,
        on_excluded: Callable[[str], None] | None = None,
    ) -> Iterator[tuple[str, os.stat_result]]:
        return walk(root, excludes, on_vanished, on_excluded)

    def read_xattrs(self, path: str) -> dict[str, bytes]:
        return read_xattrs(path)

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
            os.chown(path, owner[0], owner[1], follow_symlinks=False)
        if xattrs:  # before the mode: not root, a user xattr needs the entry writable (a 0555 folder)
            set_xattrs(path, xattrs)
        if mode is not None:
            os.chmod(path, mode)
        if times_ns is not None:
            os.utime(path, ns=times_ns, follow_symlinks=False)

    def hash_file(self, path: str, algorithm: str) -> str | None:
        try:
            reader = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            return hash_fd(reader, algorithm)
        finally:
            os.close(reader)

    def link_if_unchanged(
        self, path: str, new: str, *, listed: StatResult, digest: str, xattrs: Mapping[str, bytes], algorithm: str
    ) -> bool:
        try:
            reader = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return False
        try:
            before = os.fstat(reader)
            found = hash_fd(reader, algorithm)
            after = os.fstat(reader)
            if found != digest or not _same_file(before, after, listed) or read_xattrs(reader) != xattrs:
                return False
            os.link(path, new, follow_symlinks=False)
        except OSError:
            return False
        finally:
            os.close(reader)
        if os.lstat(new).st_ino != before.st_ino:  # replaced between the hash and the link
            os.unlink(new)
            return False
        return True

    def link(self, existing: str, new: str) -> None:
        os.link(existing, new, follow_symlinks=False)

    def rename_noreplace(self, source: str, target: str) -> None:
        _renameat2(source, target, _RENAME_NOREPLACE)

    def syncfs(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if _libc().syncfs(fd) != 0:
                os.sync()
        finally:
            os.close(fd)

    def is_root(self) -> bool:
        return _IS_ROOT

    # -- files store additions -------------------------------------------------------------------
    def lstat(self, path: str) -> os.stat_result:
        return os.lstat(path)

    def scandir(self, path: str) -> list[os.DirEntry[str]]:
        with os.scandir(path) as entries:
            return list(entries)

    def open_regular(self, path: str) -> IO[bytes] | None:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                return None
            return os.fdopen(fd, "rb", buffering=0)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise

    # -- files restores (bulk: one call a folder) ------------------------------------------------
    def put_files(self, source: str, target: str, files: Sequence[PutFile], algorithm: str) -> list[PutResult]:
        return put_files(source, target, files, algorithm)

    # -- incremental files snapshots (bulk: one call a folder) -----------------------------------
    def walk_folders(
        self,
        root: str,
        excludes: Excludes = (),
        *,
        on_vanished: Callable[[str], None] | None = None,
        on_excluded: Callable[[str], None] | None = None,
        batch: int = FOLDER_BATCH,
    ) -> Iterator[tuple[str, list[tuple[str, os.stat_result]]]]:
        return walk_folders(root, excludes, on_vanished, on_excluded, batch)

    def link_names(self, existing: str, new: str, names: Sequence[str]) -> list[tuple[str, int]]:
        return link_names(existing, new, names)

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
        return fetch_files(folder, local_folder, files, algorithm, owners, folder_id, root)

    # -- postgres restore additions --------------------------------------------------------------
    def open_fifo_writer_waiting(self, path: str) -> IO[bytes]:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)  # blocks until a reader opens the pipe
        try:
            with contextlib.suppress(OSError):  # F_SETPIPE_SZ (Linux): 1 MiB, fewer wake-ups than 64 KiB
                fcntl.fcntl(fd, 1031, 1 << 20)
            return os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            raise

    def open_fifo_reader(self, path: str) -> IO[bytes]:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            return os.fdopen(fd, "rb", buffering=0)
        except BaseException:
            os.close(fd)
            raise

    def fast_temp_root(self, need: int) -> str:
        if not os.environ.get("TMPDIR"):  # the user's choice of a temporary folder wins
            with contextlib.suppress(OSError, ValueError):
                if _is_tmpfs(SHM) and os.access(SHM, os.W_OK | os.X_OK) and self.disk_usage(SHM)[0] >= 4 * max(need, 0):
                    return SHM
        return self.temp_root()


SHM = "/dev/shm"  # noqa: S108 (a memory file system where Linux provides one)


def _is_tmpfs(path: str) -> bool:
    """Whether the last mount at ``path`` (as /proc/self/mounts lists it) is a tmpfs."""
    kind = None
    with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 2 and fields[1] == path:
                kind = fields[2]
    return kind == "tmpfs" and os.path.isdir(path) and not os.path.islink(path)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _rename_exchange(a: str, b: str) -> None:
    """renameat2(a, b, RENAME_EXCHANGE): both names stay, their contents swap, in one step."""
    _renameat2(a, b, _RENAME_EXCHANGE)  # (libc loaded once: find_library ran ldconfig each call)


def local_hostname() -> str:
    return socket.gethostname()


# -- bulk operations for file trees: the local implementations ------------------------------------
# Module functions, so that the repository's own trees (on this machine) are read and written
# with the same code as a LocalHost's.

_IS_ROOT = os.geteuid() == 0
_RENAME_NOREPLACE = 1


def walk(
    root: str,
    excludes: Excludes = (),
    on_vanished: Callable[[str], None] | None = None,
    on_excluded: Callable[[str], None] | None = None,
) -> Iterator[tuple[str, os.stat_result]]:
    """``Host.walk`` on this machine: (relative path, lstat) for every entry under ``root``,
    parents first, each folder's entries in name order (see the protocol)."""
    stack = [""]
    while stack:
        relative_dir = stack.pop()
        directory = f"{root}/{relative_dir}" if relative_dir else root
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            if on_vanished is not None:
                on_vanished(directory)
            continue
        except OSError as exc:
            raise AuraError(f"cannot read {shown(directory)}: {exc.strerror}") from None
        subdirs = []
        for entry in entries:
            relative = f"{relative_dir}/{entry.name}" if relative_dir else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                if on_vanished is not None:
                    on_vanished(entry.path)
                continue
            if excludes and is_excluded(relative, stat.S_ISDIR(st.st_mode), excludes):
                if on_excluded is not None:
                    on_excluded(relative)
                continue
            yield relative, st
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(relative)
        stack.extend(reversed(subdirs))


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


def set_xattrs(target: str | int, xattrs: Mapping[str, bytes], shown_as: str = "") -> None:
    """Set each xattr of a path (not followed) or an open file; one that cannot be set is logged
    (as ``shown_as``, else the path) and skipped."""
    for attribute, value in xattrs.items():
        try:
            if isinstance(target, int):
                os.setxattr(target, attribute, value)
            else:
                os.setxattr(target, attribute, value, follow_symlinks=False)
        except OSError as exc:
            where = shown_as or str(target)
            logs.get().debug("files.xattr_skipped", path=shown(where), xattr=attribute, reason=exc.strerror)


_buffers = threading.local()


def _buffer() -> tuple[bytearray, memoryview]:
    if not hasattr(_buffers, "data"):
        _buffers.data = bytearray(checksum.CHUNK)
        _buffers.view = memoryview(_buffers.data)
    return _buffers.data, _buffers.view


def write_all(fd: int, data: memoryview) -> None:
    """Write every byte: a write may be short (a full disk writes part, then fails with ENOSPC)."""
    while data:
        written = os.write(fd, data)
        data = data[written:]


def hash_fd(reader: int, algorithm: str) -> str:
    """The hash of what an open file holds from its offset on."""
    hasher = checksum.new(algorithm)
    buffer, view = _buffer()
    while count := os.readv(reader, [buffer]):
        hasher.update(view[:count])
    return str(hasher.hexdigest())


def _same_file(before: os.stat_result, after: os.stat_result, listed: StatResult) -> bool:
    """Nothing wrote to the file while it was hashed, and it is the one the scan listed."""
    return (before.st_ino, before.st_dev) == (listed.st_ino, listed.st_dev) and (
        after.st_size,
        after.st_mtime_ns,
        after.st_ctime_ns,
    ) == (listed.st_size, listed.st_mtime_ns, listed.st_ctime_ns)


_libc_handle: Any = None


def _libc() -> Any:
    """This process's C library, loaded once."""
    global _libc_handle
    if _libc_handle is None:
        _libc_handle = ctypes.CDLL(None, use_errno=True)
    return _libc_handle


def _renameat2(source: str, target: str, flags: int) -> None:
    """renameat2(2) with ``flags`` (RENAME_NOREPLACE, RENAME_EXCHANGE); OSError ENOSYS without it."""
    function = getattr(_libc(), "renameat2", None)
    if function is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available", source)
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if function(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), source, None, target)


# -- incremental files snapshots: the local implementations ---------------------------------------

_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_ROOT = _FOLDER & ~os.O_NOFOLLOW
_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)  # a folder removed, or replaced by a file or a symlink


def walk_folders(
    root: str,
    excludes: Excludes = (),
    on_vanished: Callable[[str], None] | None = None,
    on_excluded: Callable[[str], None] | None = None,
    batch: int = FOLDER_BATCH,
) -> Iterator[tuple[str, list[tuple[str, os.stat_result]]]]:
    """``Host.walk_folders`` on this machine: the root opened once (a symlink there is followed),
    each folder below it opened relative to it (never through a symlink in its place), its names
    sorted as str (no key function), each entry one ``fstatat`` relative to the open folder, a
    part of at most ``batch`` names at a time (the folder stays open while its parts are read)."""
    try:
        top = os.open(root, _ROOT)
    except OSError as exc:
        if exc.errno not in _GONE:
            raise AuraError(f"cannot read {shown(root)}: {exc.strerror}") from None
        if on_vanished is not None:
            on_vanished(root)
        return
    try:
        yield from _walk_below(top, root, excludes, on_vanished, on_excluded, max(batch, 1))
    finally:
        os.close(top)


def _walk_below(
    top: int,
    root: str,
    excludes: Excludes,
    on_vanished: Callable[[str], None] | None,
    on_excluded: Callable[[str], None] | None,
    batch: int,
) -> Iterator[tuple[str, list[tuple[str, os.stat_result]]]]:
    is_dir = stat.S_ISDIR
    stack: list[tuple[str, tuple[int, int] | None]] = [("", None)]  # (folder, its (dev, ino) as listed)
    while stack:
        relative_dir, listed = stack.pop()
        directory = f"{root}/{relative_dir}" if relative_dir else root
        try:
            fd = os.open(relative_dir, _FOLDER, dir_fd=top) if relative_dir else os.dup(top)
            if listed is not None:
                opened = os.fstat(fd)
                if (opened.st_dev, opened.st_ino) != listed:  # (O_NOFOLLOW covers the last name only)
                    fd = _reopened_by_name(top, relative_dir, fd)
        except OSError as exc:
            if exc.errno not in _GONE:
                raise AuraError(f"cannot read {shown(directory)}: {exc.strerror}") from None
            if on_vanished is not None:
                on_vanished(directory)
            continue
        prefix = f"{relative_dir}/" if relative_dir else ""
        below: list[tuple[str, tuple[int, int]]] = []  # its subfolders, descended into after its last part
        try:
            try:
                names = os.listdir(fd)
            except OSError as exc:
                raise AuraError(f"cannot read {shown(directory)}: {exc.strerror}") from None
            names.sort()
            for start in range(0, len(names) or 1, batch):
                entries = _part(fd, directory, names[start : start + batch], on_vanished)
                if excludes:
                    entries = _not_excluded(prefix, entries, excludes, on_excluded)
                below.extend((prefix + name, (st.st_dev, st.st_ino)) for name, st in entries if is_dir(st.st_mode))
                yield relative_dir, entries
        finally:
            os.close(fd)
        stack.extend(reversed(below))


def _part(
    fd: int, directory: str, names: list[str], on_vanished: Callable[[str], None] | None
) -> list[tuple[str, os.stat_result]]:
    """(name, lstat) of each of ``names`` in the open folder ``fd``; one gone since it was listed
    is left out (and vanished)."""
    lstat = os.stat
    entries = []
    for name in names:
        try:
            entries.append((name, lstat(name, dir_fd=fd, follow_symlinks=False)))
        except FileNotFoundError:
            if on_vanished is not None:
                on_vanished(f"{directory}/{name}")
    return entries


def _reopened_by_name(top: int, relative_dir: str, fd: int) -> int:
    """``relative_dir`` (below ``top``) opened a name at a time, none followed, ``fd`` closed: it
    was not the folder listed there, and a folder on its way may now be a symlink (ELOOP)."""
    os.close(fd)
    fd = os.dup(top)
    for name in relative_dir.split("/"):
        try:
            below = os.open(name, _FOLDER, dir_fd=fd)
        finally:
            os.close(fd)
        fd = below
    return fd


def _not_excluded(
    prefix: str,
    entries: list[tuple[str, os.stat_result]],
    excludes: Excludes,
    on_excluded: Callable[[str], None] | None,
) -> list[tuple[str, os.stat_result]]:
    kept = []
    for name, st in entries:
        if is_excluded(prefix + name, stat.S_ISDIR(st.st_mode), excludes):
            if on_excluded is not None:
                on_excluded(prefix + name)
        else:
            kept.append((name, st))
    return kept


def link_names(existing: str, new: str, names: Sequence[str]) -> list[tuple[str, int]]:
    """``Host.link_names`` on this machine: both folders opened once, then one ``linkat`` a name
    relative to them."""
    try:
        source = os.open(existing, _FOLDER)
    except OSError as exc:
        return [(name, exc.errno or errno.EIO) for name in names]
    failed = []
    try:
        target = os.open(new, _FOLDER)
        try:
            link = os.link
            for name in names:
                try:
                    link(name, name, src_dir_fd=source, dst_dir_fd=target, follow_symlinks=False)
                except OSError as exc:
                    failed.append((name, exc.errno or errno.EIO))
        finally:
            os.close(target)
    finally:
        os.close(source)
    return failed


# -- first files snapshots: a folder's files copied with one open of each folder -------------------

_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def fetch_files(
    folder: str,
    local_folder: str,
    files: Sequence[tuple[str, StatResult]],
    algorithm: str,
    owners: bool,
    folder_id: tuple[int, int] | None = None,
    root: str | None = None,
) -> list[CopiedFile | int]:
    """``Host.fetch_files`` on this machine: both folders opened once; each file opened, copied,
    and given its metadata through its descriptors (no path looked up again per file)."""
    try:
        source = _open_folder(folder, folder_id, root)
    except OSError as exc:
        if exc.errno not in _GONE:
            raise
        return [errno.ENOENT] * len(files)
    if source is None:
        return [errno.ENOENT] * len(files)
    try:
        target = os.open(local_folder, _FOLDER)
        try:
            return [
                _fetch_one(source, target, name, listed, algorithm, owners, (folder, local_folder))
                for name, listed in files
            ]
        finally:
            os.close(target)
    finally:
        os.close(source)


def _open_folder(folder: str, folder_id: tuple[int, int] | None, root: str | None) -> int | None:
    """``fetch_files``'s folder opened: by its path (a symlink in its place not followed, unless
    ``root`` is given: a source root given as a symlink); then, when it is not the folder listed
    (``folder_id``), None without ``root``, else reopened as ``walk_folders`` does: a name at a time
    below ``root``, none followed (a folder replaced since is read, one on its way become a symlink
    is ELOOP). ``OSError`` as the opens raise it."""
    fd = os.open(folder, _FOLDER if root is None else _ROOT)
    if folder_id is not None:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) == folder_id:
            return fd
    elif root is None:
        return fd
    os.close(fd)
    if root is None:
        return None
    if folder != root and not folder.startswith(f"{root.rstrip('/')}/"):
        raise ValueError(f"{folder} is not below {root}")
    fd = os.open(root, _ROOT)
    for name in folder[len(root) :].split("/"):
        if name:
            try:
                below = os.open(name, _FOLDER, dir_fd=fd)
            finally:
                os.close(fd)
            fd = below
    return fd


def _fetch_one(
    source: int, target: int, name: str, listed: StatResult, algorithm: str, owners: bool, folders: tuple[str, str]
) -> CopiedFile | int:
    """One file of ``fetch_files``; an ``OSError`` raised names the whole path (not ``name``
    alone, as an open relative to a folder's descriptor would: the error line must say which)."""
    folder, local_folder = folders
    try:
        reader = os.open(name, _READ, dir_fd=source)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return errno.ENOENT
        if exc.errno in (errno.ELOOP, errno.ENXIO):
            return errno.EINVAL  # now a symlink or a socket
        raise OSError(exc.errno, exc.strerror, f"{folder}/{name}") from None
    try:
        opened = os.fstat(reader)
        if not stat.S_ISREG(opened.st_mode):
            return errno.EINVAL
        xattrs = read_xattrs(reader)
        same = (opened.st_ino, opened.st_dev, opened.st_ctime_ns) == (listed.st_ino, listed.st_dev, listed.st_ctime_ns)
        st = listed if same else opened  # replaced, or changed (chmod 600, then written), since it was listed
        try:
            writer = os.open(name, _NEW, 0o600, dir_fd=target)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, f"{local_folder}/{name}") from None
        try:
            digest, size = _copy_open(reader, writer, algorithm, opened.st_size)
            if owners:
                os.fchown(writer, st.st_uid, st.st_gid)  # (before the xattrs: a chown drops file capabilities)
            if xattrs:  # before the mode: a user's xattrs need the file writable (not root: 0444 refuses them)
                set_xattrs(writer, xattrs, f"{folder}/{name}")
            os.fchmod(writer, stat.S_IMODE(st.st_mode))
            os.utime(writer, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(writer)
        return CopiedFile(digest, size, opened, xattrs)
    finally:
        os.close(reader)


def _copy_open(reader: int, writer: int, algorithm: str, expected: int) -> tuple[str, int]:
    """Copy what ``reader`` holds into ``writer``, hashing it; (hash, bytes). A short read that
    reaches the size the file had when opened is its end: no second read to find it."""
    hasher = checksum.new(algorithm)
    size = 0
    buffer, view = _buffer()
    room = len(buffer)
    while count := os.readv(reader, [buffer]):
        chunk = view[:count]
        hasher.update(chunk)
        write_all(writer, chunk)
        size += count
        if count < room and size == expected:
            break
    if size >= checksum.CHUNK:
        checksum.start_writeback(writer)
    return str(hasher.hexdigest()), size


# -- files restores: the local implementation -----------------------------------------------------

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def put_files(source: str, target: str, files: Sequence[PutFile], algorithm: str) -> list[PutResult]:
    """``Host.put_files`` on this machine: both folders opened once, each file opened, made and
    given its metadata relative to them, through its descriptors (no path looked up again)."""
    try:
        reading = os.open(source, _FOLDER)
    except OSError as exc:
        return [PutResult("", 0, exc.errno or errno.EIO) for _ in files]
    try:
        writing = os.open(target, _FOLDER)
        try:
            return [_put(reading, writing, item, algorithm) for item in files]
        finally:
            os.close(writing)
    finally:
        os.close(reading)


def _put(reading: int, writing: int, item: PutFile, algorithm: str) -> PutResult:
    try:
        reader = os.open(item.name, _READ, dir_fd=reading)
    except OSError as exc:
        return PutResult("", 0, exc.errno or errno.EIO)
    try:
        opened = os.fstat(reader)
        if not stat.S_ISREG(opened.st_mode):
            return PutResult("", 0, NOT_REGULAR)
        writer = os.open(item.name, _CREATE, 0o600, dir_fd=writing)
        try:
            put = _copy_into(reader, writer, algorithm, opened.st_size)
            if put.error:
                os.unlink(item.name, dir_fd=writing)
                return put
            _give_metadata(writer, item)
        finally:
            os.close(writer)
    finally:
        os.close(reader)
    return put


def _copy_into(reader: int, writer: int, algorithm: str, expected: int) -> PutResult:
    """What ``reader`` holds, written to ``writer`` and hashed; a read that fails is the result's
    error (a write that fails raises); the writeback of a chunk or more started once written.
    Read up to ``expected`` bytes (its size as opened; no read only to find the end, none past
    it): a file grown since is copied as it was opened, one shrunk as it now is."""
    hasher = checksum.new(algorithm)
    size = 0
    buffer, view = _buffer()
    readv, update, write = os.readv, hasher.update, os.write
    while size < expected:
        try:
            count = readv(reader, [buffer if expected - size >= len(buffer) else view[: expected - size]])
        except OSError as exc:
            return PutResult("", 0, exc.errno or errno.EIO)
        if not count:
            break
        chunk = view[:count]
        update(chunk)
        while chunk:
            chunk = chunk[write(writer, chunk) :]
        size += count
    if size >= checksum.CHUNK:
        checksum.start_writeback(writer)
    return PutResult(hasher.hexdigest(), size)


def _give_metadata(fd: int, item: PutFile) -> None:
    """``Host.set_metadata``'s order on an open file: owner, xattrs (not root, a user xattr needs
    the file writable: before a 0444 mode), permission bits, times."""
    if item.owner is not None:
        os.fchown(fd, *item.owner)
    set_xattrs(fd, item.xattrs, item.name)
    os.fchmod(fd, item.mode)
    os.utime(fd, ns=item.times_ns)
