"""One error root with its exit codes, the engine's signal guard, and how a run's outcome
carries its error."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from aura_ops import errors
from aura_ops.components.postgres.clone import CloneError
from aura_ops.components.postgres.database import SwapConflict
from aura_ops.deploy import PreflightFailed
from aura_ops.engine.checks import CheckFailed
from aura_ops.engine.outcome import Outcome
from aura_ops.engine.signals import Guard
from aura_ops.state.journal import Journal
from aura_ops.workflows.snapshots import VerifyFailed


def test_every_error_a_user_meets_derives_from_the_root_with_a_documented_exit_code() -> None:
    documented = {0, 1, 2, 3, 4, 5, 6}
    classes = [
        value
        for value in vars(errors).values()
        if isinstance(value, type) and issubclass(value, errors.AuraError) and value is not errors.AuraError
    ]
    classes += [CheckFailed, PreflightFailed, VerifyFailed, SwapConflict, CloneError]
    assert len(classes) > 15
    for cls in classes:
        assert issubclass(cls, errors.AuraError), cls
        assert cls.exit_code in documented - {0}, cls
    assert VerifyFailed.exit_code == errors.EXIT_VERIFY
    assert errors.RollbackError.exit_code == errors.EXIT_ROLLBACK
    assert errors.StateError.exit_code == errors.EXIT_USAGE


def test_an_interruption_passes_every_except_exception_and_still_has_an_exit_code() -> None:
    with pytest.raises(errors.Interrupted):
        try:
            raise errors.Interrupted("interrupted by SIGTERM")
        except Exception:  # noqa: BLE001 - what the interruption must pass
            pytest.fail("an interruption was caught as an Exception")
    assert not issubclass(errors.Interrupted, Exception)
    assert errors.Interrupted.exit_code == errors.EXIT_FAILED


def test_checks_failed_takes_the_worst_checks_exit_code() -> None:
    assert errors.ChecksFailed("doctor: 1 check(s) failed", 6).exit_code == 6
    assert PreflightFailed("preflight failed", 2).exit_code == 2
    assert str(errors.StepFailed("migrate", "exited 1")) == "step migrate failed: exited 1"


def test_the_guard_interrupts_when_armed_and_holds_a_signal_while_disarmed() -> None:
    guard = Guard()
    guard.handler(signal.SIGTERM, None)  # disarmed: held, nothing raised
    assert guard.pending == "SIGTERM"
    with pytest.raises(errors.Interrupted, match="SIGTERM"):
        guard.arm()  # the held signal comes out as soon as interrupting is allowed again
    guard.arm()
    with pytest.raises(errors.Interrupted, match="SIGINT"):
        guard.handler(signal.SIGINT, None)
    assert not guard.armed  # the code that handles it decides when the next one may interrupt


def test_an_outcome_takes_its_exit_code_and_message_from_its_error(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    journal.create_run("r1", "book", {}, None, "target", "cli", "host", [("a", "command")], "{}")
    succeeded = Outcome.read(journal, "r1", "run r1 succeeded")
    assert (succeeded.exit_code, succeeded.error) == (0, None)
    failed = Outcome.read(journal, "r1", errors.RunFailed("run r1 failed (x); every applied step was undone"))
    assert failed.exit_code == 1 and failed.message.startswith("run r1 failed")
    worse = failed.failed(errors.RollbackError("rolled back, but the old version is not healthy"))
    assert worse.as_dict()["exit_code"] == 4 and worse.as_dict()["message"].startswith("rolled back")
    journal.close()


def test_the_cli_edge_reports_an_interruption_as_itself_with_its_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from aura_ops.cli import base as commands

    def interrupted(self: commands.State) -> None:
        raise errors.Interrupted("interrupted by SIGTERM; nothing was committed")

    monkeypatch.setattr(commands.State, "load", interrupted)
    umask = os.umask(0o022)  # main() sets the process umask: put it back for the other tests
    try:
        with pytest.raises(SystemExit) as exited:
            commands.main(["snapshots", "list", "--json"])
    finally:
        os.umask(umask)
    assert exited.value.code == errors.EXIT_FAILED
    out, err = capsys.readouterr()
    assert "aura-ops: error: interrupted by SIGTERM; nothing was committed" in err.splitlines()
    assert json.loads(out) == {
        "ok": False,
        "error": "interrupted by SIGTERM; nothing was committed",
        "exit_code": errors.EXIT_FAILED,
    }


def test_a_command_a_signal_ended_is_said_killed_by_that_signal_not_a_negative_exit() -> None:
    killed = errors.CommandFailed("local", "rsync -a a/ b/", -9, "rsync error: error in socket IO (code 10)\n")
    assert str(killed) == "on local: `rsync -a a/ b/` was killed by SIGKILL: rsync error: error in socket IO (code 10)"
    assert str(errors.CommandFailed("local", "rsync", 23, "")) == "on local: `rsync` exited 23: no output on stderr"
