"""One run at a time per target: an flock'ed file that records who holds it.

The kernel drops an flock when its holder dies (SIGKILL, power loss), so a lock can never be
left held by a dead process. The file keeps the last holder's record; finding a record while
the flock is free means the previous holder died: the lock is reported stale and taken over.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import getpass
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aura_ops import logs
from aura_ops.errors import LockedError
from aura_ops.hosts import local_hostname


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_holder(path: Path) -> dict[str, Any] | None:
    """The record in a lock file, or None when it is empty or unreadable."""
    try:
        text = path.read_text()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "an unknown process"
    return (
        f"{holder.get('owner', '?')}@{holder.get('host', '?')} pid {holder.get('pid', '?')}"
        f" (run {holder.get('run_id', '?')}, {holder.get('command', '?')}, "
        f"since {holder.get('started', '?')})"
    )


@contextlib.contextmanager
def hold(path: Path, run_id: str, command: str) -> Iterator[dict[str, Any]]:
    """Hold the lock at ``path`` for the block; raise LockedError naming a live holder."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(path)
            raise LockedError(f"{path} is locked by {describe(holder)}") from None
        previous = read_holder(path)
        if previous:
            state = "alive, lock released" if pid_alive(int(previous.get("pid", 0))) else "dead"
            logs.get().warning("lock.stale_taken_over", lock=str(path), holder=describe(previous), holder_process=state)
        record = {
            "owner": getpass.getuser(),
            "pid": os.getpid(),
            "host": local_hostname(),
            "run_id": run_id,
            "command": command,
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        try:
            yield record
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)
