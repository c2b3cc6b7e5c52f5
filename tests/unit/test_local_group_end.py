"""A failed command leaves none of its process group behind (rsync's generator, a shell's
background child), so that undoing its work never races one of them."""

from __future__ import annotations

import os
import signal
import time

from aura_ops.errors import AuraError
from aura_ops.hosts.base import Command
from aura_ops.hosts.local import LocalHost, _live_members


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def test_a_failed_command_leaves_no_process_of_its_group_running() -> None:
    host = LocalHost()
    # the background child keeps no pipe of ours open: it would otherwise hold communicate()
    result = host.run(Command(("sh", "-c", "sleep 60 </dev/null >/dev/null 2>&1 & echo $!; exit 3")), check=False)
    child = int(result.stdout.decode().strip())
    assert result.returncode == 3
    assert not _alive(child)


def test_a_command_that_succeeded_keeps_what_it_started_on_purpose() -> None:
    host = LocalHost()
    result = host.run(Command(("sh", "-c", "sleep 60 </dev/null >/dev/null 2>&1 & echo $!")))
    child = int(result.stdout.decode().strip())
    try:
        assert _alive(child)
    finally:
        os.kill(child, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_live_members_ignores_other_groups() -> None:
    assert _live_members(os.getpgrp())
    assert not _live_members(2**22 + 12345)


def test_a_failed_command_whose_background_child_holds_its_pipes_fails_instead_of_waiting_for_it() -> None:
    host = LocalHost()
    # the child inherits stdout and stderr: communicate() read until it exited (300 s), or a
    # timeout reported the failed command as having timed out
    result = host.run(Command(("sh", "-c", "sleep 300 & echo $!; exit 3")), check=False, timeout=60)
    child = int(result.stdout.decode().strip())
    assert result.returncode == 3
    assert not _alive(child)


def test_a_command_whose_pipes_stay_open_still_times_out() -> None:
    host = LocalHost()
    try:
        host.run(Command(("sh", "-c", "sleep 300")), timeout=1)
    except AuraError as error:
        assert "timed out after 1s" in str(error)
    else:
        raise AssertionError("a command running past its timeout returned")
