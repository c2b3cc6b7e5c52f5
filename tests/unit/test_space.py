"""Space accounting: own and shared sizes of snapshots that hard-link files, their cache, the
reserve's parsing, the estimate of the next snapshot and the free-space guard."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from aura_ops import config as config_module
from aura_ops.errors import ConfigError
from aura_ops.repository import Repository, space

IDS = [f"20250101-00000{i}-000" for i in range(6)]


def _disk(path: Path) -> int:
    return os.lstat(path).st_blocks * 512


def _seal(repo: Repository, snapshot_id: str, files: dict[str, bytes | Path], **section: Any) -> Path:
    """A snapshot with one files-like component ``site``: each name is new bytes, or a hard link
    to a path (in an earlier snapshot, or earlier in this one)."""
    folder = repo.begin(snapshot_id)
    (folder / "site").mkdir()
    for name, content in files.items():
        target = folder / "site" / name
        if isinstance(content, Path):
            os.link(content if content.is_absolute() else folder / "site" / content, target)
        else:
            target.write_bytes(content)
    manifest = {"format": 2, "id": snapshot_id, "created": "2025-01-01T00:00:00+00:00"}
    repo.commit(snapshot_id, manifest | {"components": {"site": {"type": "files", **section}}})
    return repo.snapshots_dir / snapshot_id / "site"


def _fixed(repo: Repository, snapshot_id: str) -> int:
    """What every snapshot owns besides its files: its component's folder, manifest and checksum
    file (the snapshot's folder itself, one block, is not counted)."""
    folder = repo.snapshots_dir / snapshot_id
    paths = [folder / "site", folder / "manifest.json", repo.snapshots_dir / f"{snapshot_id}.sha256"]
    return sum(_disk(p) for p in paths)


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    repository = Repository(tmp_path / "repo")
    repository.ensure()
    return repository


def test_a_file_hard_linked_by_the_next_snapshot_is_shared_by_both(repo: Repository) -> None:
    first = _seal(repo, IDS[0], {"kept": os.urandom(20000), "changed": os.urandom(9000)})
    second = _seal(repo, IDS[1], {"kept": first / "kept", "changed": os.urandom(5000)}, previous=IDS[0])
    sizes = space.usage(repo, repo.all_snapshots())
    kept = _disk(first / "kept")
    assert sizes[IDS[0]].own == _fixed(repo, IDS[0]) + _disk(first / "changed")
    assert sizes[IDS[0]].shared == kept
    assert sizes[IDS[1]].own == _fixed(repo, IDS[1]) + _disk(second / "changed")
    assert sizes[IDS[1]].shared == kept
    # the portions add up to what the snapshots take on disk together, each file once
    total = sum(u.portion for u in sizes.values())
    assert total == _fixed(repo, IDS[0]) + _fixed(repo, IDS[1]) + kept + _disk(first / "changed") + _disk(
        second / "changed"
    )
    assert sizes[IDS[1]].parts["site"].shared == kept and sizes[IDS[1]].parts[space.MANIFEST_PART].shared == 0


def test_a_file_whose_links_are_all_inside_one_snapshot_is_its_own(repo: Repository) -> None:
    site = _seal(repo, IDS[0], {"a": os.urandom(30000), "b": Path("a"), "c": Path("a")})
    assert os.lstat(site / "a").st_nlink == 3
    sizes = space.usage(repo, repo.all_snapshots())
    assert sizes[IDS[0]].own == _fixed(repo, IDS[0]) + _disk(site / "a")  # once, not three times
    assert sizes[IDS[0]].shared == 0


def test_deleting_a_neighbour_makes_what_it_shared_own_and_the_cache_follows(repo: Repository) -> None:
    first = _seal(repo, IDS[0], {"kept": os.urandom(40000)})
    _seal(repo, IDS[1], {"kept": first / "kept"}, previous=IDS[0])
    before = space.usage(repo, repo.all_snapshots())
    assert before[IDS[0]].shared == _disk(first / "kept")
    repo.delete(IDS[1])
    after = space.usage(repo, repo.all_snapshots())  # the cache written above must not answer
    assert after[IDS[0]].shared == 0
    assert after[IDS[0]].own == before[IDS[0]].own + _disk(first / "kept")


def test_the_cache_measures_again_only_the_snapshots_a_change_can_affect(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _seal(repo, IDS[0], {"kept": os.urandom(10000)})
    for index in range(1, 4):
        site = _seal(repo, IDS[index], {"kept": site / "kept"}, previous=IDS[index - 1])
    measured: list[str] = []
    real = space.measure

    def counting(backend: Any, snapshot_id: str) -> space.Usage:
        measured.append(snapshot_id)
        return real(backend, snapshot_id)

    monkeypatch.setattr(space, "measure", counting)
    first = space.usage(repo, repo.all_snapshots())
    assert measured == IDS[:4]
    measured.clear()
    assert space.usage(repo, repo.all_snapshots()) == first and measured == []
    _seal(repo, IDS[4], {"kept": site / "kept"}, previous=IDS[3])
    space.usage(repo, repo.all_snapshots())
    assert measured == [IDS[3], IDS[4]]  # the new one and its neighbour
    measured.clear()
    repo.delete(IDS[2])
    space.usage(repo, repo.all_snapshots())
    assert measured == [IDS[1], IDS[3]]  # the deleted one's neighbours


def test_a_snapshot_made_against_an_older_base_makes_its_component_recount_on_any_change(
    repo: Repository,
) -> None:
    first = _seal(repo, IDS[0], {"kept": os.urandom(10000)})
    _seal(repo, IDS[1], {"other": os.urandom(10000)}, previous=IDS[0])  # (say it was damaged, then skipped)
    _seal(repo, IDS[2], {"kept": first / "kept"}, previous=IDS[0])
    assert space.usage(repo, repo.all_snapshots())[IDS[0]].shared == _disk(first / "kept")
    repo.delete(IDS[2])  # not a neighbour of IDS[0]: only a key over the whole chain sees it
    assert space.usage(repo, repo.all_snapshots())[IDS[0]].shared == 0


def test_freed_by_counts_files_shared_only_among_the_deleted_ones(repo: Repository) -> None:
    first = _seal(repo, IDS[0], {"a": os.urandom(20000)})
    _seal(repo, IDS[1], {"a": first / "a"}, previous=IDS[0])
    _seal(repo, IDS[2], {"b": os.urandom(20000)}, previous=IDS[1])
    sizes = space.usage(repo, repo.all_snapshots())
    together = space.freed_by(repo.backend, IDS[:2])
    folders = sum(_disk(repo.snapshots_dir / i) for i in IDS[:2])  # (not in their own sizes)
    assert together == sizes[IDS[0]].own + sizes[IDS[1]].own + _disk(first / "a") + folders


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1GiB", 1 << 30),
        ("500MB", 500_000_000),
        ("500 MiB", 500 << 20),
        ("1.5G", 1_500_000_000),
        ("2k", 2000),
        ("10", 10),
        (0, 0),
        (4096, 4096),
    ],
)
def test_a_reserve_is_a_size_with_units(text: str | int, expected: int) -> None:
    assert space.parse_reserve(text) == space.Reserve(bytes=expected)


