"""Pure logic: masking, command building, excludes, ids, the lock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aura_ops import logs, secrets
from aura_ops.components import files, postgres
from aura_ops.components.manifests import section_problem
from aura_ops.config import PostgresConfig
from aura_ops.errors import LockedError, first_line
from aura_ops.repository import Repository, new_snapshot_id
from aura_ops.state.lock import hold


def test_mask_hides_registered_values_and_credential_shapes() -> None:
    secrets.register("pw-registered-1")
    text = (
        "postgresql://app:urlsecret@db:5432/app password=kvsecret PGPASSWORD=envsecret "
        "token: tok123 and pw-registered-1"
    )
    masked = secrets.mask(text)
    for secret in ("urlsecret", "kvsecret", "envsecret", "tok123", "pw-registered-1"):
        assert secret not in masked
    assert "postgresql://app:***@db:5432/app" in masked


def test_log_lines_are_redacted(tmp_path: Path) -> None:
    secrets.register("very-secret-value")
    logs.configure(tmp_path, "info", console=open(tmp_path / "console", "w"), pretty=False)
    logs.get().info(
        "thing.happened",
        password="plain",
        detail="uses very-secret-value",
        nested={"token": "abc", "dsn": "postgres://u:p4ss@h/d"},
    )
    line = json.loads(next(tmp_path.glob("aura_*.log")).read_text().splitlines()[-1])
    assert line["password"] == "***"
    assert "very-secret-value" not in line["detail"]
    assert line["nested"]["token"] == "***"
    assert "p4ss" not in line["nested"]["dsn"]
    logs.configure()  # back to the defaults: stderr, no daily file


def test_pg_dump_command_keeps_the_password_out_of_argv() -> None:
    conn = postgres.Connection(
        {"host": "127.0.0.1", "port": "5432", "dbname": "app", "user": "u", "password": "pw-in-env-only"}
    )
    cfg = PostgresConfig(type="postgres", dsn="postgresql://u@127.0.0.1/app")
    command = postgres.make_pg_dump(cfg, conn, Path("/r/dump"), "0000-1", jobs=3)
    assert "pw-in-env-only" not in " ".join(command.argv)
    assert command.env["PGPASSWORD"] == "pw-in-env-only"
    assert "--jobs=3" in command.argv and "--snapshot=0000-1" in command.argv
    assert "--format=directory" in command.argv and "--compress=0" in command.argv


def test_pg_restore_command_is_parallel_and_clean_only_when_asked() -> None:
    conn = postgres.Connection({"dbname": "app"})
    plain = postgres.make_pg_restore(None, conn, Path("/s"), 4)
    clean = postgres.make_pg_restore(None, conn, Path("/s"), 4, clean=True)
    assert "--jobs=4" in plain.argv and "--clean" not in plain.argv
    assert "--clean" in clean.argv and "--if-exists" in clean.argv


@pytest.mark.parametrize(
    ("pattern", "path", "is_dir", "excluded"),
    [
        ("*.tmp", "a/b/c.tmp", False, True),
        ("*.tmp", "a/b/c.txt", False, False),
        ("cache/", "x/cache", True, True),
        ("cache/", "x/cache", False, False),
        ("/build", "build", True, True),
        ("/build", "src/build", True, False),
        ("logs/*.log", "logs/a.log", False, True),
        ("logs/*.log", "app/logs/a.log", False, False),
    ],
)
def test_excludes_follow_rsync_rules(pattern: str, path: str, is_dir: bool, excluded: bool) -> None:
    assert files.is_excluded(path, is_dir, files.compile_excludes([pattern])) is excluded


def test_excludes_translate_to_anchored_rsync_patterns() -> None:
    assert files.rsync_excludes(["*.tmp", "cache/", "logs/*.log"]) == [
        "--exclude=*.tmp",
        "--exclude=cache/",
        "--exclude=/logs/*.log",
    ]


def test_snapshot_ids_sort_by_time_even_within_a_millisecond() -> None:
    first = new_snapshot_id()
    second = new_snapshot_id(after=first)
    third = new_snapshot_id(after="99991231-235958-999")
    assert first < second
    assert third == "99991231-235959-000"


def test_only_folders_named_like_snapshot_ids_are_snapshots_and_others_are_left_alone(tmp_path: Path) -> None:
    repo = Repository(tmp_path)
    repo.ensure()
    for name in ("20240101-000000-000", "old-notes", "zz.partial", "20240101-000000-001.partial", "2024"):
        (repo.snapshots_dir / name).mkdir()
    assert repo.ids() == ["20240101-000000-000"]
    assert repo.resolve("latest") == "20240101-000000-000"
    assert repo.stray() == ["2024", "old-notes", "zz.partial"]
    assert repo.clean_partials() == ["20240101-000000-001.partial"]
    assert (repo.snapshots_dir / "zz.partial").is_dir()


def _files_entry() -> dict[str, object]:
    return {"type": "files", "source": "/srv/x", "file_count": 0, "bytes": 0, "copied_bytes": 0, "artifacts": {}}


def test_a_checksum_file_cannot_be_dropped_for_a_snapshot_sealed_after_checksums_began(tmp_path: Path) -> None:
    repo = Repository(tmp_path)
    repo.ensure()
    legacy = "20240101-000000-000"  # sealed before checksum files: format 1, none
    (repo.snapshots_dir / legacy).mkdir()
    manifest = {"format": 1, "id": legacy, "created": "2024-01-01T00:00:00+00:00", "components": {}}
    (repo.snapshots_dir / legacy / "manifest.json").write_text(json.dumps(manifest))
    sealed = []
    for snapshot_id in ("20250101-000000-000", "20250102-000000-000", "20250103-000000-000"):
        repo.begin(snapshot_id)
        repo.commit(snapshot_id, {**manifest, "format": 2, "id": snapshot_id, "components": {"s": _files_entry()}})
        sealed.append(snapshot_id)
    assert json.loads((tmp_path / "format.json").read_text())["checksummed_from"] == sealed[0]
    assert [s.damaged for s in Repository(tmp_path).all_snapshots()] == [None] * 4

    for downgraded in sealed[1:]:  # claims format 1, its checksum file removed
        path = repo.snapshots_dir / downgraded / "manifest.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "format": 1}))
        repo.sum_path(downgraded).unlink()
    (tmp_path / "format.json").unlink()  # the marker gone too: the first checksum file still counts
    found = {s.id: s.damaged for s in Repository(tmp_path).all_snapshots()}
    assert found[legacy] is None and found[sealed[0]] is None
    assert all("checksum file is missing" in str(found[i]) for i in sealed[1:]), found


@pytest.mark.parametrize(
    ("components", "problem"),
    [
        ({"s": "garbage"}, "component s is not an object"),
        ({"s": {"type": "nope"}}, "unknown type 'nope'"),
        ({"s": {**_files_entry(), "source": 3}}, "lacks source"),
        ({"s": {**_files_entry(), "artifacts": {"index.jsonl": {"size": 1}}}}, "artifact index.jsonl"),
    ],
)
def test_a_manifest_of_the_wrong_shape_marks_its_snapshot_damaged(
    components: dict[str, object], problem: str, tmp_path: Path
) -> None:
    repo = Repository(tmp_path, validate=section_problem)
    repo.ensure()
    snapshot_id = "20250101-000000-000"
    repo.begin(snapshot_id)
    repo.commit(snapshot_id, {"format": 2, "id": snapshot_id, "created": "x", "components": components})
    damaged = repo.load(snapshot_id).damaged
    assert damaged is not None and problem in damaged


def test_lock_refuses_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    with (
        hold(path, "run-1", "backup") as record,
        pytest.raises(LockedError, match=f"pid {record['pid']}"),
        hold(path, "run-2", "backup"),
    ):
        pass
    with hold(path, "run-3", "backup"):
        pass


def test_clone_names_fit_postgres_and_never_collide() -> None:
    from aura_ops.components.postgres import clone as pgclone

    run = "20261122-184213-123"
    assert pgclone.clone_name("shop", run) == "shop_aura_clone_" + run
    long_a, long_b = "myapp_production_database_a", "myapp_production_database_b"
    names = {pgclone.clone_name(d, run) for d in (long_a, long_b)}
    assert len(names) == 2
    for name in [*names, pgclone.building_name(long_a, run), pgclone.failed_name("ü" * 40, run)]:
        assert len(name.encode()) <= 63


def test_an_error_is_reported_as_its_first_line_even_with_no_message() -> None:
    assert first_line(RuntimeError("  server closed the connection\nDETAIL: more  ")) == "server closed the connection"
    assert first_line(RuntimeError("")) == "RuntimeError('')"
    assert first_line(KeyError()) == "KeyError()"
