"""Test hooks that stop the process at a named point, as a crash or a stall would there.

``AURA_FAULT=<point>`` makes the process exit at once with status 137, as SIGKILL would (no
cleanup, no ``finally``); ``AURA_PAUSE=<point>`` makes it stop itself (SIGSTOP) until a test
sends SIGCONT, so the test can act at that exact moment. Points are named ``<what>:<where>``:
a playbook step (``migrate:before``, ``upload:after``) or a point of an operation
(``swap:after-rename-away``). Unset in normal use: then a point costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "AURA_FAULT"
PAUSE_ENV = "AURA_PAUSE"


def point(name: str) -> None:
    """Exit (AURA_FAULT) or stop (AURA_PAUSE) here when the environment names this point;
    ``AURA_FAULT=<point>:<SIGNAL>`` (e.g. ``config:applied:SIGTERM``) sends that signal instead,
    ``AURA_FAULT=<point>:BUG`` raises a RuntimeError there."""
    wanted = os.environ.get(FAULT_ENV)
    if wanted == name:
        os._exit(137)
    if wanted == name + ":BUG":  # an unexpected exception there, as a bug in the code would raise
        raise RuntimeError(f"injected bug at {name}")
    if wanted and wanted.startswith(name + ":SIG") and wanted[len(name) + 1 :] in signal.Signals.__members__:
        os.kill(os.getpid(), signal.Signals[wanted[len(name) + 1 :]])
        return
    if os.environ.get(PAUSE_ENV) == name:
        os.kill(os.getpid(), signal.SIGSTOP)