def test_a_reserve_may_be_a_percentage_of_the_disk() -> None:
    reserve = space.parse_reserve("5%")
    assert reserve.of(1000) == 50 and reserve.of(None) == 0 and str(reserve) == "5%"
    assert space.parse_reserve("0.5 %").of(10_000) == 50


@pytest.mark.parametrize("text", ["lots", "-1GiB", "1 GB free", "", "100%", "x%", "5%%", True, 1.5, None])
def test_a_malformed_reserve_is_refused(text: Any) -> None:
    with pytest.raises(ValueError):
        space.parse_reserve(text)


def test_the_reserve_in_the_config_is_checked_with_its_path(tmp_path: Path) -> None:
    default = config_module.parse({"repository": {"path": "r"}}, tmp_path / "a.yaml").repository.reserve_setting()
    assert default == space.Reserve(percent=5.0)
    loaded = config_module.parse({"repository": {"path": "r", "reserve": "10%"}}, tmp_path / "a.yaml")
    assert loaded.repository.reserve_setting() == space.Reserve(percent=10.0)
    with pytest.raises(ConfigError) as raised:
        config_module.parse({"repository": {"path": "r", "reserve": "plenty"}}, tmp_path / "a.yaml")
    assert raised.value.exit_code == 2
    assert any(p.startswith("At 'repository.reserve':") and "1GiB" in p for p in raised.value.problems)


def _section(repo: Repository, snapshot_id: str, name: str, section: dict[str, Any]) -> None:
    folder = repo.begin(snapshot_id)
    (folder / name).mkdir()
    manifest = {"format": 2, "id": snapshot_id, "created": "2025-01-01T00:00:00+00:00"}
    repo.commit(snapshot_id, manifest | {"components": {name: section}})


