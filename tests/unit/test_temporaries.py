"""The registry of temporary objects: recorded before they exist, removed after a kill."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from aura_ops.state import temporaries


def _config(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(state=SimpleNamespace(path=tmp_path / "state"))


def test_a_tracked_folder_is_recorded_before_it_exists_and_removed_after(tmp_path: Path) -> None:
    config = _config(tmp_path)
    folder = tmp_path / "staging"
    with temporaries.bound(config):
        with temporaries.track("path", str(folder)):
            assert [r["name"] for r in temporaries.listing(config)] == [str(folder)]
            folder.mkdir()
            (folder / "pipe").write_text("x")
        assert not folder.exists()
    assert temporaries.listing(config) == []


def test_a_failure_inside_the_block_still_removes_the_object(tmp_path: Path) -> None:
    config = _config(tmp_path)
    folder = tmp_path / "staging"
    with temporaries.bound(config), pytest.raises(RuntimeError), temporaries.track("path", str(folder)):
        folder.mkdir()
        raise RuntimeError("boom")
    assert not folder.exists()
    assert temporaries.listing(config) == []


def test_a_released_object_is_kept_and_forgotten(tmp_path: Path) -> None:
    config = _config(tmp_path)
    folder = tmp_path / "kept"
    with temporaries.bound(config), temporaries.track("path", str(folder)) as temp:
        folder.mkdir()
        temp.release()
    assert folder.is_dir()
    assert temporaries.listing(config) == []


def test_what_a_killed_process_left_is_listed_then_swept(tmp_path: Path) -> None:
    config = _config(tmp_path)
    folder = tmp_path / "left"
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from types import SimpleNamespace
        from aura_ops.state import temporaries
        config = SimpleNamespace(state=SimpleNamespace(path=Path({str(tmp_path / "state")!r})))
        with temporaries.bound(config), temporaries.track("path", {str(folder)!r}):
            Path({str(folder)!r}).mkdir()
            os._exit(137)  # as SIGKILL would: no cleanup runs
        """
    )
    subprocess.run([sys.executable, "-c", script], check=False, env={**os.environ})
    assert folder.is_dir()
    listed = temporaries.listing(config)
    assert [(r["name"], r["owner_alive"]) for r in listed] == [(str(folder), False)]

    done = temporaries.sweep(config)

    assert done == [{"kind": "path", "name": str(folder), "removed": True}]
    assert not folder.exists()
    assert temporaries.listing(config) == []


def test_an_object_of_a_live_process_is_never_swept(tmp_path: Path) -> None:
    config = _config(tmp_path)
    folder = tmp_path / "busy"
    with temporaries.bound(config), temporaries.track("path", str(folder)):
        folder.mkdir()
        assert temporaries.sweep(config) == []
        assert folder.is_dir()


def test_an_unknown_kind_is_refused_before_anything_is_recorded(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with temporaries.bound(config), pytest.raises(ValueError), temporaries.track("nonsense", "x"):
        pass
    assert temporaries.listing(config) == []
