"""Seeing the space (own and shared sizes in `snapshots list`, `snapshots stats`) and the
free-space guard, with the real CLI: real files trees hard-linked between snapshots, a real
pg_dump, and a repository on a small tmpfs that a backup would fill."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aura_ops.dev.sandbox import PostgresCluster
from tests.conftest import IN_CI, Aura, base_config, db_component

MiB = 1 << 20


def _write_tree(root: Path, files: int, size: int, seed: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for index in range(files):
        (root / f"f{index}.bin").write_bytes(os.urandom(size - len(seed)) + seed.encode())


def _disk(path: Path) -> int:
    return os.lstat(path).st_blocks * 512


def test_list_and_stats_show_own_and_shared_sizes_of_files_and_postgres_snapshots(
    pg: PostgresCluster, database: str, aura: Aura
) -> None:
    pg.sql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g", database)
    aura.env["AURA_DB_DSN"] = pg.dsn(database)
    source = aura.root / "site"
    _write_tree(source, 4, 256 * 1024, "a")
    aura.write_config(base_config({"db": db_component(), "site": {"type": "files", "path": str(source)}}))
    aura("backup")
    (source / "f0.bin").write_bytes(os.urandom(100 * 1024))  # one file changes, three are linked
    aura("backup", "--component", "site")
    listed = aura.json("snapshots", "list")["snapshots"]
    first, second = listed
    tree = aura.repo / "snapshots" / first["id"] / "site" / "tree"
    linked = sum(_disk(tree / f"f{i}.bin") for i in (1, 2, 3))
    dump = aura.repo / "snapshots" / first["id"] / "db"
    dump_bytes = sum(_disk(p) for p in dump.rglob("*") if p.is_file())
    assert first["shared_bytes"] == second["shared_bytes"] == linked  # the three unchanged files
    assert first["own_bytes"] > dump_bytes + _disk(tree / "f0.bin")  # its dump, its old f0, its folders
    assert second["own_bytes"] >= 100 * 1024
    assert second["own_bytes"] < 200 * 1024  # not the linked files
    table = aura("snapshots", "list").stdout
    assert "own" in table and "shared" in table and first["id"] in table

    stats = aura.json("snapshots", "stats")
    assert stats["snapshots"] == 2
    assert stats["components"]["db"]["type"] == "postgres" and stats["components"]["db"]["shared"] == 0
    assert stats["components"]["db"]["own"] > dump_bytes  # (its folders too)
    assert stats["components"]["site"]["snapshots"] == 2 and stats["components"]["site"]["shared"] == 2 * linked
    assert stats["prune"] == {"configured": False, "snapshots": [], "bytes": 0}
    once = {}  # every file and folder once, but the snapshots' own folders (not counted)
    for path in (aura.repo / "snapshots").rglob("*"):
        if not (path.is_dir() and path.parent.name == "snapshots"):
            once[os.lstat(path).st_ino] = _disk(path)
    assert stats["on_disk"] == sum(once.values())
    assert 0 < stats["free"] < stats["capacity"]
    assert stats["reserve"] == {"setting": "5%", "bytes": stats["capacity"] * 5 // 100}  # the default
    shown = aura("snapshots", "stats").stdout
    assert "no retention configured" in shown and "free" in shown and "site" in shown and "postgres" in shown


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs on a temp folder, always unmounted afterwards."""
    if os.geteuid() != 0 and not IN_CI:
        pytest.skip("needs root to mount a small tmpfs as the repository's disk")
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs on {mount}: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def _listing(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.lstat().st_size) for p in root.rglob("*"))


def _fill_until_refused(
    aura: Aura, disk: Path, source: Path, retention: dict[str, Any] | None
) -> subprocess.CompletedProcess[str]:
    """Back up a 5 MiB tree that changes completely each time until the guard refuses."""
    config = base_config({"site": {"type": "files", "path": str(source)}})
    config["repository"] = {"path": str(disk / "repo"), "reserve": "6MiB"}
    if retention:
        config["retention"] = retention
    aura.write_config(config)
    for attempt in range(6):
        _write_tree(source, 5, MiB, str(attempt))
        result = aura("backup", check=None)
        if result.returncode != 0:
            return result
    raise AssertionError("the guard never refused on a 24 MiB disk with a 6 MiB reserve")