def test_the_estimate_is_what_each_components_previous_snapshot_stored(repo: Repository) -> None:
    dump = {"type": "postgres", "artifacts": {"dump/toc.dat": {"size": 700, "hash": "x"}, "globals.sql": {"size": 50}}}
    _section(repo, IDS[0], "db", dump)
    files = {"type": "files", "copied_bytes": 9000, "artifacts": {"index.jsonl": {"size": 300}}}
    _section(repo, IDS[1], "site", files)
    _section(repo, IDS[2], "site", files | {"copied_bytes": 1200, "previous": IDS[1]})
    found = space.estimate(repo, [("db", "postgres"), ("site", "files"), ("new", "files")])
    assert found == {"db": 750, "site": 1500, "new": None}


class _Disk:
    def __init__(self, free: int, capacity: int | None) -> None:
        self.free, self.size = free, capacity


def _guarded(repo: Repository, monkeypatch: pytest.MonkeyPatch, free: int, capacity: int | None, reserve: str) -> None:
    monkeypatch.setattr(repo.backend, "free_bytes", lambda: free)
    monkeypatch.setattr(repo.backend, "capacity", lambda: capacity)
    advice = "`aura-ops snapshots prune` would free 3.0 MiB (2 snapshots)"
    space.check_room(
        repo, [("db", "postgres"), ("new", "files")], space.Guard(space.parse_reserve(reserve), lambda: advice)
    )


def test_the_guard_refuses_a_snapshot_that_would_eat_into_the_reserve(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    _section(repo, IDS[0], "db", {"type": "postgres", "artifacts": {"d": {"size": 4 << 20}}})
    _guarded(repo, monkeypatch, free=(10 << 20) + (4 << 20), capacity=None, reserve="10MiB")  # just fits
    with pytest.raises(space.NoRoom) as refused:
        _guarded(repo, monkeypatch, free=(10 << 20) + (4 << 20) - 1, capacity=None, reserve="10MiB")
    message = str(refused.value)
    assert refused.value.exit_code == 1 and "\n" not in message
    assert "needs about 4.0 MiB (no estimate for new: never snapshotted)" in message
    assert "14.0 MiB is free" in message and "repository.reserve keeps 10.0 MiB free" in message
    assert "`aura-ops snapshots prune` would free 3.0 MiB" in message and "nothing was written" in message
    with pytest.raises(space.NoRoom, match=r"keeps 20\.0 MiB \(10%\) free"):
        _guarded(repo, monkeypatch, free=20 << 20, capacity=200 << 20, reserve="10%")


def test_a_first_snapshot_needs_only_the_reserve_free(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    _guarded(repo, monkeypatch, free=1 << 20, capacity=None, reserve="1MiB")
    with pytest.raises(space.NoRoom, match="needs about 0 B"):
        _guarded(repo, monkeypatch, free=(1 << 20) - 1, capacity=None, reserve="1MiB")


def test_a_repository_copied_without_its_hard_links_is_counted_again(repo: Repository, tmp_path: Path) -> None:
    import shutil

    first = _seal(repo, IDS[0], {"kept": os.urandom(10000)})
    _seal(repo, IDS[1], {"kept": first / "kept"}, previous=IDS[0])
    assert space.usage(repo, repo.all_snapshots())[IDS[0]].shared > 0  # and cached in <repo>/cache
    shutil.copytree(repo.path, tmp_path / "copy")  # copies each link as its own file, the cache too
    copy = Repository(tmp_path / "copy")
    assert (copy.path / "cache" / space.CACHE).exists()
    sizes = space.usage(copy, copy.all_snapshots())
    assert sizes[IDS[0]].shared == sizes[IDS[1]].shared == 0


def test_a_snapshot_being_written_counts_as_the_newest_ones_neighbour(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _seal(repo, IDS[0], {"kept": os.urandom(10000)})
    site = _seal(repo, IDS[1], {"kept": site / "kept", "new": os.urandom(10000)}, previous=IDS[0])
    assert space.usage(repo, repo.all_snapshots())[IDS[1]].shared == _disk(site / "kept")
    folder = repo.begin(IDS[2])  # a backup in progress: it links the newest snapshot's files
    (folder / "site").mkdir()
    os.link(site / "new", folder / "site" / "new")
    measured: list[str] = []
    real = space.measure
    monkeypatch.setattr(space, "measure", lambda backend, i: measured.append(i) or real(backend, i))
    sizes = space.usage(repo, repo.all_snapshots())
    assert measured == [IDS[1]]
    assert sizes[IDS[1]].shared == _disk(site / "kept") + _disk(site / "new")
    repo.discard(IDS[2])
    measured.clear()
    assert space.usage(repo, repo.all_snapshots())[IDS[1]].shared == _disk(site / "kept")
    assert measured == [IDS[1]]
