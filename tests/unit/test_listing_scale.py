"""Listing stays linear in the number of snapshots: counted, not timed. The repository's backend
is wrapped in a counter; for a repository of few and of many real snapshots (files trees linked
against the one before), each command lists the repository a fixed number of times whatever
their number, reads each manifest and each checksum file once, and a listing after the first
hashes no stored index and measures no snapshot again. And the listing's answers stay right:
damaged snapshots listed with their reason, partial ones never, a changed index found."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import yaml
from click.testing import CliRunner

from aura_ops import config as config_module
from aura_ops.cli import cli
from aura_ops.components import snapshotting
from aura_ops.components.files import stored
from aura_ops.components.manifests import section_problem
from aura_ops.repository import LocalBackend, Repository, space
from aura_ops.workflows import retention
from aura_ops.workflows import snapshots as workflow
from aura_ops.workflows import space as workflow_space

FEW, MANY = 3, 9


class Counting:
    """A backend that counts what is asked of it (listings by prefix, reads by key)."""

    def __init__(self, inner: LocalBackend) -> None:
        self.inner = inner
        self.root = inner.root
        self.lists: Counter[str] = Counter()
        self.gets: Counter[str] = Counter()

    def list(self, prefix: str) -> Any:
        self.lists[prefix] += 1
        return self.inner.list(prefix)

    def get(self, key: str) -> IO[bytes]:
        self.gets[key] += 1
        return self.inner.get(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def reset(self) -> None:
        self.lists.clear()
        self.gets.clear()


def _repository(tmp_path: Path, count: int, keep_last: int = 0) -> Path:
    """A config whose repository holds ``count`` real snapshots of two small files trees."""
    site, etc = tmp_path / "site", tmp_path / "etc"
    for folder, files in ((site, 6), (etc, 2)):
        folder.mkdir(parents=True)
        for index in range(files):
            (folder / f"f{index}").write_bytes(os.urandom(300))
    retention_section = {"keep_last": keep_last} if keep_last else {}
    path = tmp_path / "aura.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "repository": {"path": str(tmp_path / "repo"), "reserve": 0},
                "components": {
                    "site": {"type": "files", "path": str(site)},
                    "etc": {"type": "files", "path": str(etc)},
                },
                **({"retention": retention_section} if retention_section else {}),
            }
        )
    )
    config = config_module.load(path)
    for index in range(count):
        (site / f"f{index % 6}").write_bytes(os.urandom(300))  # one file changes, the others are linked
        workflow.backup(config, None, [f"t{index % 2}"])
    return path


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Counting]]:
    """Every repository the workflows open goes through a Counting backend (appended here)."""
    opened: list[Counting] = []

    def repository(config: Any) -> Repository:
        backend = Counting(LocalBackend(config.repository.path))
        opened.append(backend)
        return Repository(backend, validate=section_problem)

    monkeypatch.setattr(snapshotting, "repository", repository)
    yield opened


def _totals(opened: list[Counting]) -> tuple[Counter[str], Counter[str]]:
    lists: Counter[str] = Counter()
    gets: Counter[str] = Counter()
    for backend in opened:
        lists.update(backend.lists)
        gets.update(backend.gets)
    return lists, gets


def _run(config: Path, *args: str) -> Any:
    result = CliRunner().invoke(cli, ["-c", str(config), *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


COMMANDS = [("snapshots", "list"), ("snapshots", "stats"), ("snapshots", "prune", "--dry-run")]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_command_lists_the_repository_a_fixed_number_of_times_and_reads_each_manifest_once(
    tmp_path: Path, counted: list[Counting], command: tuple[str, ...]
) -> None:
    found: dict[int, tuple[Counter[str], Counter[str]]] = {}
    for count in (FEW, MANY):
        config = _repository(tmp_path / str(count), count, keep_last=2)
        _run(config, *command)  # the first one fills the caches
        counted.clear()
        _run(config, *command)
        found[count] = _totals(counted)
    for count, (_, gets) in found.items():
        manifests = {key: n for key, n in gets.items() if key.endswith("/manifest.json")}
        sums = {key: n for key, n in gets.items() if key.endswith(".sha256")}
        assert len(manifests) == len(sums) == count
        assert set(manifests.values()) == set(sums.values()) == {1}  # each read once, not once a snapshot
        assert sum(gets.values()) == 2 * count + gets["format.json"]  # nothing else read a snapshot
    assert found[FEW][0] == found[MANY][0]  # listings: as many for 9 snapshots as for 3
    assert found[MANY][0]["snapshots"] <= 2


def test_a_listing_after_the_first_hashes_no_index_and_measures_no_snapshot(
    tmp_path: Path, counted: list[Counting], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_module.load(_repository(tmp_path, MANY))
    hashed: list[str] = []
    measured: list[str] = []
    real_digest, real_measure = stored.stream_digest, space.measure
    monkeypatch.setattr(stored, "stream_digest", lambda src, *a: hashed.append(src.name) or real_digest(src, *a))
    monkeypatch.setattr(space, "measure", lambda backend, i: measured.append(i) or real_measure(backend, i))
    found = workflow.listing(config)  # (a prune's plan: nothing remembered, nothing written)
    assert len(hashed) == 2 * MANY and not (tmp_path / "repo" / "cache" / "verified-files.json").exists()
    hashed.clear()
    found = workflow.listing(config, remember=True)  # (snapshots list)
    workflow_space.sizes(workflow.repository(config), found)
    assert len(hashed) == 2 * MANY and len(measured) == MANY  # (the first listing: every index, every snapshot)
    hashed.clear()
    measured.clear()
    again = workflow.listing(config, remember=True)
    workflow_space.sizes(workflow.repository(config), again)
    assert hashed == [] and measured == []
    assert [s.id for s in again] == [s.id for s in found] and all(s.damaged is None for s in again)


def test_an_index_changed_after_a_listing_cached_it_is_still_found(tmp_path: Path) -> None:
    config = config_module.load(_repository(tmp_path, FEW))
    first = workflow.listing(config, remember=True)  # hashes each index, caches it
    victim = first[1].path / "site" / stored.INDEX
    victim.write_bytes(victim.read_bytes().replace(b'"p"', b'"q"', 1))  # same size, new content
    listed = {s.id: s.damaged for s in workflow.listing(config)}
    assert listed[first[1].id] == f"site: {stored.INDEX} changed since the snapshot was sealed (checksum mismatch)"
    assert [i for i, damage in listed.items() if damage] == [first[1].id]


def test_a_damaged_manifest_marks_only_its_snapshot_and_a_partial_one_is_never_listed(
    tmp_path: Path, counted: list[Counting]
) -> None:
    config = _repository(tmp_path, MANY)
    repo = config.parent / "repo" / "snapshots"
    ids = sorted(p.name for p in repo.iterdir() if p.is_dir())
    manifest = repo / ids[3] / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"t1"', '"tX"'))  # no longer its sealed checksum
    (repo / "20991231-235959-999.partial").mkdir()
    counted.clear()
    listed = _run(config, "snapshots", "list")["snapshots"]
    assert [row["id"] for row in listed] == ids
    damaged = {row["id"]: row["damaged"] for row in listed if row["damaged"]}
    assert damaged == {ids[3]: f"manifest of snapshot {ids[3]} changed since it was sealed (checksum mismatch)"}
    lists, gets = _totals(counted)
    assert lists["snapshots"] <= 2 and max(gets.values()) == 1


def test_a_prune_after_a_backup_lists_once_and_reads_each_manifest_once(
    tmp_path: Path, counted: list[Counting]
) -> None:
    found = {}
    for count in (FEW, MANY):
        config = config_module.load(_repository(tmp_path / str(count), count, keep_last=count))
        counted.clear()
        done = retention.prune(config, workflow.repository(config), None, dry_run=False)
        assert done["deleted"] == []
        lists, gets = _totals(counted)
        assert {key: n for key, n in gets.items() if key.endswith("/manifest.json")} == {
            f"snapshots/{i}/manifest.json": 1 for i in done["keep"]
        }
        found[count] = lists
    assert found[FEW] == found[MANY] and found[MANY]["snapshots"] <= 2


def test_the_verified_cache_keeps_only_the_files_of_snapshots_still_there(tmp_path: Path) -> None:
    config = config_module.load(_repository(tmp_path, FEW))
    first = workflow.listing(config, remember=True)
    cache = tmp_path / "repo" / "cache" / "verified-files.json"
    assert len(json.loads(cache.read_text())) == 2 * FEW  # one index a component a snapshot
    workflow.repository(config).delete(first[0].id)
    assert [s.id for s in workflow.listing(config, remember=True)] == [s.id for s in first[1:]]
    assert len(json.loads(cache.read_text())) == 2 * (FEW - 1)
