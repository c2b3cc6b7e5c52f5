"""The run journal: a SQLite database (WAL, synchronous=FULL) in the state folder.

Every transition is committed before the side effect it announces goes on, so after a crash
the journal always knows what may have happened: a step marked ``applying`` may or may not
have been applied (its action's ``check`` decides on resume), one marked ``applied`` was, one
marked ``already_applied`` was found done before the run began (not this run's work).

Nothing is written in clear that the secrets registry knows: the engine stores step outputs,
errors and the run's result masked, and secret parameters as ``***`` (never their values).

State travels between a step's apply, its undo and the code that reports a run through the
journal, never through side files: a step's ``saved`` state is what its action recorded before
its side effect for its undo to act on (a replaced file's owner and mode, the release that was
current), kept as it is like identifier outputs; its ``undo`` result is what its compensation
did (e.g. how a migration's undo put the database back), masked. Both columns were added after
the first journals were written: opening an older journal adds them (``_migrate``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aura_ops.errors import UsageError
from aura_ops.repository import check_prefix

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, playbook TEXT NOT NULL, params TEXT NOT NULL,
    idempotency_key TEXT, target TEXT NOT NULL, status TEXT NOT NULL, trigger TEXT,
    host TEXT, pid INTEGER, created TEXT NOT NULL, updated TEXT NOT NULL,
    result TEXT, error TEXT, definition TEXT NOT NULL, rollback INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS runs_by_key ON runs (idempotency_key);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL REFERENCES runs (id), idx INTEGER NOT NULL, name TEXT NOT NULL,
    action TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    outputs TEXT, error TEXT, started TEXT, ended TEXT, saved TEXT, undo TEXT, PRIMARY KEY (run_id, idx)
);
"""
# Columns added to ``steps`` after the first release, with their type: an older journal gains them.
ADDED_STEP_COLUMNS = (("saved", "TEXT"), ("undo", "TEXT"))

COLUMNS = (
    "id, playbook, params, idempotency_key, target, status, trigger, host, pid, created, updated, result, error,"
    " rollback"
)

SELECT_RUNS = f"SELECT {COLUMNS} FROM runs"  # noqa: S608 - constants only, values are bound
SELECT_UNFINISHED = SELECT_RUNS + " WHERE status NOT IN (?, ?, ?, ?) ORDER BY id"  # then by same_target

# run: running -> succeeded | compensating -> rolled_back | rollback_failed; failed (no rollback)
RUN_FINAL = ("succeeded", "rolled_back", "failed", "rollback_failed")
# step: pending -> applying -> applied | failed; applied -> compensating -> compensated;
# pending -> already_applied (its check found it done before this run touched it: an earlier
# run's work, which this run's compensation never undoes)


def same_target(a: str, b: str) -> bool:
    """Whether two runs' targets (state folders) are one folder, however each path was spelled
    (through a symlink, with ``..``): the same journal reached by two config paths is one target."""
    return a == b or os.path.realpath(a) == os.path.realpath(b)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class StepRecord:
    index: int
    name: str
    action: str
    status: str
    attempts: int
    outputs: dict[str, Any]
    error: str | None
    started: str | None
    ended: str | None
    saved: dict[str, Any] | None = None  # recorded by the action before its side effect, for its undo
    undo: dict[str, Any] | None = None  # what its compensation did


