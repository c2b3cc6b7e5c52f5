"""A signal while the postgres snapshot counts rows (pg_dump running beside it) stays an
interruption: stopping pg_dump makes it fail too, and that failure must never pass for the cause
(the engine would report pg_dump's failure, and a step with ``on_failure: continue`` would let
the run go on and succeed after a SIGTERM: test_engine's signal test was flaky for this)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from aura_ops.components import postgres
from aura_ops.errors import Interrupted


class _Dump:
    """pg_dump as ``_cancel_if_failed`` watches it: running until terminated, then exit 1 (as
    'pg_dump: terminated by user'); terminating takes long enough for the watcher to see it."""

    def __init__(self) -> None:
        self.returncode: int | None = None
        self.terminated = threading.Event()

    def poll(self) -> int | None:
        return self.returncode

    def terminate(self, grace: float = 5.0) -> None:
        self.returncode = 1
        self.terminated.set()
        threading.Event().wait(0.6)  # the watcher polls every 0.2 s: it sees the failure meanwhile


class _Db:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel_safe(self) -> None:
        self.cancelled = True


def test_an_interruption_while_counting_rows_stops_pg_dump_and_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(db: Any, checksums: bool) -> dict[str, Any]:
        raise Interrupted("interrupted by SIGTERM")

    monkeypatch.setattr(postgres, "database_facts", interrupted)
    dump = _Dump()
    with pytest.raises(Interrupted):
        postgres._facts_while_dumping(dump, _Db(), True)  # type: ignore[arg-type]
    assert dump.terminated.is_set()


def test_pg_dump_failing_first_cancels_the_count_and_its_failure_is_the_one_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dump, db = _Dump(), _Db()

    def cancelled_when_pg_dump_fails(db_: Any, checksums: bool) -> dict[str, Any]:
        dump.returncode = 1  # pg_dump died on its own: the watcher cancels the query
        for _ in range(50):
            if db.cancelled:
                raise RuntimeError("canceling statement due to user request")
            threading.Event().wait(0.05)
        raise AssertionError("the query was never cancelled")

    monkeypatch.setattr(postgres, "database_facts", cancelled_when_pg_dump_fails)
    assert postgres._facts_while_dumping(dump, db, True) == {}  # type: ignore[arg-type]
