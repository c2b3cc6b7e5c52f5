"""What ``workflows.retention.plan`` feeds the policy: a real local repository (manifests
committed as the repository commits them), a real journal, a real release folder; no component
runs. Each protection shows up with its reason, and a damaged snapshot is kept and not counted."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aura_ops import config as configuration
from aura_ops.repository import Repository
from aura_ops.state.journal import Journal
from aura_ops.workflows import retention

BASE = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


def snapshot_id(hours: int) -> str:
    moment = BASE + dt.timedelta(hours=hours)
    return moment.strftime("%Y%m%d-%H%M%S-000")


def make_config(root: Path, **retention_: Any) -> configuration.Config:
    raw = {
        "repository": {"path": str(root / "repo")},
        "state": {"path": str(root / "state")},
        "components": {
            "db": {"type": "postgres", "dsn": "postgresql://u@127.0.0.1:1/x"},
            "app": {"type": "release", "path": str(root / "app")},
        },
        "retention": retention_ or {"keep_last": 1},
    }
    (root / "aura.yaml").write_text(yaml.safe_dump(raw))
    return configuration.load(root / "aura.yaml")


def seal(repo: Repository, hours: int, current: str | None = None, tags: tuple[str, ...] = (), db: bool = True) -> str:
    sid = snapshot_id(hours)
    folder = repo.begin(sid)
    components: dict[str, Any] = {}
    if db:
        (folder / "db").mkdir()
        components["db"] = {"type": "postgres"}
    if current is not None:
        components["app"] = {"type": "release", "path": "/srv/app", "current": current}
    created = (BASE + dt.timedelta(hours=hours)).isoformat(timespec="seconds")
    repo.commit(sid, {"format": 2, "id": sid, "created": created, "tags": list(tags), "components": components})
    return sid


def live_release(root: Path, live: str, states: dict[str, str]) -> None:
    app = root / "app"
    for version in states:
        (app / "releases" / version).mkdir(parents=True, exist_ok=True)
    (app / ".aura").mkdir(parents=True, exist_ok=True)
    deployed = {
        v: {"state": s, "deployed": f"2026-11-0{i + 1}T00:00:00+00:00"} for i, (v, s) in enumerate(states.items())
    }
    (app / ".aura" / "releases.json").write_text(json.dumps(deployed))
    os.symlink(app / "releases" / live, app / "current")


def rows(plan: Any) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in plan.rows()}


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    repository = Repository(tmp_path / "repo")
    repository.ensure()
    return repository


def test_keep_last_one_deletes_the_older_ones_and_says_why_it_keeps_the_newest(
    tmp_path: Path, repo: Repository
) -> None:
    cfg = make_config(tmp_path)
    ids = [seal(repo, h) for h in range(3)]
    plan = retention.plan(cfg, repo, None)
    assert plan.deleted == ids[:2]
    assert rows(plan)[ids[2]]["reasons"] == ["newest verified (db)", "last 1 (db)"]


def test_a_pinned_snapshot_is_kept_with_its_reason_and_an_unpinned_one_is_not(tmp_path: Path, repo: Repository) -> None:
    cfg = make_config(tmp_path)
    ids = [seal(repo, h) for h in range(3)]
    repo.pin(ids[0])
    found = rows(retention.plan(cfg, repo, None))
    assert found[ids[0]]["decision"] == "keep" and found[ids[0]]["pinned"] and "pinned" in found[ids[0]]["reasons"]
    assert found[ids[1]]["decision"] == "delete"
    assert repo.unpin(ids[0]) and not repo.unpin(ids[0])
    assert retention.plan(cfg, repo, None).deleted == ids[:2]


def test_a_deleted_snapshot_takes_its_pin_and_checksum_file_with_it(tmp_path: Path, repo: Repository) -> None:
    first, second = seal(repo, 0), seal(repo, 1)
    repo.pin(first)
    repo.pin(second)
    repo.delete(first)
    assert repo.pinned() == {second}
    assert not (repo.path / "pins" / first).exists() and not (repo.path / "snapshots" / f"{first}.sha256").exists()
    (repo.path / "pins" / "20261101-000000-000").write_text("{}")  # a pin left by a killed delete
    repo.clean_partials()
    assert sorted(p.name for p in (repo.path / "pins").iterdir()) == [second]


def test_a_damaged_snapshot_is_kept_with_its_damage_and_not_counted_by_the_policy(
    tmp_path: Path, repo: Repository
) -> None:
    cfg = make_config(tmp_path)
    older, newest = seal(repo, 0), seal(repo, 1)
    manifest = repo.path / "snapshots" / newest / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"tags"', '"tags" ', 1))  # checksum mismatch
    found = rows(retention.plan(cfg, repo, None))
    assert found[newest]["decision"] == "keep" and "damaged" in found[newest]["reasons"][0]
    assert found[newest]["components"] == []
    assert found[older]["decision"] == "keep"  # the newest intact one: not displaced by the damaged one
    assert "last 1 (db)" in found[older]["reasons"]


def test_what_rollback_and_a_second_rollback_would_restore_is_kept(tmp_path: Path, repo: Repository) -> None:
    cfg = make_config(tmp_path)
    live_release(tmp_path, "v3", {"v1": "verified", "v2": "verified", "v3": "verified"})
    old = seal(repo, 0, current=None)
    before_v2 = seal(repo, 1, current="v1")  # the snapshot the deploy of v2 took
    backup_v2 = seal(repo, 2, current="v2")
    before_v3 = seal(repo, 3, current="v2")  # the deploy of v3: newest with v2 current
    newest = seal(repo, 4, current="v3")
    found = rows(retention.plan(cfg, repo, None))
    assert found[before_v3]["reasons"] == ["`aura-ops rollback` to release v2 restores it"]
    assert found[before_v2]["reasons"] == ["a second `aura-ops rollback` to release v1 restores it"]
    assert [i for i, r in found.items() if r["decision"] == "delete"] == [old, backup_v2]
    assert found[newest]["decision"] == "keep"


def test_a_rolled_back_release_is_not_where_a_rollback_goes(tmp_path: Path, repo: Repository) -> None:
    cfg = make_config(tmp_path)
    live_release(tmp_path, "v3", {"v1": "verified", "v2": "rolled_back", "v3": "verified"})
    before_v2 = seal(repo, 1, current="v1")
    before_v3 = seal(repo, 3, current="v2")
    seal(repo, 4, current="v3")
    found = rows(retention.plan(cfg, repo, None))
    assert found[before_v2]["reasons"] == ["`aura-ops rollback` to release v1 restores it"]
    assert found[before_v3]["decision"] == "delete"


def seal_with_dump(repo: Repository, hours: int, current: str | None = None) -> str:
    """A snapshot whose db holds one artifact, its checksum recorded as a backup records it."""
    import hashlib

    sid = snapshot_id(hours)
    folder = repo.begin(sid)
    (folder / "db").mkdir()
    data = f"dump {hours}".encode() * 100
    (folder / "db" / "dump").write_bytes(data)
    components: dict[str, Any] = {
        "db": {"type": "postgres", "artifacts": {"dump": {"hash": hashlib.sha256(data).hexdigest(), "size": len(data)}}}
    }
    if current is not None:
        components["app"] = {"type": "release", "path": "/srv/app", "current": current}
    created = (BASE + dt.timedelta(hours=hours)).isoformat(timespec="seconds")
    repo.commit(sid, {"format": 2, "id": sid, "created": created, "tags": [], "components": components})
    return sid


def rot(repo: Repository, sid: str) -> None:
    """A byte of the snapshot's dump changed on disk (size and manifest as they were)."""
    dump = repo.path / "snapshots" / sid / "db" / "dump"
    data = bytearray(dump.read_bytes())
    data[5] ^= 0xFF
    dump.write_bytes(bytes(data))


