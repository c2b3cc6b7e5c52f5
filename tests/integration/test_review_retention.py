"""Review of retention (issue 11), adversarial cases found by review-a: each test failed on the
code it was written against. Real CLI as a subprocess, real files, a real repository."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Aura, db_component
from tests.integration.test_deploy_semantics import deploy, live, release, site  # noqa: F401 - fixture
from tests.integration.test_prune import content, files_site, listed, set_retention, tree, write_files  # noqa: F401


def putback_playbook(folder: Path, snapshot: str = "{{ params.source }}") -> Path:
    """A user's playbook: a snapshot first (its undo point), then put the files back from the
    snapshot it is given (a parameter that is not called ``snapshot``, or written in the file)."""
    book = folder / "putback.yaml"
    book.write_text(
        yaml.safe_dump(
            {
                "name": "putback",
                "params": {"source": ""},
                "steps": [
                    {"name": "pre", "action": "snapshot"},
                    {"name": "put_back", "action": "restore", "with": {"snapshot": snapshot, "components": ["files"]}},
                ],
            }
        )
    )
    return book


@pytest.mark.parametrize("named_by", ["parameter", "prefix", "definition"])
def test_a_snapshot_an_interrupted_run_restores_survives_a_prune_and_the_resume_restores_it(
    aura: Aura,
    files_site: Path,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    named_by: str,
) -> None:
    write_files(files_site, 10, 0)
    expected = tree(files_site)
    source = aura.json("backup")["id"]
    write_files(files_site, 10, 1)
    if named_by in ("parameter", "prefix"):  # the CLI takes a unique id prefix everywhere
        given = source if named_by == "parameter" else source[:-1]
        book, extra = putback_playbook(tmp_path), ["-e", f"source={given}"]
    else:
        book, extra = putback_playbook(tmp_path, snapshot=source), []
    aura("run", str(book), *extra, check=137, env={"AURA_FAULT": "put_back:before"})
    killed = aura.json("runs", "list")["runs"][0]
    assert killed["status"] == "running"
    aura("backup")
    set_retention(aura, keep_last=1)
    plan = {row["id"]: row for row in aura.json("snapshots", "prune", "--dry-run")["snapshots"]}
    assert plan[source]["decision"] == "keep", plan[source]
    assert any(killed["id"] in reason for reason in plan[source]["reasons"])
    pruned = aura.json("snapshots", "prune")
    assert source not in pruned["deleted"] and source in listed(aura)
    done = aura.json("runs", "resume", killed["id"])
    assert done["run"]["status"] == "succeeded"
    assert tree(files_site) == expected


def test_an_interrupted_run_is_seen_through_another_path_to_the_same_config(
    aura: Aura,
    files_site: Path,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """The config reached through a symlinked folder (cron names /etc/aura, a person /srv/aura):
    the same state folder, so the same unfinished run: a prune keeps what it needs and a new
    run refuses, as through the path the run was started by."""
    write_files(files_site, 10, 0)
    source = aura.json("backup")["id"]
    write_files(files_site, 10, 1)
    book = putback_playbook(tmp_path)
    aura("run", str(book), "-e", f"source={source}", check=137, env={"AURA_FAULT": "put_back:before"})
    killed = aura.json("runs", "list")["runs"][0]
    assert killed["status"] == "running"
    (tmp_path / "link").symlink_to(tmp_path, target_is_directory=True)
    other = Aura(tmp_path / "link", aura.env)
    other("backup")
    set_retention(aura, keep_last=1)
    taken = listed(aura)
    pruned = other.json("snapshots", "prune")
    assert source not in pruned["deleted"] and taken[1] not in pruned["deleted"]  # its parameter, its own undo point
    refused = other("run", str(book), "-e", f"source={source}", check=5)
    assert killed["id"] in refused.stderr
    assert other.json("runs", "resume", killed["id"])["run"]["status"] == "succeeded"


def test_a_pinned_snapshot_is_not_deleted_by_snapshots_delete_until_it_is_unpinned(
    aura: Aura,
    files_site: Path,  # noqa: F811 - the fixture imported above
) -> None:
    write_files(files_site, 5, 0)
    kept = aura.json("backup")["id"]
    aura("snapshots", "pin", kept)
    refused = aura("snapshots", "delete", kept, "--yes", check=2)
    assert refused.stderr.strip().splitlines()[-1].startswith("aura-ops: error: snapshot")
    assert f"snapshots unpin {kept}" in refused.stderr and "nothing was deleted" in refused.stderr
    assert listed(aura) == [kept] and aura.json("snapshots", "verify", kept)["ok"]
    aura("snapshots", "unpin", kept)
    assert aura.json("snapshots", "delete", kept, "--yes")["deleted"] == kept
    assert listed(aura) == []


def test_a_backup_only_config_sharing_the_repository_keeps_what_the_deploy_configs_rollback_restores(
    aura: Aura,
    site: dict[str, Any],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """A second configuration on the same repository (cron's backup of the database only, with
    retention.auto) knows no release: its prune must still keep the snapshot a rollback of the
    deploying configuration restores."""
    deploy(aura, site, "v1")
    before_v2 = content(site["dsn"])
    release(site, "v2", migration="ALTER TABLE items ADD COLUMN price int;")
    deploy(aura, site, "v2")
    aura("backup")  # the newest snapshot of the release now records v2
    (tmp_path / "cron").mkdir()
    cron = Aura(tmp_path / "cron", aura.env)
    cron.write_config(
        {
            "repository": {"path": str(aura.repo)},
            "components": {"db": db_component()},
            "retention": {"keep_last": 1, "auto": True},
        }
    )
    before = listed(aura)
    newest = cron.json("backup")["id"]
    assert newest in listed(aura) and len(listed(aura)) < len(before) + 1  # the cron's prune deleted some
    done = aura.json("rollback", "--yes")
    assert done["run"]["status"] == "succeeded" and done["target"]["release"] == "v1"
    assert content(site["dsn"]) == before_v2 and live(site) == "v1"


def _flip_a_byte(folder: Path) -> Path:
    """Change one byte in the middle of the largest file under ``folder`` (size, name and
    manifest untouched: the snapshot still lists as intact, only a checksum finds it)."""
    largest = max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(largest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    largest.write_bytes(bytes(data))
    return largest


def test_a_rollback_snapshot_that_fails_its_checksums_keeps_an_older_one_of_the_same_release_through_keep_last_1(
    aura: Aura,
    site: dict[str, Any],  # noqa: F811 - the fixture imported above
) -> None:
    """The snapshot `rollback` would restore rotted on disk (manifest intact, a dump byte
    changed): a prune with keep_last 1 must not delete the older snapshot of the database from
    while the same release was live, or no rollback can restore anything; the rotten one is kept
    and shown as damaged, and `rollback --to-snapshot` the kept one works."""
    deploy(aura, site, "v1")
    older = aura.json("backup")["id"]  # the database while v1 is live
    before_v2 = content(site["dsn"])
    release(site, "v2", migration="ALTER TABLE items ADD COLUMN price int; UPDATE items SET name = upper(name);")
    deploy(aura, site, "v2")
    doomed = aura.json("backup")["id"]
    aura("backup")
    plan = aura.json("snapshots", "prune", "--dry-run")
    wanted = "`aura-ops rollback` to release v1 restores it"
    newer = [r["id"] for r in plan["snapshots"] if wanted in r["reasons"]]
    assert len(newer) == 1 and newer[0] != older  # the v2 deploy's own snapshot
    _flip_a_byte(aura.repo / "snapshots" / newer[0] / "db")
    set_retention(aura, keep_last=1)

    dry = {r["id"]: r for r in aura.json("snapshots", "prune", "--dry-run")["snapshots"]}
    assert dry[older]["decision"] == "keep", dry[older]
    assert any(f"--to-snapshot {older}" in reason for reason in dry[older]["reasons"]), dry[older]
    assert dry[newer[0]]["decision"] == "keep" and any("checksum" in r for r in dry[newer[0]]["reasons"])
    pruned = aura.json("snapshots", "prune")
    assert older not in pruned["deleted"] and newer[0] not in pruned["deleted"] and doomed in pruned["deleted"]
    assert older in listed(aura)

    aura("rollback", "--yes", check=None)  # restores the rotten one: refused before anything changed
    assert live(site) == "v2"
    done = aura.json("rollback", "--to-snapshot", older, "--yes")
    assert done["run"]["status"] == "succeeded" and done["target"]["release"] == "v1"
    assert content(site["dsn"]) == before_v2 and live(site) == "v1"


def test_a_second_configuration_on_the_repository_keeps_what_the_first_ones_interrupted_run_needs(
    aura: Aura,
    files_site: Path,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """Two configurations in two folders (two state folders, two journals) share a repository:
    the second one's prune (keep_last 1, after its own backup) must keep the snapshots the
    first one's interrupted run still needs, and that run's resume then puts the files back."""
    write_files(files_site, 10, 0)
    expected = tree(files_site)
    source = aura.json("backup")["id"]
    write_files(files_site, 10, 1)
    book = putback_playbook(tmp_path)
    aura("run", str(book), "-e", f"source={source}", check=137, env={"AURA_FAULT": "put_back:before"})
    killed = aura.json("runs", "list")["runs"][0]
    assert killed["status"] == "running"
    own_undo_point = listed(aura)[-1]
    (tmp_path / "cron").mkdir()
    cron = Aura(tmp_path / "cron", aura.env)
    cron.write_config(
        {
            "repository": {"path": str(aura.repo)},
            "components": {"files": {"type": "files", "path": str(files_site)}},
            "retention": {"keep_last": 1, "auto": True},
        }
    )
    assert cron.json("runs", "list")["runs"] == []  # a journal of its own: the run is not among its runs
    done = cron.json("backup")
    assert done["auto_prune"] == {"deleted": [], "freed": 0}, done["auto_prune"]
    plan = {row["id"]: row for row in cron.json("snapshots", "prune", "--dry-run")["snapshots"]}
    for needed in (source, own_undo_point):
        assert plan[needed]["decision"] == "keep", plan[needed]
        assert any(f"needed by run {killed['id']}" in r and "of the state folder" in r for r in plan[needed]["reasons"])
    assert aura.json("runs", "resume", killed["id"])["run"]["status"] == "succeeded"
    assert tree(files_site) == expected
    pruned = cron.json("snapshots", "prune")  # the run finished: nothing of it is needed any more
    assert source in pruned["deleted"] and listed(aura) == [done["id"]]


def test_a_deploy_refused_by_the_run_lock_leaves_no_snapshot(
    aura: Aura,
    site: dict[str, Any],  # noqa: F811 - the fixture imported above
) -> None:
    """Issue 11, "less to keep": a deploy that another run's lock refuses (exit 5) took no
    snapshot (the lock comes before the snapshot step)."""
    from aura_ops.state.lock import hold

    deploy(aura, site, "v1")
    before = listed(aura)
    source = release(site, "v2")
    with hold(site["root"] / "state" / "run.lock", "other-deploy", "run deploy"):
        refused = aura("deploy", "--version", "v2", "--source", str(source), check=5)
    assert "other-deploy" in refused.stderr
    assert listed(aura) == before and live(site) == "v1"
    assert not [p for p in (aura.repo / "snapshots").iterdir() if p.name.endswith(".partial")]


def test_a_run_that_makes_the_repository_records_its_state_folder_with_its_first_snapshot(
    aura: Aura,
    files_site: Path,  # noqa: F811 - the fixture imported above
) -> None:
    """The very first run on a repository (none there when it started) is recorded by its
    snapshot step, so that another configuration's prune sees it once it is killed."""
    import json
    import os

    write_files(files_site, 5, 0)
    assert not aura.repo.exists()
    aura("run", "backup", check=137, env={"AURA_FAULT": "run:end"})
    records = [json.loads(p.read_text()) for p in (aura.repo / "journals").iterdir()]
    assert [r["state"] for r in records] == [os.path.realpath(aura.root / "state")]
