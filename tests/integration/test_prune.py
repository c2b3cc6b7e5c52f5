"""`aura-ops snapshots prune / pin / unpin` end to end: the real CLI as a subprocess, a real
PostgreSQL cluster, real release folders and file trees. A prune keeps what a rollback and an
unfinished run need; a killed prune leaves every snapshot fully there or fully gone; deleting
the snapshot a tree was first written in leaves the trees linked to it whole."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.conftest import Aura
from tests.integration.test_deploy_semantics import deploy, live, release, site  # noqa: F401 - fixture

# ---------------------------------------------------------------- helpers


def set_retention(aura: Aura, **retention: Any) -> None:
    config = yaml.safe_load(aura.config_path.read_text())
    config["retention"] = retention
    aura.write_config(config)


def listed(aura: Aura) -> list[str]:
    return [s["id"] for s in aura.json("snapshots", "list")["snapshots"]]


def content(dsn: str) -> tuple[Any, ...]:
    with psycopg.connect(dsn) as conn:
        columns = conn.execute(
            "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) "
            "FROM information_schema.columns WHERE table_name = 'items'"
        ).fetchone()
        rows = conn.execute("SELECT count(*), md5(string_agg(t::text, ',' ORDER BY id)) FROM items t").fetchone()
    return columns, rows


def repository_listing(root: Path) -> list[tuple[str, int, int]]:
    """Every path under the repository with its size and inode: what a dry run must not change."""
    found = []
    for parent, folders, names in os.walk(root):
        for name in folders + names:
            path = Path(parent) / name
            st = path.lstat()
            found.append((str(path.relative_to(root)), st.st_size if not path.is_dir() else 0, st.st_ino))
    return sorted(found)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def files_site(aura: Aura, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    aura.write_config({"repository": {"path": "repo"}, "components": {"files": {"type": "files", "path": str(data)}}})
    return data


def write_files(data: Path, count: int, generation: int, size: int = 64) -> None:
    for index in range(count):
        folder = data / f"d{index % 20}"
        folder.mkdir(exist_ok=True)
        (folder / f"f{index}").write_bytes(f"{generation}:{index}:".encode() + b"x" * size)


# ---------------------------------------------------------------- (a) rollback after a prune


def test_a_prune_with_keep_last_1_keeps_what_rollback_restores_and_the_rollback_works(
    aura: Aura,
    site: dict[str, Any],  # noqa: F811 - the fixture imported above
) -> None:
    deploy(aura, site, "v1")
    before_v2 = content(site["dsn"])
    release(site, "v2", migration="ALTER TABLE items ADD COLUMN price int; UPDATE items SET name = upper(name);")
    deploy(aura, site, "v2")
    aura("backup")
    aura("backup")  # the newest snapshots now record v2 as live
    with psycopg.connect(site["dsn"], autocommit=True) as conn:
        conn.execute("INSERT INTO items (name, price) VALUES ('late', 3)")
    assert live(site) == "v2" and content(site["dsn"]) != before_v2
    before = listed(aura)
    set_retention(aura, keep_last=1)

    plan = aura.json("snapshots", "prune", "--dry-run")
    reasons = {row["id"]: row["reasons"] for row in plan["snapshots"]}
    needed = [i for i, r in reasons.items() if "`aura-ops rollback` to release v1 restores it" in r]
    assert len(needed) == 1 and needed[0] != before[-1]

    pruned = aura.json("snapshots", "prune")
    assert pruned["deleted"] and needed[0] not in pruned["deleted"] and before[-1] not in pruned["deleted"]
    after = listed(aura)
    assert needed[0] in after and before[-1] in after and len(after) < len(before)
    assert set(after) | set(pruned["deleted"]) == set(before)

    done = aura.json("rollback", "--yes")
    assert done["run"]["status"] == "succeeded"
    assert done["target"]["release"] == "v1" and done["target"]["snapshot"] == needed[0]
    assert content(site["dsn"]) == before_v2
    assert live(site) == "v1"


# ---------------------------------------------------------------- (b) a killed prune


def check_whole(aura: Aura, originals: list[str]) -> list[str]:
    """Each original snapshot is fully there (listed, not damaged, verifies) or fully gone (no
    folder under its name); returns those still there."""
    snapshots = aura.json("snapshots", "list")["snapshots"]
    present = [s["id"] for s in snapshots]
    assert all(s["damaged"] is None for s in snapshots)
    for snapshot_id in originals:
        if snapshot_id in present:
            assert aura.json("snapshots", "verify", snapshot_id)["ok"]
        else:
            assert not (aura.repo / "snapshots" / snapshot_id).exists()
    return present


def test_a_prune_killed_between_rename_and_removal_leaves_each_snapshot_whole_or_gone(
    aura: Aura, files_site: Path
) -> None:
    originals = []
    for generation in range(3):
        write_files(files_site, 300, generation)
        originals.append(aura.json("backup")["id"])
    set_retention(aura, keep_last=1)
    aura("snapshots", "prune", check=137, env={"AURA_FAULT": "delete:renamed-aside"})
    left = sorted(p.name for p in (aura.repo / "snapshots").iterdir())
    assert f"{originals[0]}.deleting.partial" in left  # killed mid-delete: set aside, not yet removed
    assert check_whole(aura, originals) == originals[1:]
    aura("snapshots", "prune")  # the next locked command removes what the kill left
    assert check_whole(aura, originals) == originals[-1:]
    names = sorted(p.name for p in (aura.repo / "snapshots").iterdir())
    assert names == [originals[-1], f"{originals[-1]}.sha256"]


def test_a_prune_killed_at_random_points_leaves_a_repository_that_verifies(aura: Aura, files_site: Path) -> None:
    originals = []
    for generation in range(4):
        write_files(files_site, 1500, generation, size=1024)  # every file changes: nothing shared
        originals.append(aura.json("backup")["id"])
    set_retention(aura, keep_last=1)
    rng = random.Random()  # noqa: S311 - test timing, not security
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    for _ in range(3):
        process = aura.popen("snapshots", "prune")
        delay = rng.uniform(0.3, 1.5)  # interpreter start-up is about 0.5 s here: before, during, after deletes
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        present = check_whole(aura, originals)
        assert originals[-1] in present, f"seed {seed}, delay {delay:.2f}"
    aura("snapshots", "prune")
    assert check_whole(aura, originals) == originals[-1:]
    assert not [p for p in (aura.repo / "snapshots").iterdir() if p.name.endswith(".partial")]


# ---------------------------------------------------------------- (c) hard-linked trees


def test_deleting_the_snapshot_a_tree_was_first_written_in_leaves_the_later_one_whole(
    aura: Aura, files_site: Path, tmp_path: Path
) -> None:
    write_files(files_site, 200, 0)
    first = aura.json("backup")["id"]
    (files_site / "d0" / "f0").write_bytes(b"changed")
    second = aura.json("backup")
    assert second["components"]["files"]["linked_files"] == 199  # the rest are links into the first
    expected = tree(files_site)
    set_retention(aura, keep_last=1)
    assert aura.json("snapshots", "prune")["deleted"] == [first]
    assert not (aura.repo / "snapshots" / first).exists()
    assert aura.json("snapshots", "verify", second["id"])["ok"]
    target = tmp_path / "restored"
    aura("restore", second["id"], "--to-path", str(target), "--yes")
    assert tree(target) == expected


# ---------------------------------------------------------------- (d) dry run


def test_dry_run_deletes_nothing(aura: Aura, files_site: Path) -> None:
    for generation in range(3):
        write_files(files_site, 20, generation)
        aura("backup")
    set_retention(aura, keep_last=1)
    before = repository_listing(aura.repo)
    plan = aura("snapshots", "prune", "--dry-run")
    assert plan.stdout.count("\ndelete  ") + plan.stdout.startswith("delete  ") == 2
    assert "would delete 2 of 3 snapshots (dry run: nothing deleted)" in plan.stdout
    assert repository_listing(aura.repo) == before


def test_without_a_policy_prune_says_so_and_deletes_nothing(aura: Aura, files_site: Path) -> None:
    write_files(files_site, 5, 0)
    aura("backup")
    aura("backup")
    before = repository_listing(aura.repo)
    done = aura("snapshots", "prune")
    assert "no retention policy is configured" in done.stdout
    assert repository_listing(aura.repo) == before
    shown = aura.json("snapshots", "prune")  # the same shape as a prune with a policy: every row kept
    assert (shown["configured"], shown["dry_run"], shown["deleted"], shown["delete"]) == (False, False, [], [])
    assert [row["decision"] for row in shown["snapshots"]] == ["keep", "keep"]
    assert repository_listing(aura.repo) == before


# ---------------------------------------------------------------- (e) pins


def test_a_pinned_snapshot_survives_keep_last_1_and_unpinned_it_is_pruned(aura: Aura, files_site: Path) -> None:
    ids = []
    for generation in range(3):
        write_files(files_site, 10, generation)
        ids.append(aura.json("backup")["id"])
    aura("snapshots", "pin", ids[0][:-1])  # a unique prefix
    rows = {r["id"]: r for r in aura.json("snapshots", "list")["snapshots"]}
    assert [i for i, r in rows.items() if r["pinned"]] == [ids[0]]
    assert "pinned" in aura("snapshots", "list").stdout
    set_retention(aura, keep_last=1)
    assert aura.json("snapshots", "prune")["deleted"] == [ids[1]]
    assert listed(aura) == [ids[0], ids[2]]
    aura("snapshots", "unpin", ids[0])
    assert aura.json("snapshots", "prune")["deleted"] == [ids[0]]
    assert listed(aura) == [ids[2]]
    assert not (aura.repo / "pins" / ids[0]).exists()
    assert "unknown snapshot" in aura("snapshots", "pin", ids[0], check=2).stderr


# ---------------------------------------------------------------- (f) unfinished runs


def test_a_snapshot_an_unfinished_run_references_survives_a_prune(
    aura: Aura,
    site: dict[str, Any],  # noqa: F811 - the fixture imported above
) -> None:
    deploy(aura, site, "v1")
    source = release(site, "v2")
    aura("deploy", "--version", "v2", "--source", str(source), check=137, env={"AURA_FAULT": "migrate:before"})
    killed = aura.json("runs", "list")["runs"][0]
    assert killed["status"] == "running"
    taken = [s for s in aura.json("snapshots", "list")["snapshots"] if "v2" in s["tags"]]
    assert len(taken) == 1
    aura("backup")
    aura("backup")
    set_retention(aura, keep_last=1)
    pruned = aura.json("snapshots", "prune")
    assert taken[0]["id"] not in pruned["deleted"] and pruned["deleted"]
    row = next(r for r in pruned["snapshots"] if r["id"] == taken[0]["id"])
    assert f"needed by run {killed['id']} (deploy, not finished)" in row["reasons"]
    aura("runs", "abort", killed["id"], "--yes")
    assert live(site) == "v1"


# ---------------------------------------------------------------- retention.auto


def test_auto_prune_after_each_backup(aura: Aura, files_site: Path) -> None:
    set_retention(aura, keep_last=2, auto=True)
    ids, pruned = [], []
    for generation in range(4):
        write_files(files_site, 10, generation)
        done = aura.json("backup")
        ids.append(done["id"])
        pruned.append(done["auto_prune"]["deleted"])  # --json says what the auto-prune did
    assert listed(aura) == ids[-2:]
    assert pruned == [[], [], ids[:1], ids[1:2]]
    assert json.loads(aura.log_text().splitlines()[-1])["event"] in ("prune.auto", "prune.done")


def test_auto_prune_after_a_deploy_keeps_what_rollback_needs(
    aura: Aura,
    site: dict[str, Any],  # noqa: F811 - the fixture imported above
) -> None:
    set_retention(aura, keep_last=1, auto=True)
    first = json.loads(deploy(aura, site, "v1", "--json").stdout)
    release(site, "v2", migration="ALTER TABLE items ADD COLUMN price int;")
    second = json.loads(deploy(aura, site, "v2", "--json").stdout)
    # v1's deploy snapshot: the pre-deploy snapshot of the previous good release (v1), kept
    assert first["auto_prune"] == {"deleted": [], "freed": 0} and second["auto_prune"]["deleted"] == []
    taken = listed(aura)
    before_v3 = content(site["dsn"])
    release(site, "v3", migration="UPDATE items SET price = 7;")
    third = json.loads(deploy(aura, site, "v3", "--json").stdout)
    assert third["run"]["status"] == "succeeded"
    assert third["auto_prune"]["deleted"] == taken[:1]  # no rollback reaches v1's deploy snapshot any more
    kept = listed(aura)
    assert kept[:1] == taken[1:] and len(kept) == 2
    done = aura.json("rollback", "--yes")
    assert done["target"]["release"] == "v2" and done["target"]["snapshot"] == kept[-1]
    assert content(site["dsn"]) == before_v3


# ---------------------------------------------------------------- snapshots delete warns


def test_deleting_a_snapshot_a_rollback_needs_names_why_and_needs_consent(
    aura: Aura,
    site: dict[str, Any],  # noqa: F811 - the fixture imported above
) -> None:
    deploy(aura, site, "v1")
    release(site, "v2", migration="ALTER TABLE items ADD COLUMN price int;")
    deploy(aura, site, "v2")
    aura("backup")
    plan = aura.json("snapshots", "prune", "--dry-run")
    needed = [r["id"] for r in plan["snapshots"] if any("rollback` to release v1" in x for x in r["reasons"])]
    assert len(needed) == 1
    refused = aura("snapshots", "delete", needed[0], check=2)
    assert "still needed" in refused.stderr and "rollback` to release v1" in refused.stderr
    assert "--yes" in refused.stderr and needed[0] in listed(aura)  # nothing changed
    done = aura.json("snapshots", "delete", needed[0], "--yes")
    assert done["deleted"] == needed[0] and any("rollback` to release v1" in r for r in done["was_needed"])
    assert needed[0] not in listed(aura)
    assert "snapshot.still_needed" in aura.log_text()


def test_deleting_an_unneeded_snapshot_asks_plainly(aura: Aura, files_site: Path) -> None:
    ids = []
    for generation in range(2):
        write_files(files_site, 5, generation)
        ids.append(aura.json("backup")["id"])
    newest = aura("snapshots", "delete", ids[1], check=2).stderr
    assert "still needed" in newest and "newest verified" in newest  # the only intact copy of files now
    plain = aura("snapshots", "delete", ids[0], check=2).stderr
    assert "still needed" not in plain and f"Delete snapshot {ids[0]}?" in plain
    assert aura.json("snapshots", "delete", ids[0], "--yes")["was_needed"] == []
    assert listed(aura) == [ids[1]]