def test_a_rollback_snapshot_failing_its_checksums_keeps_the_one_before_it_for_rollback_to_snapshot(
    tmp_path: Path, repo: Repository
) -> None:
    cfg = make_config(tmp_path)
    live_release(tmp_path, "v2", {"v1": "verified", "v2": "verified"})
    older = seal_with_dump(repo, 0, current="v1")  # a backup while v1 was live
    newer = seal_with_dump(repo, 1, current="v1")  # the deploy of v2: what `rollback` restores
    newest = seal_with_dump(repo, 2, current="v2")
    assert retention.plan(cfg, repo, None, check=True).deleted == [older]  # sound: the older one goes
    rot(repo, newer)
    assert retention.plan(cfg, repo, None).deleted == [older]  # the plan of stats: no hashing
    found = rows(retention.plan(cfg, repo, None, check=True))
    assert found[older]["reasons"] == [
        f"`aura-ops rollback --to-snapshot {older}` to release v1 restores it "
        f"(the newer {newer}, which a plain rollback picks, fails its checksums)"
    ]
    assert (
        found[newer]["decision"] == "keep"
        and "fails its checksums: db: dump: checksum mismatch" in (found[newer]["reasons"][0])
    )
    assert found[newest]["decision"] == "keep"


def test_the_only_copy_of_a_component_a_prune_keeps_is_checked_first(tmp_path: Path, repo: Repository) -> None:
    cfg = make_config(tmp_path)
    ids = [seal_with_dump(repo, h) for h in range(3)]
    rot(repo, ids[2])
    found = rows(retention.plan(cfg, repo, None, check=True))
    assert found[ids[2]]["decision"] == "keep" and "checksum mismatch" in found[ids[2]]["reasons"][0]
    assert found[ids[1]]["reasons"] == ["newest verified (db)", "last 1 (db)"]  # the sound copy: kept
    assert found[ids[0]]["decision"] == "delete"
    rot(repo, ids[1])
    found = rows(retention.plan(cfg, repo, None, check=True))
    assert [found[i]["decision"] for i in ids] == ["keep", "keep", "keep"]  # the first sound one from the newest