def test_the_guard_refuses_a_backup_that_would_eat_into_the_reserve_and_writes_nothing(
    small_disk: Path, aura: Aura
) -> None:
    source = aura.root / "site"
    config = base_config({"site": {"type": "files", "path": str(source)}})
    config["repository"] = {"path": str(small_disk / "repo"), "reserve": "6MiB"}
    aura.write_config(config)
    for attempt in range(3):  # 24 MiB: 5 MiB each, the fourth would leave less than 6 MiB
        _write_tree(source, 5, MiB, str(attempt))
        aura("backup")
    _write_tree(source, 5, MiB, "3")
    ids = [s["id"] for s in aura.json("snapshots", "list")["snapshots"]]
    before = _listing(small_disk)
    refused = aura("backup", check=1)
    error = refused.stderr.strip().splitlines()[-1]
    assert error.startswith("aura-ops: error: not enough free space on the repository's disk")
    assert "needs about 5.0 MiB" in error and "is free" in error
    assert "repository.reserve keeps 6.0 MiB free" in error
    assert "no retention configured: set `retention:`" in error and "nothing was written" in error
    assert _listing(small_disk) == before
    assert [s["id"] for s in aura.json("snapshots", "list")["snapshots"]] == ids
    # a playbook's snapshot step (as a deploy's) is refused the same way
    run = aura("run", "backup", check=1)
    assert "repository.reserve keeps 6.0 MiB free" in run.stderr + run.stdout
    # no snapshot, nothing partial: only the record of the run's state folder, made once when a
    # state folder's first run starts (repository.journals: what another configuration's prune reads)
    after = _listing(small_disk)

    def beside_the_record(listing: list[tuple[str, int]]) -> list[tuple[str, int]]:
        return [p for p in listing if p[0] != "repo" and not p[0].startswith("repo/journals")]  # (repo: its size)

    assert beside_the_record(after) == beside_the_record(before)
    assert len(after) - len(before) == 2  # the folder and one record
    aura("run", "backup", check=1)
    assert _listing(small_disk) == after  # recorded once: the next refused run writes nothing at all
    # with a smaller reserve the same backup goes through
    config["repository"]["reserve"] = "1MiB"
    aura.write_config(config)
    aura("backup")
    assert len(aura.json("snapshots", "list")["snapshots"]) == len(ids) + 1


def test_the_guard_names_what_a_prune_would_free(small_disk: Path, aura: Aura) -> None:
    source = aura.root / "site"
    refused = _fill_until_refused(aura, small_disk, source, {"keep_last": 1})
    assert refused.returncode == 1
    error = refused.stderr.strip().splitlines()[-1]
    assert "repository.reserve keeps 6.0 MiB free" in error and "nothing was written" in error
    listed = aura.json("snapshots", "list")["snapshots"]
    assert len(listed) >= 2
    doomed = listed[:-1]  # keep_last 1
    frees = sum(s["own_bytes"] for s in doomed)  # each tree was new: nothing shared among them
    said = re.search(r"`aura-ops snapshots prune` would free ([\d.]+) MiB \((\d+) snapshots?\)", error)
    assert said, error
    assert abs(float(said.group(1)) - frees / MiB) <= 0.1 and int(said.group(2)) == len(doomed)
    stats = aura.json("snapshots", "stats")
    assert stats["prune"]["configured"] and stats["prune"]["snapshots"] == [s["id"] for s in doomed]
    assert stats["prune"]["bytes"] >= frees
    pruned = aura.json("snapshots", "prune")  # frees what stats said it would
    assert pruned["deleted"] == stats["prune"]["snapshots"] and pruned["freed"] == stats["prune"]["bytes"]


def test_a_malformed_reserve_is_a_config_error(aura: Aura) -> None:
    config = base_config({})
    config["repository"]["reserve"] = "a lot"
    aura.write_config(config)
    result = aura("snapshots", "list", check=2)
    assert "repository.reserve" in result.stderr