@dataclass(frozen=True)
class RunRecord:
    id: str
    playbook: str
    params: dict[str, Any]
    idempotency_key: str | None
    target: str
    status: str
    trigger: str | None
    host: str | None
    pid: int | None
    created: str
    updated: str
    result: dict[str, Any] | None
    error: str | None
    rollback: bool = True  # on a failure: compensate every step (else stop there, see Engine.run)

    @property
    def finished(self) -> bool:
        return self.status in RUN_FINAL

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Journal:
    """Durable record of runs and their steps."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fresh = not path.exists()
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
        if fresh:
            os.chmod(path, 0o600)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Add the columns an older journal lacks: ``runs.rollback`` (default 1, what every run
        before it did) and the ``steps`` columns (their rows read them as NULL); checked again
        inside the write transaction, as another process may have added them meanwhile."""
        if "rollback" not in {row[1] for row in self.db.execute("PRAGMA table_info(runs)")}:  # an older journal
            try:
                self.db.execute("ALTER TABLE runs ADD COLUMN rollback INTEGER NOT NULL DEFAULT 1")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):  # else another process added it meanwhile
                    raise
        if not self._missing_step_columns():
            return
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for name, kind in self._missing_step_columns():
                self.db.execute(f"ALTER TABLE steps ADD COLUMN {name} {kind}")

    def _missing_step_columns(self) -> list[tuple[str, str]]:
        present = {row[1] for row in self.db.execute("PRAGMA table_info(steps)")}
        return [(name, kind) for name, kind in ADDED_STEP_COLUMNS if name not in present]

    def close(self) -> None:
        self.db.close()

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        with self.db:  # one committed transaction per transition
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(sql, args)

    def create_run(
        self,
        run_id: str,
        playbook: str,
        params: dict[str, Any],
        key: str | None,
        target: str,
        trigger: str,
        host: str,
        steps: list[tuple[str, str]],
        definition: str,
        rollback: bool = True,
    ) -> None:
        now = _now()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "INSERT INTO runs (id, playbook, params, idempotency_key, target, status, trigger,"
                " host, pid, created, updated, definition, rollback)"
                " VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    playbook,
                    json.dumps(params),
                    key,
                    target,
                    trigger,
                    host,
                    os.getpid(),
                    now,
                    now,
                    definition,
                    int(rollback),
                ),
            )
            self.db.executemany(
                "INSERT INTO steps (run_id, idx, name, action, status) VALUES (?, ?, ?, ?, 'pending')",
                [(run_id, index, name, action) for index, (name, action) in enumerate(steps)],
            )

    def set_run(self, run_id: str, status: str, result: dict[str, Any] | None = None, error: str | None = None) -> None:
        self._write(
            "UPDATE runs SET status = ?, updated = ?, result = coalesce(?, result),"
            " error = coalesce(?, error) WHERE id = ?",
            (status, _now(), json.dumps(result) if result is not None else None, error, run_id),
        )

    def claim(self, run_id: str) -> None:
        """This process now drives the run (resume / abort)."""
        self._write("UPDATE runs SET pid = ?, updated = ? WHERE id = ?", (os.getpid(), _now(), run_id))

    def step_started(self, run_id: str, index: int, status: str = "applying") -> None:
        """A new attempt (``applying``) clears the step's last error; a compensation keeps it."""
        self._write(
            "UPDATE steps SET status = ?, attempts = attempts + 1, started = ?,"
            " error = CASE WHEN ? = 'applying' THEN NULL ELSE error END WHERE run_id = ? AND idx = ?",
            (status, _now(), status, run_id, index),
        )

    def step_finished(
        self, run_id: str, index: int, status: str, outputs: dict[str, Any] | None = None, error: str | None = None
    ) -> None:
        self._write(
            "UPDATE steps SET status = ?, ended = ?, outputs = coalesce(?, outputs),"
            " error = coalesce(?, error) WHERE run_id = ? AND idx = ?",
            (status, _now(), json.dumps(outputs) if outputs is not None else None, error, run_id, index),
        )

    def save_step_state(self, run_id: str, step: str, state: dict[str, Any]) -> None:
        """Record what step ``step`` will need to undo its work, committed before its side effect."""
        self._write("UPDATE steps SET saved = ? WHERE run_id = ? AND name = ?", (json.dumps(state), run_id, step))

    def step_state(self, run_id: str, step: str) -> dict[str, Any] | None:
        """What ``save_step_state`` recorded for the step, or None."""
        row = self.db.execute("SELECT saved FROM steps WHERE run_id = ? AND name = ?", (run_id, step)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def step_undone(self, run_id: str, step: str, result: dict[str, Any]) -> None:
        """Record what the step's compensation did (masked by the caller)."""
        self._write("UPDATE steps SET undo = ? WHERE run_id = ? AND name = ?", (json.dumps(result), run_id, step))

    def run(self, reference: str) -> RunRecord:
        """The run with this id, or the one whose id starts with ``reference`` (at least 4
        characters, compared literally: ``%`` and ``_`` are not patterns); UsageError otherwise."""
        exact = self.db.execute(SELECT_RUNS + " WHERE id = ?", (reference,)).fetchone()
        if exact:
            return self._run(exact)
        check_prefix(reference, "run id")
        rows = self.db.execute(
            SELECT_RUNS + " WHERE substr(id, 1, ?) = ? ORDER BY id", (len(reference), reference)
        ).fetchall()
        if len(rows) == 1:
            return self._run(rows[0])
        if rows:
            raise UsageError(f"run id {reference!r} is ambiguous: {', '.join(r[0] for r in rows[:10])}")
        raise UsageError(f"unknown run {reference!r}")

    def runs(self, limit: int = 50) -> list[RunRecord]:
        rows = self.db.execute(SELECT_RUNS + " ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [self._run(row) for row in rows]

    def by_key(self, key: str) -> list[RunRecord]:
        rows = self.db.execute(SELECT_RUNS + " WHERE idempotency_key = ? ORDER BY id", (key,)).fetchall()
        return [self._run(row) for row in rows]

    def unfinished(self, target: str) -> list[RunRecord]:
        rows = self.db.execute(SELECT_UNFINISHED, RUN_FINAL).fetchall()
        return [run for run in map(self._run, rows) if same_target(run.target, target)]

    def definition(self, run_id: str) -> str:
        """The playbook exactly as the run started it (resume never re-reads the file)."""
        return str(self.db.execute("SELECT definition FROM runs WHERE id = ?", (run_id,)).fetchone()[0])

    def references(self, text: str, except_run: str | None = None) -> list[str]:
        """The runs (other than ``except_run``) whose definition, parameters, result or step
        outputs / saved state contain ``text`` (e.g. a snapshot id a run or a rollback acts on)."""
        rows = self.db.execute(
            "SELECT DISTINCT r.id FROM runs r LEFT JOIN steps s ON s.run_id = r.id"
            " WHERE r.id IS NOT ? AND (instr(r.params, ?) OR instr(r.definition, ?) OR instr(coalesce(r.result, ''), ?)"
            " OR instr(coalesce(s.outputs, ''), ?) OR instr(coalesce(s.saved, ''), ?)) ORDER BY r.id",
            (except_run, *([text] * 5)),
        ).fetchall()
        return [str(row[0]) for row in rows]

    def steps(self, run_id: str) -> list[StepRecord]:
        rows = self.db.execute(
            "SELECT idx, name, action, status, attempts, outputs, error,"
            " started, ended, saved, undo FROM steps WHERE run_id = ? ORDER BY idx",
            (run_id,),
        ).fetchall()
        return [
            StepRecord(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                json.loads(r[5]) if r[5] else {},
                r[6],
                r[7],
                r[8],
                json.loads(r[9]) if r[9] else None,
                json.loads(r[10]) if r[10] else None,
            )
            for r in rows
        ]

    @staticmethod
    def _run(row: tuple[Any, ...]) -> RunRecord:
        return RunRecord(
            row[0],
            row[1],
            json.loads(row[2]),
            row[3],
            row[4],
            row[5],
            row[6],
            row[7],
            row[8],
            row[9],
            row[10],
            json.loads(row[11]) if row[11] else None,
            row[12],
            bool(row[13]),
        )