def journal_run(
    journal: Journal, cfg: configuration.Config, run_id: str, status: str, outputs: dict[str, Any], **extra: Any
) -> None:
    journal.create_run(
        run_id,
        extra.get("playbook", "deploy"),
        extra.get("params", {}),
        extra.get("key"),
        str(cfg.state.path),
        "deploy",
        "here",
        [("snapshot", "snapshot"), ("migrate", "migrate")],
        "{}",
    )
    journal.step_finished(run_id, 0, "applied", outputs)
    if extra.get("applying"):
        journal.step_started(run_id, 1)
    if status != "running":
        journal.set_run(run_id, status)


def test_snapshots_an_unfinished_run_references_are_kept(tmp_path: Path, repo: Repository) -> None:
    cfg = make_config(tmp_path)
    ids = [seal(repo, h) for h in range(4)]
    journal = Journal(tmp_path / "state" / "journal.db")
    journal_run(journal, cfg, "20261101-110000-000", "running", {"snapshot_id": ids[0]})
    journal_run(journal, cfg, "20261101-110000-001", "compensating", {}, params={"snapshot": ids[1]})
    journal_run(journal, cfg, "20261101-110000-002", "succeeded", {"snapshot_id": ids[2]})
    found = rows(retention.plan(cfg, repo, journal))
    assert found[ids[0]]["reasons"] == ["needed by run 20261101-110000-000 (deploy, not finished)"]
    assert found[ids[1]]["reasons"] == ["needed by run 20261101-110000-001 (deploy, not finished)"]
    assert found[ids[2]]["decision"] == "delete"


