"""Hosts: the one chokepoint through which every subprocess starts.

A command is a value (``Command``: argv plus env, never a shell string). A ``Host`` runs it,
logs it masked, enforces timeouts, and turns a failure into ``CommandFailed`` naming the host,
the masked command, the exit code and the last lines of stderr. ``LocalHost`` runs commands
with ``subprocess``; an SSH host implements the same interface.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import ctypes.util
import os
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from aura_ops import logs
from aura_ops.errors import AuraError, CommandFailed, ToolMissing
from aura_ops.secrets import mask

STDERR_TAIL_LINES = 20
PIPE = subprocess.PIPE


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


class Process(Protocol):
    """A running command whose output is streamed."""

    stdout: IO[bytes] | None

    def stderr_lines(self) -> Iterator[str]: ...
    def drain_in_background(self, on_line: Callable[[str], None] | None = None) -> None: ...
    def wait(self, check: bool = True, timeout: float | None = None) -> Result: ...
    def kill(self) -> None: ...


class Host(Protocol):
    """Where commands run. ``name`` appears in every log line and error."""

    name: str

    def run(
        self,
        command: Command,
        *,
        stdin: bytes | IO[bytes] | None = None,
        stdout: IO[bytes] | int | None = PIPE,
        timeout: float | None = None,
        check: bool = True,
    ) -> Result: ...

    def start(self, command: Command, *, stdout: IO[bytes] | int | None = PIPE) -> Process: ...

    def which(self, program: str) -> str | None: ...


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
    libc_name = ctypes.util.find_library("c")
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl if libc_name else None
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

    def kill(self) -> None:
        """Kill the command's whole process group (what it started too), then reap it."""
        if self.popen.returncode is None:  # not reaped yet: its pid still names only its group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


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
        stdin: IO[bytes] | int | None = subprocess.DEVNULL,
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
            captured, errors = process.popen.communicate(input=feed, timeout=timeout)
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


def local_hostname() -> str:
    return socket.gethostname()
