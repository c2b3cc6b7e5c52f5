"""Temporary objects: recorded in the state folder's journal before they exist, removed after.

Everything aura-ops creates only on the way (a staging or verify database, the live database
renamed aside during a swap, a staging folder of named pipes, a restore's staging tree) is
recorded here, with the process that owns it, *before* it is created, and forgotten once it is
gone or has become the real thing. A process killed in between leaves its record behind: the
next command that takes a lock finds the records whose owner process is gone and puts things
right with the kind's handler (drop, remove, or finish a half-done swap); ``aura-ops doctor``
lists every record while it exists.

Use::

    with temporaries.track("path", str(folder)) as temp:   # recorded before the mkdir
        folder.mkdir()
        ...                                                # removed on exit, whatever happens
        temp.release()                                     # or: it became permanent, keep it

A handler is named in ``HANDLERS`` (kind -> "module:function") and called as
``handler(config, record)``; it must be idempotent (the object may or may not exist) and
return a short description of what it did.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import importlib
import json
import os
import re
import shutil
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aura_ops import logs
from aura_ops.hosts import local_hostname

SCHEMA = """
CREATE TABLE IF NOT EXISTS temporaries (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, name TEXT NOT NULL,
    details TEXT NOT NULL, run_id TEXT, pid INTEGER NOT NULL, pid_start TEXT NOT NULL,
    host TEXT NOT NULL, created TEXT NOT NULL
);
"""

# kind -> "module:function" called as function(config, record) -> str
HANDLERS: dict[str, str] = {
    "path": "aura_ops.state.temporaries:remove_path",
    "dir_swap": "aura_ops.components.files.restorer:finish_or_undo",
    "pg_database": "aura_ops.components.postgres.database:drop_recorded",  # staging, verify or half-built clone
    "pg_swap": "aura_ops.components.postgres.database:settle_recorded",  # a database put in place of another
    "snapshot": "aura_ops.engine.discard:delete_recorded",  # the unused snapshot of a run that changed nothing
}


def process_start(pid: int) -> str:
    """The kernel's start time of ``pid`` (clock ticks since boot), '' when it does not exist.
    A pid with another start time is another process: pids are reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read().decode("ascii", "replace")
    except OSError:
        return ""
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = text[text.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else ""


def owner_alive(record: Temporary) -> bool:
    if record.host != local_hostname():
        return True  # another machine's process: never judged from here
    return bool(record.pid_start) and process_start(record.pid) == record.pid_start


@dataclass
class Temporary:
    """One recorded temporary object."""

    id: int
    kind: str
    name: str
    details: dict[str, Any]
    run_id: str | None
    pid: int
    pid_start: str
    host: str
    created: str
    registry: Registry | None = field(default=None, repr=False, compare=False)
    released: bool = field(default=False, repr=False, compare=False)

    def update(self, **details: Any) -> None:
        """Record progress (e.g. the stage a swap reached) before making it."""
        self.details.update(details)
        if self.registry is not None:
            self.registry._set_details(self.id, self.details)

    def release(self) -> None:
        """The object became permanent (or is already gone): forget it, remove nothing."""
        if self.registry is not None and not self.released:
            self.registry.forget(self.id)
        self.released = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "details": self.details,
            "run_id": self.run_id,
            "pid": self.pid,
            "host": self.host,
            "created": self.created,
            "owner_alive": owner_alive(self),
        }