def test_a_failed_run_keeps_its_snapshot_until_a_later_run_overtakes_it(tmp_path: Path, repo: Repository) -> None:
    cfg = make_config(tmp_path)
    ids = [seal(repo, h) for h in range(3)]
    journal = Journal(tmp_path / "state" / "journal.db")
    journal_run(journal, cfg, "20261101-110000-000", "failed", {"snapshot_id": ids[0]})
    found = rows(retention.plan(cfg, repo, journal))
    assert found[ids[0]]["reasons"] == [
        "needed by run 20261101-110000-000 (deploy, failed, `runs abort` may still undo it)"
    ]
    journal_run(journal, cfg, "20261101-120000-000", "succeeded", {})
    assert rows(retention.plan(cfg, repo, journal))[ids[0]]["decision"] == "delete"


def test_a_step_in_flight_keeps_what_was_sealed_since_it_began(tmp_path: Path, repo: Repository) -> None:
    cfg = make_config(tmp_path)
    journal = Journal(tmp_path / "state" / "journal.db")
    old = seal(repo, -30 * 24)  # long before the step began
    journal_run(journal, cfg, "20261101-110000-000", "running", {}, applying=True)
    hours = int((dt.datetime.now(dt.UTC) - BASE).total_seconds() // 3600) + 1
    fresh = [seal(repo, hours), seal(repo, hours + 1)]  # after it began (now)
    found = rows(retention.plan(cfg, repo, journal))
    assert found[old]["decision"] == "delete"
    assert (
        "sealed while step migrate of run 20261101-110000-000 (deploy, not finished) was running"
        in (found[fresh[0]]["reasons"])
    )


def test_a_step_left_in_flight_by_a_dead_process_keeps_nothing_sealed_since(tmp_path: Path, repo: Repository) -> None:
    from aura_ops.hosts import local_hostname

    cfg = make_config(tmp_path)
    journal = Journal(tmp_path / "state" / "journal.db")
    journal_run(journal, cfg, "20261101-110000-000", "running", {}, applying=True)
    dead = 2**22 + 12345  # above the default pid_max: no such process
    journal.db.execute("UPDATE runs SET pid = ?, host = ?", (dead, local_hostname()))
    hours = int((dt.datetime.now(dt.UTC) - BASE).total_seconds() // 3600) + 1
    fresh = [seal(repo, hours), seal(repo, hours + 1)]
    assert retention.plan(cfg, repo, journal).deleted == fresh[:1]


def test_the_pre_deploy_snapshot_of_the_live_and_previous_release_is_kept(tmp_path: Path, repo: Repository) -> None:
    cfg = make_config(tmp_path, keep_last=1, components={"app": {"keep_last": 1}})
    live_release(tmp_path, "v2", {"v1": "verified", "v2": "verified"})
    journal = Journal(tmp_path / "state" / "journal.db")
    took_v1, took_v2 = seal(repo, 0, db=False, current="v0"), seal(repo, 1, db=False, current="v1")
    seal(repo, 2, current="v2")
    journal_run(journal, cfg, "20261101-120000-000", "succeeded", {"snapshot_id": took_v1}, key="deploy:v1")
    journal_run(journal, cfg, "20261101-130000-000", "succeeded", {"snapshot_id": took_v2}, key="deploy:v2")
    found = rows(retention.plan(cfg, repo, journal))
    assert found[took_v2]["reasons"] == ["pre-deploy snapshot of the live release v2 (run 20261101-130000-000)"]
    assert found[took_v1]["reasons"] == [
        "pre-deploy snapshot of the previous good release v1 (run 20261101-120000-000)"
    ]


def test_retention_auto_needs_a_policy(tmp_path: Path) -> None:
    with pytest.raises(configuration.ConfigError, match="retention.auto"):
        make_config(tmp_path, auto=True)
    assert make_config(tmp_path, auto=True, keep_daily=7).retention.auto


def test_a_failing_auto_prune_is_a_warning_not_an_error(tmp_path: Path) -> None:
    from aura_ops import logs

    cfg = make_config(tmp_path, auto=True, keep_last=1)
    (tmp_path / "repo").write_text("not a folder")  # the repository cannot be locked
    logs.configure(tmp_path / "logs", "info", console=open(tmp_path / "console", "w"), pretty=False)  # noqa: SIM115
    result = retention.auto_prune(cfg, "backup")
    assert result is not None and "File exists" in result["error"]
    lines = [json.loads(line) for line in next((tmp_path / "logs").glob("aura_*.log")).read_text().splitlines()]
    assert [(e["event"], e["level"]) for e in lines] == [("prune.auto_failed", "warning")]
    assert retention.auto_prune(make_config(tmp_path, keep_last=1), "backup") is None  # auto is off


def test_two_release_components_and_no_deploy_section_protect_nothing_and_do_not_fail(tmp_path: Path) -> None:
    raw = {
        "repository": {"path": str(tmp_path / "repo")},
        "components": {"a": {"type": "release", "path": str(tmp_path / "a")}, "b": {"type": "release", "path": "b"}},
        "retention": {"keep_last": 1},
    }
    (tmp_path / "aura.yaml").write_text(yaml.safe_dump(raw))
    cfg = configuration.load(tmp_path / "aura.yaml")
    repo = Repository(tmp_path / "repo")
    repo.ensure()
    ids = [seal(repo, h, current="v1") for h in range(2)]
    assert retention.plan(cfg, repo, None).deleted == ids[:1]


UNFINISHED = ("running", "interrupted", "compensating")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    count=st.integers(1, 7),
    keep_last=st.integers(1, 3),
)
def test_no_policy_deletes_a_snapshot_an_unfinished_run_references_or_a_pin(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, count: int, keep_last: int
) -> None:
    """Random timelines of snapshots, pins and runs (unfinished or succeeded, naming snapshots
    in a step's outputs or in their parameters): the plan keeps every pinned snapshot, every one
    an unfinished run names, and the newest; it deletes only what the policy leaves out."""
    root = tmp_path_factory.mktemp("timeline")
    cfg = make_config(root, keep_last=keep_last)
    repository = Repository(root / "repo")
    repository.ensure()
    ids = [
        seal(repository, hours)
        for hours in sorted(data.draw(st.sets(st.integers(0, 500), min_size=count, max_size=count)))
    ]
    pinned = data.draw(st.sets(st.sampled_from(ids), max_size=2))
    for sid in pinned:
        repository.pin(sid)
    journal = Journal(root / "state" / "journal.db")
    runs = data.draw(
        st.lists(
            st.tuples(st.sampled_from([*UNFINISHED, "succeeded"]), st.sampled_from(ids), st.booleans()), max_size=4
        )
    )
    needed = set()
    for index, (status, sid, in_params) in enumerate(runs):
        run_id = f"20261101-0{index}0000-000"
        outputs, params = ({}, {"snapshot": sid}) if in_params else ({"snapshot_id": sid}, {})
        journal_run(journal, cfg, run_id, status, outputs, params=params)
        if status != "succeeded":
            journal.set_run(run_id, status)
            needed.add(sid)
    plan = retention.plan(cfg, repository, journal)
    journal.close()
    deleted = set(plan.deleted)
    assert not deleted & (pinned | needed | {ids[-1]})
    assert deleted <= set(ids[:-keep_last])


def test_a_run_records_its_state_folder_once_and_only_in_a_repository_that_exists(tmp_path: Path) -> None:
    from aura_ops.repository import journals

    missing = Repository(tmp_path / "nowhere")
    assert not journals.remember(missing, tmp_path / "state", "here") and not (tmp_path / "nowhere").exists()
    repo = Repository(tmp_path / "repo")
    repo.ensure()
    (tmp_path / "link").symlink_to(tmp_path, target_is_directory=True)
    assert journals.remember(repo, tmp_path / "state", "here")
    assert not journals.remember(repo, tmp_path / "link" / "state", "here")  # the same folder, however spelled
    assert journals.remember(repo, tmp_path / "state", "there")
    (repo.path / "journals" / "junk.json").write_text("{not json")
    assert journals.remembered(repo) == [
        journals.Record("here", str(tmp_path / "state")),
        journals.Record("there", str(tmp_path / "state")),
    ]


def test_a_prune_keeps_what_another_configurations_unfinished_run_needs(tmp_path: Path, repo: Repository) -> None:
    from aura_ops.hosts import local_hostname
    from aura_ops.repository import journals

    cfg = make_config(tmp_path)
    ids = [seal(repo, h) for h in range(3)]
    other = tmp_path / "other"
    (other / "state").mkdir(parents=True)
    other_cfg = make_config(other)
    theirs = Journal(other / "state" / "journal.db")
    journal_run(theirs, other_cfg, "20261101-110000-000", "running", {"snapshot_id": ids[0]})
    theirs.close()
    assert retention.plan(cfg, repo, None).deleted == ids[:2]  # unknown to this configuration yet
    journals.remember(repo, other / "state", local_hostname())
    journals.remember(repo, tmp_path / "gone" / "state", local_hostname())  # its journal is gone: no run left
    journals.remember(repo, tmp_path / "state", "elsewhere")  # another host's: cannot be read from here
    found = rows(retention.plan(cfg, repo, None))
    assert found[ids[0]]["reasons"] == [
        f"needed by run 20261101-110000-000 (deploy, not finished) of the state folder {other / 'state'}"
    ]
    assert found[ids[1]]["decision"] == "delete"
    (other / "state" / "journal.db").unlink()
    (other / "state" / "journal.db").mkdir()  # there, but no journal can be opened
    with pytest.raises(Exception, match="another configuration using this repository cannot be read"):
        retention.plan(cfg, repo, None)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), keep_last=st.integers(1, 2))
