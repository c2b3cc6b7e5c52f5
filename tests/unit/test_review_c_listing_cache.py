"""Review of the start-up and listing changes: the verified cache that ``snapshots list`` and
``stats`` now also write, without the repository lock (a read command that writes). Its save must
never wait on, or write through, whatever sits at a fixed temporary name, and two commands saving
at once (a list beside a verify) must both succeed, the cache left whole."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from aura_ops.repository.verified import VerifiedCache


def _cache(tmp_path: Path, entries: dict[str, str]) -> VerifiedCache:
    cache = VerifiedCache(tmp_path / "repo" / "cache" / "verified-files.json")
    cache.entries.update(entries)
    return cache


def test_a_fifo_planted_at_the_temporary_name_never_blocks_a_save(tmp_path: Path) -> None:
    cache = _cache(tmp_path, {"1:2:3:4:5": "ab"})
    cache.path.parent.mkdir(parents=True)
    fifo = cache.path.with_name(cache.path.name + ".tmp")
    os.mkfifo(fifo)
    errors: list[BaseException] = []

    def save() -> None:
        try:
            cache.save()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    saver = threading.Thread(target=save, daemon=True)
    saver.start()
    saver.join(20)
    stuck = saver.is_alive()
    if stuck:  # let the blocked open go on (a reader), so that the thread ends
        with open(fifo, "rb") as reader:
            reader.read()
        saver.join(20)
    assert not stuck, "saving the verified cache waited on a FIFO at its temporary name"
    assert not errors
    assert json.loads(cache.path.read_text()) == {"1:2:3:4:5": "ab"}


def test_a_symlink_planted_at_the_temporary_name_is_never_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("not the cache's\n")
    cache = _cache(tmp_path, {"1:2:3:4:5": "ab"})
    cache.path.parent.mkdir(parents=True)
    cache.path.with_name(cache.path.name + ".tmp").symlink_to(victim)
    cache.save()
    assert victim.read_text() == "not the cache's\n"
    assert json.loads(cache.path.read_text()) == {"1:2:3:4:5": "ab"}
    assert cache.path.is_file() and not cache.path.is_symlink()
    assert oct(cache.path.stat().st_mode & 0o777) == oct(0o600)


def test_two_saves_at_once_both_succeed_and_leave_a_whole_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``snapshots list`` saving while a ``verify`` saves: the second one finishes between the
    first one's write and its rename. With one shared temporary name the first rename finds its
    file gone (FileNotFoundError: verify crashed after a verification that passed)."""
    listing = _cache(tmp_path, {"1:1:1:1:1": "aa"})
    verify = _cache(tmp_path, {"1:1:1:1:1": "aa", "2:2:2:2:2": "bb"})
    real_replace = os.replace
    nested = {"done": False}

    def replace(source: Any, target: Any) -> None:
        if not nested["done"]:
            nested["done"] = True
            listing.save()  # the other command's whole save, right before this rename
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    verify.save()
    assert nested["done"]
    assert json.loads(verify.path.read_text()) == {"1:1:1:1:1": "aa", "2:2:2:2:2": "bb"}  # the last rename's
    assert sorted(p.name for p in verify.path.parent.iterdir()) == ["verified-files.json"]  # no temporary left


def test_the_space_cache_is_saved_the_same_way(tmp_path: Path) -> None:
    """``cache/space.json`` (own and shared sizes), also written by ``snapshots list`` without
    the lock: a symlink at its old fixed temporary name is not written through, and a FIFO
    there is not waited on (write_cache, as the verified cache)."""
    from aura_ops.repository.backend import write_cache

    victim = tmp_path / "victim.txt"
    victim.write_text("not the cache's\n")
    path = tmp_path / "repo" / "cache" / "space.json"
    path.parent.mkdir(parents=True)
    path.with_name(path.name + ".tmp").symlink_to(victim)
    write_cache(path, {"version": 1, "snapshots": {}})
    assert victim.read_text() == "not the cache's\n"
    assert json.loads(path.read_text()) == {"version": 1, "snapshots": {}}
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    path.with_name(path.name + ".tmp").unlink()
    os.mkfifo(path.with_name(path.name + ".tmp"))
    done = threading.Event()
    threading.Thread(target=lambda: (write_cache(path, {"v": 2}), done.set()), daemon=True).start()
    assert done.wait(20), "saving the space cache waited on a FIFO at a fixed temporary name"
    assert json.loads(path.read_text()) == {"v": 2}
    assert sorted(p.name for p in path.parent.iterdir()) == ["space.json", "space.json.tmp"]  # the FIFO, left alone


def test_the_space_module_writes_its_cache_through_write_cache() -> None:
    import inspect

    from aura_ops.repository import space

    source = inspect.getsource(space)
    assert "write_cache(" in source and "write_json(" not in source
