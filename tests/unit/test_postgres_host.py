"""The Host operations the postgres component's restore relies on, on LocalHost: a named pipe
opened for writing only once a reader has it (never blocking the poller), and a tool asked to
stop with SIGTERM, killed when it ignores it."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from aura_ops.hosts import Command, LocalHost


def test_a_fifo_writer_is_none_until_a_reader_opens_the_pipe(tmp_path: Path) -> None:
    host = LocalHost()
    pipe = str(tmp_path / "1.dat")
    host.make_fifo(pipe)
    assert host.open_fifo_writer(pipe) is None  # no reader: returns at once
    received: list[bytes] = []

    def read() -> None:
        with open(pipe, "rb") as reader:
            received.append(reader.read())

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 10
    writer = None
    while writer is None and time.monotonic() < deadline:
        writer = host.open_fifo_writer(pipe)
        time.sleep(0.01)
    assert writer is not None
    with writer:
        writer.write(b"x" * 300_000)  # more than a default pipe buffer: writes block, not fail
    reader.join(10)
    assert received == [b"x" * 300_000]


def test_terminate_stops_a_tool_that_honours_sigterm_and_kills_one_that_does_not() -> None:
    host = LocalHost()
    polite = host.start(Command((sys.executable, "-c", "import time; time.sleep(60)")), stdout=None)
    assert polite.poll() is None
    polite.terminate(grace=10)
    assert polite.poll() == -15
    stubborn_code = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(60)"
    )
    stubborn = host.start(Command((sys.executable, "-c", stubborn_code)))
    assert stubborn.stdout is not None and stubborn.stdout.readline() == b"1\n"  # its handler is in place
    started = time.monotonic()
    stubborn.terminate(grace=0.5)
    assert stubborn.poll() == -9
    assert time.monotonic() - started < 30
    assert stubborn.wait(check=False).returncode == -9