def test_no_prune_deletes_what_a_rollback_restores_over_random_deploy_histories(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, keep_last: int
) -> None:
    """Random deploy histories: snapshots at irregular hours recording which release was live
    (or none, or no database), releases verified or rolled back, one of them live, and some
    snapshots rotten on disk. A prune's plan (checksums checked, as a prune does) keeps, for
    each release a first and a second rollback go to, the newest sound snapshot of the database
    from while it was live (rollback_plan's rule, written out here), and a sound copy of each
    component that has one; it deletes nothing a keep_last policy and those rules keep."""
    root = tmp_path_factory.mktemp("deploys")
    cfg = make_config(root, keep_last=keep_last)
    versions = ["v1", "v2", "v3"][: data.draw(st.integers(2, 3))]
    states = {v: data.draw(st.sampled_from(["verified", "rolled_back"])) for v in versions}
    live = data.draw(st.sampled_from(versions))
    states[live] = "verified"
    live_release(root, live, states)
    repository = Repository(root / "repo")
    repository.ensure()
    hours = sorted(data.draw(st.sets(st.integers(0, 300), min_size=3, max_size=8)))
    made = []  # (id, current, has db)
    for hour in hours:
        current = data.draw(st.sampled_from([None, *versions]))
        if data.draw(st.integers(0, 3)) or current is None:  # mostly with the database
            made.append((seal_with_dump(repository, hour, current=current), current, True))
        else:
            made.append((seal(repository, hour, current=current, db=False), current, False))
    rotten = data.draw(st.sets(st.sampled_from([i for i, _, db in made if db] or [""]), min_size=1, max_size=2)) - {""}
    for sid in rotten:
        rot(repository, sid)
    plan = retention.plan(cfg, repository, None, check=True)
    kept = set(plan.kept)
    verified = [v for v in versions if v != live and states[v] == "verified"]
    for target in reversed(verified[-2:]):
        sound = [i for i, current, db in made if db and current == target and i not in rotten]
        if sound:
            assert sound[-1] in kept, (target, sound)
    for component, holds in (("db", lambda c, db: db), ("app", lambda c, db: c is not None)):
        sound = [i for i, current, db in made if holds(current, db) and i not in rotten]
        if sound:
            assert kept & set(sound), component
    # (a rotten snapshot nothing relies on is not hashed, and goes when the policy drops it)
    assert all(r in kept for r in rotten if any("fails its checksums" in x for x in rows(plan)[r]["reasons"]))
    newest = {
        c: [i for i, current, db in made if holds(current, db)][-keep_last:]
        for c, holds in [("db", lambda c, db: db), ("app", lambda c, db: c is not None)]
    }
    assert all(set(ids) - rotten <= kept for ids in newest.values())