class Registry:
    """The temporaries table in ``<state>/journal.db`` (created on first use)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "journal.db"
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fresh = not self.path.exists()
            # feeder and worker threads record their objects too
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
            if fresh:
                os.chmod(self.path, 0o600)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def add(self, kind: str, name: str, run_id: str | None = None, **details: Any) -> Temporary:
        """Record an object about to be created; committed (and synced) before this returns."""
        if kind not in HANDLERS:
            raise ValueError(f"no cleanup handler for temporary kind {kind!r}")
        pid = os.getpid()
        record = Temporary(
            0,
            kind,
            name,
            dict(details),
            run_id,
            pid,
            process_start(pid),
            local_hostname(),
            dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            self,
        )
        db = self._conn()
        with db:
            cursor = db.execute(
                "INSERT INTO temporaries (kind, name, details, run_id, pid, pid_start, host, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    kind,
                    _stored(name),
                    json.dumps(record.details),
                    run_id,
                    pid,
                    record.pid_start,
                    record.host,
                    record.created,
                ),
            )
        record.id = int(cursor.lastrowid or 0)
        logs.get().debug("temporary.recorded", kind=kind, name=name)
        return record

    def _set_details(self, record_id: int, details: dict[str, Any]) -> None:
        db = self._conn()
        with db:
            db.execute("UPDATE temporaries SET details = ? WHERE id = ?", (json.dumps(details), record_id))

    def forget(self, record_id: int) -> None:
        db = self._conn()
        with db:
            db.execute("DELETE FROM temporaries WHERE id = ?", (record_id,))

    def all(self) -> list[Temporary]:
        if not self.path.exists():
            return []
        rows = self._conn().execute(
            "SELECT id, kind, name, details, run_id, pid, pid_start, host, created FROM temporaries ORDER BY id"
        )
        return [Temporary(r[0], r[1], _name(r[2]), json.loads(r[3]), r[4], r[5], r[6], r[7], r[8], self) for r in rows]

    def orphans(self) -> list[Temporary]:
        """Records whose owner process is gone (killed): nobody will clean them but us."""
        return [record for record in self.all() if not owner_alive(record)]


def _stored(name: str) -> str | bytes:
    """A name as the table keeps it: text, or the bytes of a path that is not UTF-8 (a file name
    carried as surrogate escapes, which SQLite text cannot hold)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name)
    return name


def _name(stored: str | bytes) -> str:
    return stored if isinstance(stored, str) else os.fsdecode(stored)


# ---------------------------------------------------------------- the process's registry

_current: contextvars.ContextVar[tuple[Any, Registry] | None] = contextvars.ContextVar("temporaries", default=None)


@contextlib.contextmanager
def bound(config: Any) -> Iterator[Registry]:
    """Make ``config``'s registry the one ``track`` records in, for the code inside the block."""
    active = _current.get()
    if active is not None and active[1].path == config.state.path / "journal.db":
        yield active[1]
        return
    registry = Registry(config.state.path)
    token = _current.set((config, registry))
    try:
        yield registry
    finally:
        _current.reset(token)
        registry.close()


def current() -> tuple[Any, Registry]:
    active = _current.get()
    if active is None:
        raise RuntimeError("no temporaries registry bound: wrap the operation in temporaries.bound(config)")
    return active


@contextlib.contextmanager
def track(kind: str, name: str, run_id: str | None = None, **details: Any) -> Iterator[Temporary]:
    """Record a temporary object before the block creates it; on exit, unless released,
    remove it with its kind's handler and forget it (a failed removal keeps the record for
    the next sweep and ``doctor``)."""
    config, registry = current()
    record = registry.add(kind, name, run_id, **details)
    try:
        yield record
    finally:
        if not record.released:
            cleanup(config, record)


def cleanup(config: Any, record: Temporary) -> bool:
    """Run the record's handler; forget the record when it succeeded. True on success."""
    log = logs.get()
    try:
        what = handler(record.kind)(config, record)
    except Exception as exc:  # noqa: BLE001 - kept for the next sweep; reported, never fatal here
        from aura_ops.errors import first_line
        from aura_ops.secrets import mask

        log.warning("temporary.not_removed", kind=record.kind, name=record.name, reason=mask(first_line(exc)))
        return False
    record.release()
    log.info("temporary.removed", kind=record.kind, name=record.name, action=what)
    return True


def handler(kind: str) -> Callable[[Any, Temporary], str]:
    module, _, function = HANDLERS[kind].partition(":")
    found: Callable[[Any, Temporary], str] = getattr(importlib.import_module(module), function)
    return found


