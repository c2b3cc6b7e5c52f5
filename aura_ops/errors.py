"""One error root; each child carries the exit code DESIGN.md documents.

Every failure a user can meet travels as one of these, raised where it arises (a library's own
exception is translated at the seam that calls it), up to the CLI edge (``cli.main``), which
turns it into one masked line and its exit code: the only place exit codes are decided. A
command that has a report to show for a failure (a run's steps, every problem a verification
found) prints it first and lets the error go on to the edge. The one exception to the root is
``Interrupted`` (see there); the edge maps it with the others.

Children defined beside their seam also derive from ``AuraError``: ``CheckFailed``
(engine.checks), ``PreflightFailed`` (deploy), ``VerifyFailed`` (workflows.snapshots),
``SwapConflict`` (components.postgres.database), ``CloneError`` (components.postgres.clone).
"""

from __future__ import annotations

import signal

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_VERIFY = 3
EXIT_ROLLBACK = 4
EXIT_LOCKED = 5
EXIT_UNREACHABLE = 6

EXIT_CODES_HELP = """\b
Exit codes:
  0  success, or nothing to do
  1  operation failed; nothing changed or it was fully rolled back
  2  usage, configuration or environment error (bad config, unknown id, tool missing)
  3  verification failed (checksum mismatch, restore differs from the manifest)
  4  rollback failed: the system needs a human
  5  locked by another run, or an interrupted run must be resumed or aborted first
  6  a remote host or service is unreachable"""


def first_line(exc: BaseException) -> str:
    """An exception as the one line a user reads: its message's first line, else its repr."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)


class AuraError(Exception):
    """Root of every error aura-ops reports to a user. ``retryable``: a step's ``retries`` may
    try again after it (False for a statement the database refused: not transient, and a
    connection lost at its commit may have committed it)."""

    exit_code = EXIT_FAILED
    retryable = True


class ConfigError(AuraError):
    """The configuration file is missing, malformed or invalid."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or []
        detail = "".join(f"\n  {p}" for p in self.problems)
        super().__init__(message + detail)


class UsageError(AuraError):
    """The command line asks for something that cannot be (unknown id, bad option)."""

    exit_code = EXIT_USAGE


class ToolMissing(AuraError):
    """A program aura-ops drives is not installed or too old."""

    exit_code = EXIT_USAGE


class StateError(AuraError):
    """The state folder (journal, run lock) cannot be used: not a folder, not writable, a journal
    that is not one. Nothing was changed."""

    exit_code = EXIT_USAGE


class RepositoryError(AuraError):
    """The repository's folder cannot be used (a file in its place, no permission to make or
    own it): nothing was changed."""

    exit_code = EXIT_USAGE


class VerificationError(AuraError):
    """A snapshot or a restore does not match what was recorded."""

    exit_code = EXIT_VERIFY


class RollbackError(AuraError):
    """Undoing a failed operation failed; a human must look."""

    exit_code = EXIT_ROLLBACK


class LockedError(AuraError):
    """Another run holds the lock."""

    exit_code = EXIT_LOCKED


class PrivilegeError(AuraError):
    """The role lacks a privilege the operation needs (CREATEDB, SELECT on a table, ...): exit 1,
    the message names the privilege."""

    exit_code = EXIT_FAILED


class UnreachableError(AuraError):
    """A host or a service (database, endpoint) does not answer."""

    exit_code = EXIT_UNREACHABLE


class StepFailed(AuraError):
    """A playbook step failed after its retries: the engine compensates the run, or stops it."""

    def __init__(self, step: str, reason: str) -> None:
        self.step = step
        self.reason = reason
        super().__init__(f"step {step} failed: {reason}")


class RunFailed(AuraError):
    """A run failed: every step it applied was undone, or (no rollback asked) it stopped at the
    failure with its services running. The message says which, and how to undo the rest."""


class ChecksFailed(AuraError):
    """Checks made before anything is changed failed (``doctor``; a deploy's preflight is its
    child ``PreflightFailed``); the exit code is the worst failed check's (2 a tool or setting,
    3 a damaged snapshot, 6 unreachable, else 1)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class PartlyRestored(AuraError):
    """A restore of several components failed at one of them after others were put in place:
    each component is whole (old or new, never a mix within one), but they are now from
    different times. The message names what was restored, what was not and why, and the command
    that finishes the restore; the exit code is the failure's own."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT stopped what was being done (exit 1); the message names the signal.

    Deliberately not an ``AuraError``: a BaseException (through KeyboardInterrupt), so that no
    ``except Exception`` on its way swallows it (a step's failure handler, a retry loop, a
    cleanup that logs and goes on). Only the code that owns the signal decides what follows: the
    engine's guard (stop the step, compensate the run) or ``snapshots.interruptible`` (discard
    the partial snapshot). ``finally`` blocks and context managers still run. The CLI edge maps
    it to ``exit_code`` in the same place as every ``AuraError``."""

    exit_code = EXIT_FAILED


class CommandFailed(AuraError):
    """A command exited non-zero; the message names host, masked command, code and stderr tail."""

    def __init__(self, host: str, command: str, returncode: int, stderr_tail: str) -> None:
        self.host = host
        self.command = command
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        tail = stderr_tail.strip()
        last = tail.splitlines()[-1] if tail else "no output on stderr"
        super().__init__(f"on {host}: `{command}` {_how_it_ended(returncode)}: {last}")


def _how_it_ended(returncode: int) -> str:
    """``exited N``, or for a command a signal ended (a negative code) ``was killed by SIGKILL``."""
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited {returncode}"