def test_a_recorded_journal_that_cannot_be_looked_at_refuses_the_prune_naming_the_record(
    tmp_path: Path, repo: Repository
) -> None:
    """A state folder whose journal cannot be looked at (here a symlink loop: ELOOP, as EACCES
    or EIO would be) is not taken for a folder that is gone (os.path.lexists said False and the
    prune deleted what its runs need); the refusal names the record whose removal lets the
    prune go on once that configuration is no longer used."""
    from aura_ops.errors import StateError
    from aura_ops.hosts import local_hostname
    from aura_ops.repository import journals

    cfg = make_config(tmp_path)
    ids = [seal(repo, h) for h in range(3)]
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    journals.remember(repo, loop / "state", local_hostname())
    (record,) = journals.remembered(repo)
    with pytest.raises(StateError, match="cannot be read") as caught:
        retention.plan(cfg, repo, None)
    where = journals.location(repo, record)
    assert f"remove the record {where}" in str(caught.value) and Path(where).is_file()
    Path(where).unlink()
    assert retention.plan(cfg, repo, None).deleted == ids[:2]


def test_a_record_bigger_than_any_record_is_left_out_unread(tmp_path: Path) -> None:
    from aura_ops.repository import journals

    repo = Repository(tmp_path / "repo")
    repo.ensure()
    assert journals.remember(repo, tmp_path / "state", "here")
    with (repo.path / "journals" / "huge.json").open("w") as out:
        out.write('{"host": "here", "state": "/' + "x" * (journals.MOST + 10) + '"}')
    assert journals.remembered(repo) == [journals.Record("here", str(tmp_path / "state"))]


