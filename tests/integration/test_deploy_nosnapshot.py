"""A deploy or playbook run that fails before it changed anything leaves no snapshot behind
(issue 11, "Less to keep in the first place"); one that changed something keeps the snapshot its
rollback restores from. Real PostgreSQL, real release folders and tarballs, the real CLI."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import psycopg
import yaml

from tests.conftest import Aura
from tests.integration.test_deploy_semantics import deploy, live, release, set_config, site

__all__ = ["site"]  # the fixture, shared with the deploy semantics tests


def snapshot_ids(aura: Aura) -> list[str]:
    return [s["id"] for s in aura.json("snapshots", "list")["snapshots"]]


def run_ids(aura: Aura) -> list[str]:
    return [r["id"] for r in aura.json("runs", "list", "--limit", "1000")["runs"]]


def rows(site: dict[str, Any]) -> Any:
    with psycopg.connect(site["dsn"]) as conn:
        return conn.execute("SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM items t").fetchone()


# ---------------------------------------------------------------- deploy: refused before the snapshot


def test_a_deploy_of_a_version_whose_release_does_not_exist_leaves_the_snapshots_as_they_were(
    aura: Aura, site: dict[str, Any]
) -> None:
    deploy(aura, site, "v1")
    before, runs = snapshot_ids(aura), run_ids(aura)
    assert len(before) == 1
    # a typo in the version: its release folder (or tarball) is not there
    for source in (site["root"] / "sources" / "v2.0.1", site["root"] / "sources" / "v2.0.1.tar.gz"):
        result = aura("deploy", "--version", "v2.0.1", "--source", str(source), "--rollback-on-fail", check=2)
        assert "does not exist" in result.stderr
    assert snapshot_ids(aura) == before
    assert run_ids(aura) == runs
    assert live(site) == "v1"


def test_a_deploy_of_a_broken_tarball_is_refused_before_the_snapshot(aura: Aura, site: dict[str, Any]) -> None:
    deploy(aura, site, "v1")
    before, runs = snapshot_ids(aura), run_ids(aura)
    good = site["root"] / "v2.tar.gz"
    with tarfile.open(good, "w:gz") as tar:
        tar.add(release(site, "v2"), arcname=".")
    truncated = site["root"] / "v2-cut.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    not_a_tarball = site["root"] / "v2-text.tar.gz"
    not_a_tarball.write_text("this is not a tarball\n")
    for source, cause in ((truncated, "unexpected end of file"), (not_a_tarball, "does not look like a tar archive")):
        result = aura("deploy", "--version", "v2", "--source", str(source), "--rollback-on-fail", check=2)
        assert "is not a readable tarball" in result.stderr and cause in result.stderr  # tar's cause, not its last line
        assert len([line for line in result.stderr.splitlines() if "error" in line]) == 1
    assert snapshot_ids(aura) == before and run_ids(aura) == runs
    assert not (site["app"] / "releases" / "v2").exists()
    # the intact tarball deploys (listing it first changes nothing about the upload)
    aura("deploy", "--version", "v2", "--source", str(good), "--rollback-on-fail", check=0)
    assert live(site) == "v2" and len(snapshot_ids(aura)) == 2


def test_a_deploy_failing_in_preflight_leaves_the_snapshots_as_they_were(aura: Aura, site: dict[str, Any]) -> None:
    deploy(aura, site, "v1")
    before, runs = snapshot_ids(aura), run_ids(aura)
    # the database component's server is gone: doctor's reachability check fails
    result = aura(
        "deploy",
        "--version",
        "v2",
        "--source",
        str(release(site, "v2")),
        "--rollback-on-fail",
        check=None,
        env={"AURA_DB_DSN": "postgresql://nobody@127.0.0.1:1/nothing?connect_timeout=2"},
    )
    assert result.returncode not in (0, 1), result.stderr  # as today: preflight's own exit code
    assert "preflight failed" in result.stderr
    assert snapshot_ids(aura) == before and run_ids(aura) == runs
    assert live(site) == "v1"


def test_a_deploy_whose_migration_fails_keeps_the_snapshot_its_rollback_restored(
    aura: Aura, site: dict[str, Any]
) -> None:
    set_config(aura, deploy={"fast_rollback": "off"})  # the rollback restores the run's snapshot
    deploy(aura, site, "v1")
    before_rows, before = rows(site), snapshot_ids(aura)
    source = release(site, "v2", migration="UPDATE items SET name = 'gone'; ALTER TABLE nowhere ADD COLUMN x int;")
    result = aura("deploy", "--version", "v2", "--source", str(source), "--rollback-on-fail", "--json", check=1)
    bad = json.loads(result.stdout)
    assert bad["run"]["status"] == "rolled_back"
    steps = {s["name"]: s for s in bad["steps"]}
    # the database came back from the snapshot the clone step took after the stop (no clone)
    restored = bad["database_restore"]["snapshot"]
    assert restored == steps["clone"]["outputs"]["snapshot_id"]
    taken = [steps["snapshot"]["outputs"]["snapshot_id"], restored]
    assert all(steps[name]["undo"] is None or "snapshot_deleted" not in steps[name]["undo"] for name in steps)
    assert snapshot_ids(aura) == [*before, *taken]  # both kept: the run changed things
    assert rows(site) == before_rows and live(site) == "v1"
    # and that snapshot still restores: roll back to it once v2 is live
    deploy(aura, site, "v2b")
    aura("rollback", "--to-snapshot", restored, "--to-release", "v1", "--yes", check=0)
    assert rows(site) == before_rows and live(site) == "v1"


# ---------------------------------------------------------------- playbook runs


def _book(aura: Aura, name: str, steps: list[dict[str, Any]], params: dict[str, Any] | None = None) -> Path:
    path = aura.root / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "params": params or {}, "steps": steps}, sort_keys=False))
    return path


SNAPSHOT = {"name": "snapshot", "action": "snapshot", "with": {"components": ["db"], "tags": ["before"]}}


def test_a_playbook_run_failing_in_its_first_step_before_any_change_leaves_no_snapshot(
    aura: Aura, site: dict[str, Any]
) -> None:
    deploy(aura, site, "v1")
    before = snapshot_ids(aura)
    # argv given as one string (the brackets forgotten): invalid once rendered, before it ran
    change = {"name": "change", "action": "command", "with": {"argv": "touch {{ steps.snapshot.snapshot_id }}"}}
    book = _book(aura, "gated", [SNAPSHOT, change])
    result = aura("run", str(book), "--json", check=1)
    outcome = json.loads(result.stdout)
    assert outcome["run"]["status"] == "rolled_back"
    steps = {s["name"]: s for s in outcome["steps"]}
    assert steps["change"]["status"] == "failed" and steps["change"]["attempts"] == 0
    taken = steps["snapshot"]["outputs"]["snapshot_id"]  # the record still names the snapshot it took
    assert steps["snapshot"]["undo"]["snapshot_deleted"] == taken
    assert snapshot_ids(aura) == before
    shown = aura.json("runs", "show", outcome["run"]["id"])
    assert next(s for s in shown["steps"] if s["name"] == "snapshot")["undo"]["snapshot_deleted"] == taken
    aura("snapshots", "verify", before[0], check=0)


def test_a_playbook_step_that_uses_the_snapshot_wrongly_fails_and_leaves_no_snapshot(
    aura: Aura, site: dict[str, Any]
) -> None:
    before = snapshot_ids(aura)
    book = _book(
        aura,
        "typo",
        [
            SNAPSHOT,
            {"name": "use", "action": "command", "with": {"argv": ["echo", "{{ steps.snapshot.snapshot_idd }}"]}},
        ],
    )
    outcome = json.loads(aura("run", str(book), "--json", check=1).stdout)
    assert outcome["run"]["status"] == "rolled_back"
    assert snapshot_ids(aura) == before


def test_a_playbook_with_an_invalid_parameter_value_is_refused_before_its_snapshot(
    aura: Aura, site: dict[str, Any]
) -> None:
    before, runs = snapshot_ids(aura), run_ids(aura)
    book = _book(
        aura,
        "poll",
        [SNAPSHOT, {"name": "ready", "action": "wait", "with": {"argv": ["true"], "timeout": "{{ params.seconds }}"}}],
        params={"seconds": 10},
    )
    result = aura("run", str(book), "-e", "seconds=ten", check=2)
    assert "step 2 'ready'" in result.stderr and "timeout" in result.stderr and "nothing was run" in result.stderr
    assert snapshot_ids(aura) == before and run_ids(aura) == runs
    aura("run", str(book), "-e", "seconds=5", check=0)  # a valid value runs
    assert len(snapshot_ids(aura)) == len(before) + 1


def test_a_playbook_step_that_ran_and_failed_keeps_the_snapshot(aura: Aura, site: dict[str, Any]) -> None:
    before = snapshot_ids(aura)
    book = _book(aura, "ran", [SNAPSHOT, {"name": "script", "action": "command", "with": {"argv": ["false"]}}])
    outcome = json.loads(aura("run", str(book), "--json", check=1).stdout)
    taken = next(s for s in outcome["steps"] if s["name"] == "snapshot")
    assert taken["undo"] is None  # a command that ran may have changed something half-way
    assert snapshot_ids(aura) == [*before, taken["outputs"]["snapshot_id"]]


def test_a_kill_between_recording_and_deleting_is_finished_by_the_next_run(aura: Aura, site: dict[str, Any]) -> None:
    before = snapshot_ids(aura)
    book = _book(
        aura,
        "killed",
        [SNAPSHOT, {"name": "use", "action": "command", "with": {"argv": ["echo", "{{ steps.snapshot.nothing }}"]}}],
    )
    aura("run", str(book), check=137, env={"AURA_FAULT": "run:discard"})
    run_id = run_ids(aura)[0]
    left = aura.json("runs", "show", run_id)
    assert left["run"]["status"] == "rolled_back"  # the run ended; only its snapshot's deletion is pending
    taken = next(s for s in left["steps"] if s["name"] == "snapshot")["outputs"]["snapshot_id"]
    assert snapshot_ids(aura) == [*before, taken]  # fully there
    aura("snapshots", "verify", taken, check=0)
    other = _book(aura, "noop", [{"name": "noop", "action": "command", "with": {"argv": ["true"]}}])
    aura("run", str(other), check=0)  # takes the run lock: its sweep finishes the deletion
    assert snapshot_ids(aura) == before
    shown = aura.json("runs", "show", run_id)
    assert next(s for s in shown["steps"] if s["name"] == "snapshot")["undo"]["snapshot_deleted"] == taken
