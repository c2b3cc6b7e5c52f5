"""The CLI edge prints a failure's one-line reason once: a failed run's message is not printed a
second time above its error line, and an interrupted command prints no blank line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import aura_ops
from aura_ops import errors


def _cli(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AURA_")}
    env["PYTHONPATH"] = str(Path(aura_ops.__file__).parents[1])
    return subprocess.Popen(
        [sys.executable, "-m", "aura_ops", "--config", str(tmp_path / "aura.yaml"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a").write_text("a\n")
    config = {
        "repository": {"path": "repo"},
        "components": {"stuff": {"type": "files", "path": str(tmp_path / "data")}},
    }
    (tmp_path / "aura.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def _book(site: Path, argv: list[str]) -> Path:
    book = site / "book.yaml"
    book.write_text(
        yaml.safe_dump({"name": "book", "steps": [{"name": "gate", "action": "command", "with": {"argv": argv}}]})
    )
    return book


def test_a_failed_run_prints_its_message_once_as_the_error_line(site: Path) -> None:
    process = _cli(site, "run", str(_book(site, ["false"])))
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1
    (line,) = [line for line in err.splitlines() if line.startswith("aura-ops: error:")]
    message = line.removeprefix("aura-ops: error: ")
    assert "every applied step was undone" in message
    assert message not in out  # the report shows the steps; the reason is the one error line
    assert "gate" in out and "rolled_back" in out


def test_the_edge_prints_an_interruption_without_a_blank_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from aura_ops.cli import base as commands

    def interrupted(self: commands.State) -> None:
        raise errors.Interrupted("interrupted by SIGTERM; nothing was committed")

    monkeypatch.setattr(commands.State, "load", interrupted)
    umask = os.umask(0o022)  # main() sets the process umask: put it back for the other tests
    try:
        with pytest.raises(SystemExit) as exited:
            commands.main(["snapshots", "list"])
    finally:
        os.umask(umask)
    assert exited.value.code == errors.EXIT_FAILED
    out, err = capsys.readouterr()
    assert err == "aura-ops: error: interrupted by SIGTERM; nothing was committed\n"
    assert out == ""


def test_a_plain_keyboard_interrupt_is_still_an_abort_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from aura_ops.cli import base as commands

    def interrupted(self: commands.State) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(commands.State, "load", interrupted)
    umask = os.umask(0o022)
    try:
        with pytest.raises(SystemExit) as exited:
            commands.main(["snapshots", "list"])
    finally:
        os.umask(umask)
    assert exited.value.code == errors.EXIT_FAILED
    assert capsys.readouterr().err == "aura-ops: error: aborted; nothing was changed\n"
