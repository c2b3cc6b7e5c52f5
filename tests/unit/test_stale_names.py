"""The per-process temporary names a kill leaves (``.<name>.aura-<pid>.tmp`` / ``.link``, written by
``LocalHost.write_atomic`` and ``replace_symlink`` before their rename) are removed by the next
command that takes a lock (``temporaries.sweep``), only when their process is gone."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import aura_ops
from aura_ops import components
from aura_ops.engine.playbook import Playbook
from aura_ops.hosts import LocalHost
from aura_ops.state import temporaries
from aura_ops.state.journal import Journal


@pytest.fixture
def process() -> Iterator[subprocess.Popen[bytes]]:
    """A real process of our own: alive until the test kills it."""
    child = subprocess.Popen(["sleep", "60"])
    yield child
    child.kill()
    child.wait()


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _sweep(config: Any) -> list[dict[str, Any]]:
    """A sweep as the commands call it: with the components' own folders."""
    return temporaries.sweep(config, components.temporary_name_folders(config))


def _config(tmp_path: Path) -> SimpleNamespace:
    app = tmp_path / "app"
    (app / ".aura").mkdir(parents=True)
    release = SimpleNamespace(type="release", host="local", path=app)
    return SimpleNamespace(state=SimpleNamespace(path=tmp_path / "state"), components={"app": release})


def test_a_leftover_of_a_dead_process_is_removed_and_a_live_ones_file_is_kept(
    tmp_path: Path, process: subprocess.Popen[bytes]
) -> None:
    config = _config(tmp_path)
    aura = config.components["app"].path / ".aura"
    dead = aura / f".releases.json.aura-{_dead_pid()}.tmp"
    link = config.components["app"].path / f".current.aura-{_dead_pid()}.link"
    writing = aura / f".releases.json.aura-{process.pid}.tmp"  # another process is writing it now
    mine = aura / f".releases.json.aura-{os.getpid()}.tmp"
    unrelated = aura / ".releases.json.aura-x.tmp"
    for path in (dead, writing, mine, unrelated):
        path.write_text("{}")
    link.symlink_to("releases/v1")
    folder = aura / f".notes.aura-{_dead_pid()}.tmp"
    folder.mkdir()  # a folder is never aura-ops' temporary file
    done = _sweep(config)
    assert not dead.exists() and not os.path.lexists(link)
    assert writing.exists() and mine.exists() and unrelated.exists() and folder.is_dir()
    assert sorted(d["name"] for d in done) == sorted([str(dead), str(link)])
    process.kill()
    process.wait()
    _sweep(config)  # its process is gone now: the next sweep takes it
    assert not writing.exists() and mine.exists()


def test_a_kill_between_write_and_rename_leaves_a_name_the_next_sweep_removes(tmp_path: Path) -> None:
    config = _config(tmp_path)
    target = config.components["app"].path / ".aura" / "releases.json"
    LocalHost().write_atomic(str(target), b"{}")
    # a process killed after writing its temporary file, before the rename
    script = (
        "import os, signal, sys; from aura_ops.hosts import LocalHost; "
        "os.replace = lambda a, b: os.kill(os.getpid(), signal.SIGKILL); "
        f"LocalHost().write_atomic({str(target)!r}, b'new')"
    )
    package_root = str(Path(aura_ops.__file__).parents[1])
    killed = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": package_root}, check=False)
    assert killed.returncode == -9
    left = [p.name for p in target.parent.iterdir() if p.name != "releases.json"]
    assert len(left) == 1 and left[0].startswith(".releases.json.aura-")
    _sweep(config)
    assert [p.name for p in target.parent.iterdir()] == ["releases.json"]
    assert target.read_bytes() == b"{}"


def test_the_folders_of_an_unfinished_runs_literal_file_steps_are_swept(tmp_path: Path) -> None:
    config = _config(tmp_path)
    etc = tmp_path / "etc"
    etc.mkdir()
    book = Playbook.model_validate(
        {
            "name": "conf",
            "steps": [
                {"name": "conf", "action": "file", "with": {"path": str(etc / "app.conf"), "content": "x"}},
                {"name": "later", "action": "file", "with": {"path": "{{ params.where }}", "content": "x"}},
            ],
        }
    )
    journal = Journal(config.state.path / "journal.db")
    journal.create_run("r1", "conf", {}, None, "t", "cli", "h", [("conf", "file")], book.model_dump_json(by_alias=True))
    left = etc / f".app.conf.aura-{_dead_pid()}.tmp"
    left.write_text("half")
    work = config.state.path / "runs" / "r1"
    work.mkdir(parents=True)
    (work / f".conf.content.aura-{_dead_pid()}.tmp").write_text("half")
    _sweep(config)
    assert not left.exists() and list(work.iterdir()) == []
    journal.set_run("r1", "rolled_back")  # a finished run's folders are no longer looked at
    left.write_text("half")
    _sweep(config)
    assert left.exists()
    journal.close()