def test_a_journal_recorded_under_another_host_name_but_found_here_is_read(tmp_path: Path, repo: Repository) -> None:
    """The host renamed since the other configuration's run recorded its state folder (a VM
    renamed, a container's new name): its journal is here, at the path recorded, and its
    unfinished run's snapshots are kept (they were deleted: the record read as elsewhere)."""
    from aura_ops.repository import journals

    cfg = make_config(tmp_path)
    ids = [seal(repo, h) for h in range(3)]
    other = tmp_path / "other"
    (other / "state").mkdir(parents=True)
    theirs = Journal(other / "state" / "journal.db")
    journal_run(theirs, make_config(other), "20261101-110000-000", "interrupted", {"snapshot_id": ids[0]})
    theirs.close()
    journals.remember(repo, other / "state", "old-name-of-this-host")
    journals.remember(repo, tmp_path / "nowhere" / "state", "another-host")  # not here: a warning only
    found = rows(retention.plan(cfg, repo, None))
    assert found[ids[0]]["decision"] == "keep" and "needed by run 20261101-110000-000" in found[ids[0]]["reasons"][0]
    assert found[ids[1]]["decision"] == "delete"


def test_two_kept_copies_that_both_rotted_do_not_let_the_only_sound_one_go(tmp_path: Path, repo: Repository) -> None:
    """keep_last 2 keeps the two newest copies of the database; both changed on disk since they
    were sealed. Only a component's single kept copy was hashed, so neither was, and the prune
    deleted the oldest, the only sound copy (found by the random-histories property, seed-free:
    it failed on main). The newest kept copy is hashed until one is found sound."""
    cfg = make_config(tmp_path, keep_last=2)
    ids = [seal_with_dump(repo, h) for h in range(3)]
    rot(repo, ids[1])
    rot(repo, ids[2])
    assert retention.plan(cfg, repo, None).deleted == [ids[0]]  # the policy alone (stats: no hashing)
    decided = retention.plan(cfg, repo, None, check=True)
    assert decided.deleted == [] and set(decided.kept) == set(ids)  # the sound one kept by keep_last
    assert "fails its checksums" in " ".join(rows(decided)[ids[2]]["reasons"])  # (the newest: hashed first)
