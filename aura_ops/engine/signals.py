"""SIGTERM and SIGINT for one engine command: they stop a step, never tear a journal update.

The engine owns both signals for the whole command. Armed, the first one raises
``Interrupted`` at once (its step's process group is killed on the way out) and the run is
compensated; one that arrives while the run's own state changes (created, compensating, ended)
is held until that change is committed. Nested code never replaces this handling
(``snapshots.interruptible`` defers to it).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aura_ops import logs
from aura_ops.errors import Interrupted


class Guard:
    """Armed, a signal raises ``Interrupted`` at once (and disarms: the code that handles it
    decides when the next one may interrupt); disarmed, it is held and raised by the next
    ``arm``, so a journal update is never torn by it."""

    def __init__(self) -> None:
        self.armed = False
        self.pending: str | None = None

    def handler(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if self.armed:
            self.armed = False
            raise Interrupted(f"interrupted by {name}")
        self.pending = self.pending or name

    def arm(self) -> None:
        """Interrupt from now on; raise ``Interrupted`` for a signal held meanwhile."""
        pending, self.pending = self.pending, None
        if pending:
            raise Interrupted(f"interrupted by {pending}")
        self.armed = True

    def disarm(self) -> None:
        self.armed = False


@contextmanager
def guarded() -> Iterator[Guard]:
    """Install a disarmed ``Guard`` for SIGTERM and SIGINT for the block (main thread only: no
    other thread receives signals); the previous handlers come back after it. A signal still
    held at the end is logged: it came after the run's last state change."""
    guard = Guard()
    if threading.current_thread() is not threading.main_thread():
        yield guard
        return
    previous = {s: signal.signal(s, guard.handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield guard
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        if guard.pending:
            logs.get().warning("run.signal_after_end", signal=guard.pending, note="the run had already ended")