def sweep(config: Any, folders: Iterable[Path] = ()) -> list[dict[str, Any]]:
    """Put right what killed processes left (call with a lock held); return what was done:
    the recorded objects, then the per-process temporary names (``remove_stale_names``) in the
    folders aura-ops writes into (``written_folders``) and in ``folders`` (the components'
    own: ``components.temporary_name_folders``, from the caller: the state knows no component)."""
    registry = Registry(config.state.path)
    done = []
    try:
        for record in registry.orphans():
            logs.get().warning("temporary.left_by_killed_process", kind=record.kind, name=record.name, pid=record.pid)
            done.append({"kind": record.kind, "name": record.name, "removed": cleanup(config, record)})
        folders = list(dict.fromkeys([*written_folders(config, registry), *folders]))
    finally:
        registry.close()
    for folder in folders:
        done += [{"kind": "name", "name": name, "removed": True} for name in remove_stale_names(folder)]
    return done


# ---------------------------------------------------------------- per-process temporary names

# What ``LocalHost.write_atomic`` / ``replace_symlink`` write before their rename:
# ``.<name>.aura-<pid>.tmp`` / ``.link`` beside the target. A kill between the write and the
# rename leaves one; the pid in the name says whose it is.
STALE_NAME = re.compile(r"^\..+\.aura-([0-9]+)\.(?:tmp|link)$")


def remove_stale_names(folder: str | Path) -> list[str]:
    """Remove, in ``folder`` on this machine, the per-process temporary files and links whose
    process no longer exists (never one of a live process: it may be writing it; a pid reused
    since keeps its file until that process is gone too); the paths removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:  # no such folder (yet), or not ours to read
        return []
    for entry in entries:
        found = STALE_NAME.match(entry.name)
        if found is None or entry.is_dir(follow_symlinks=False) or process_start(int(found.group(1))):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
            removed.append(entry.path)
            logs.get().warning("temporary.name_left_by_killed_process", path=entry.path, pid=int(found.group(1)))
    return removed


def written_folders(config: Any, registry: Registry) -> list[Path]:
    """The folders on this machine that the engine writes into with per-process temporary
    names: the state folder and the work folders of unfinished runs, and the folders of the
    ``file`` steps of unfinished runs whose path is written literally in the playbook (the
    components' own folders come from the caller of ``sweep``)."""
    state: Path = config.state.path
    folders = [state]
    for run_id, definition in _unfinished_runs(registry):
        folders.append(state / "runs" / run_id)
        for step in definition.get("steps", []):
            path = (step.get("with") or {}).get("path") if step.get("action") == "file" else None
            if isinstance(path, str) and "{" not in path:
                folders.append(Path(path).parent)
    return list(dict.fromkeys(folders))


def _unfinished_runs(registry: Registry) -> list[tuple[str, dict[str, Any]]]:
    """(id, playbook definition) of the journal's unfinished runs; [] before the first run."""
    from aura_ops.state.journal import RUN_FINAL

    if not registry.path.exists():
        return []
    marks = ", ".join("?" * len(RUN_FINAL))
    try:
        rows = registry._conn().execute(
            f"SELECT id, definition FROM runs WHERE status NOT IN ({marks})",  # noqa: S608 - placeholders only
            RUN_FINAL,
        )
        return [(str(row[0]), json.loads(row[1])) for row in rows]
    except sqlite3.OperationalError:  # no runs table: no run was ever journaled here
        return []


def listing(config: Any) -> list[dict[str, Any]]:
    """Every recorded temporary object (for doctor)."""
    registry = Registry(config.state.path)
    try:
        return [record.as_dict() for record in registry.all()]
    finally:
        registry.close()


# ---------------------------------------------------------------- the generic kind


def remove_path(config: Any, record: Temporary) -> str:
    """A temporary file, named pipe or folder on this machine."""
    path = Path(record.name)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
        return "folder removed"
    if os.path.lexists(path):
        path.unlink()
        return "file removed"
    return "already gone"
