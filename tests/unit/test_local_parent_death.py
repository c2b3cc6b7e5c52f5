"""A process LocalHost starts dies with aura-ops (PR_SET_PDEATHSIG through the host's preexec),
whichever way the C library is found."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aura_ops

_PARENT = """
import subprocess, sys, time
from aura_ops.hosts.local import _PREEXEC
child = subprocess.Popen(["sleep", "120"], preexec_fn=_PREEXEC)
print(child.pid, flush=True)
time.sleep(120)
"""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # dead, waiting for init to reap it


def test_a_started_process_is_killed_when_aura_ops_is_killed() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(aura_ops.__file__).parents[1])}
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True, env=env)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        assert not _gone(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=60)
        deadline = time.monotonic() + 60
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(child)
    finally:
        if not _gone(child):
            os.kill(child, signal.SIGKILL)
