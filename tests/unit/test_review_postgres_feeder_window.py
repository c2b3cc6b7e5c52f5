"""Review of the restore feeder's window of waiting threads (issue 12): whatever goes wrong in
the thread that hands the pipes out, the restore ends within seconds with that cause, never a
hang of pg_restore in the open of a pipe no thread will ever feed.

pg_restore is played by a real process (python) that reads every pipe of the staging folder in
turn: a SIGTERM ends it as it ends pg_restore, even while it waits in the open of a pipe.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import zstandard

from aura_ops.components import postgres
from aura_ops.components.postgres import PostgresComponent
from aura_ops.errors import AuraError, VerificationError
from aura_ops.hosts import Command, LocalHost
from aura_ops.state import temporaries
from tests.unit.test_postgres_feeder import _snapshot

READ_EVERY_PIPE = (
    "import pathlib, sys\nfor pipe in sorted(pathlib.Path(sys.argv[1]).glob('*.dat')):\n    pipe.read_bytes()"
)


@pytest.fixture(autouse=True)
def _pipes_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every data file through a pipe (none small enough to be written out whole)."""
    monkeypatch.setattr(postgres, "SMALL_TOTAL", 0)


class _ProcessRestore(LocalHost):
    """This machine; pg_restore is a process that reads each pipe of the staging folder in order."""

    def __init__(self) -> None:
        super().__init__("local")
        self.processes: list[Any] = []

    def start(self, command: Command, **options: Any) -> Any:
        process = super().start(Command((sys.executable, "-c", READ_EVERY_PIPE, command.argv[-1])), **options)
        self.processes.append(process)
        return process


_REAL_THREAD = threading.Thread


class _NoSecondWaiter(_REAL_THREAD):
    """A thread that cannot be started for the second pipe handed to a waiting thread, as when
    the process reaches its limit of threads (RuntimeError: can't start new thread)."""

    waiters = 0

    def start(self) -> None:
        target = getattr(self, "_target", None)
        if getattr(target, "__name__", "") == "_serve":
            type(self).waiters += 1
            if type(self).waiters == 2:
                raise RuntimeError("can't start new thread")
        super().start()


def test_a_thread_that_cannot_be_started_for_a_pipe_ends_the_restore_with_that_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = _snapshot(tmp_path, wrong_hash_for=None)
    host = _ProcessRestore()
    config = SimpleNamespace(state=SimpleNamespace(path=tmp_path / "state"))
    outcome: list[BaseException | None] = []
    done = threading.Event()
    monkeypatch.setattr(threading, "Thread", _NoSecondWaiter)

    def restore() -> None:
        try:
            with temporaries.bound(config):
                component = PostgresComponent("db", None, host)
                component._run_restore(snapshot, component.recorded(snapshot), postgres.Connection({"dbname": "t"}), 1)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            outcome.append(exc)
        done.set()

    _REAL_THREAD(target=restore, daemon=True).start()
    try:
        assert done.wait(30), "pg_restore hung in the open of a pipe no thread feeds"
    finally:
        for process in host.processes:
            process.terminate(1)
    error = outcome[0]
    assert isinstance(error, AuraError) and not isinstance(error, VerificationError)
    assert str(error) == "db: cannot feed pg_restore: can't start new thread"


class _Sink:
    """A pipe's write end that keeps what is written."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize(
    "after", [zstandard.ZstdCompressor(write_checksum=True).compress(b"2\tsecond frame\n"), b"\0", b"garbage"]
)
def test_an_artifact_with_bytes_after_its_frame_is_refused_not_restored_short(tmp_path: Path, after: bytes) -> None:
    """aura-ops writes each data file as one zstd frame and nothing after it: a file with more (a
    second frame, as ``zstd -d`` would decompress too, or any other bytes) is not what the backup
    wrote, even with its hash recorded; restoring its first frame alone would restore a part."""
    first = zstandard.ZstdCompressor(write_checksum=True).compress(b"1\tfirst frame\n")
    source = tmp_path / "1.dat.zst"
    source.write_bytes(first + after)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    host = LocalHost()
    feeder = postgres._Feeder(
        {}, 1, "sha256", host.open_fifo_writer_waiting, host.open_fifo_reader, host.open_read, host.open_fifo_writer
    )
    problem = feeder._copy(str(source), _Sink(), digest)  # type: ignore[arg-type]
    assert problem == "cannot be decompressed: data after the end of its frame"
    whole = tmp_path / "2.dat.zst"
    whole.write_bytes(first)
    sink = _Sink()
    assert feeder._copy(str(whole), sink, hashlib.sha256(first).hexdigest()) is None  # type: ignore[arg-type]
    assert bytes(sink.data) == b"1\tfirst frame\n"
